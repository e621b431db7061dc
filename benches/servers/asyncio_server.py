"""asyncio.Protocol echo/line servers on asyncio's default (epoll selector) event loop."""

import asyncio
import platform

from asyncio_protocols import serve


def load():
    return asyncio.new_event_loop, f"asyncio on CPython {platform.python_version()}"


if __name__ == "__main__":
    serve(__doc__, load)
