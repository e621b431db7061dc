"""asyncio.Protocol echo/line servers on uvloop's event loop."""

from asyncio_protocols import serve


def load():
    import uvloop

    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"


if __name__ == "__main__":
    serve(__doc__, load)
