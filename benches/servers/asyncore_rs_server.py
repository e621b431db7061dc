"""The shared legacy handlers on asyncore-rs (``asyncore_rs.asyncore`` / ``asynchat``)."""

import os

from server_common import serve_legacy


def load():
    from asyncore_rs import asynchat, asyncore

    return asyncore, asynchat, f"asyncore_rs from {os.path.dirname(asyncore.__file__)}"


if __name__ == "__main__":
    serve_legacy(__doc__, load)
