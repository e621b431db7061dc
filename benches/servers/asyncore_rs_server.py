"""The shared legacy handlers on asyncore-rs (``asyncore_rs.asyncore`` / ``asynchat``)."""

import platform

from server_common import serve_legacy


def load():
    import asyncore_rs
    from asyncore_rs import asynchat, asyncore

    where = "installed" if "-packages" in asyncore.__file__ else "source tree"
    detail = (
        f"asyncore-rs {asyncore_rs.__version__} ({where}) on CPython {platform.python_version()}"
    )
    return asyncore, asynchat, detail


if __name__ == "__main__":
    serve_legacy(__doc__, load)
