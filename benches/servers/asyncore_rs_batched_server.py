"""The shared legacy handlers on asyncore-rs, with ``async_chat.ac_batch_output = True``.

The handler code is the same; the one switch batches the pushes a handler makes into
one send when it returns (an asyncore-rs extension, off by default).
"""

from asyncore_rs_server import load as load_plain
from server_common import serve_legacy


def load():
    asyncore, asynchat, detail = load_plain()
    asynchat.async_chat.ac_batch_output = True
    return asyncore, asynchat, detail + ", ac_batch_output=True"


if __name__ == "__main__":
    serve_legacy(__doc__, load)
