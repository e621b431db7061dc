"""The shared legacy handlers on asyncore-rs, with ``async_chat.ac_batch_output = False``.

The handler code is the same; the one switch makes every push() send at once, as
CPython does, instead of the default batching of replies to pipelined requests.
"""

from asyncore_rs_server import load as load_default
from server_common import serve_legacy


def load():
    asyncore, asynchat, detail = load_default()
    asynchat.async_chat.ac_batch_output = False
    return asyncore, asynchat, detail + ", ac_batch_output=False"


if __name__ == "__main__":
    serve_legacy(__doc__, load)
