"""Helpers every test file may use (the fixtures are in conftest.py)."""

from _impl import asyncore

# Tests talk to loopback only.
HOST = "127.0.0.1"
HOSTv6 = "::1"
# A bound for everything that waits; no test relies on it for its result.
WAIT = 10.0


def pump(m, until, *, use_poll=False, passes=200, timeout=0.05):
    """Run one loop pass at a time over map `m` (bounded) until `until()` is true;
    return whether it became true."""
    for _ in range(passes):
        if until():
            return True
        asyncore.loop(timeout=timeout, use_poll=use_poll, map=m, count=1)
    return until()
