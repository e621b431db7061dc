"""Churn: thousands of connect / request / close cycles leak nothing.

In-loop async_chat clients (16 in flight) connect to the line-echo server, send a request and
end in one of three ways (close after the echo, reset after the request, close before sending
anything). After the cycles: the open fd count (/proc/self/fd) and the map are back to their
baseline, no channel object is still alive (weak references), and RSS grew less than a small
bound (measured after a warm-up, so allocator pools are already in place).

Also: subclasses made at run time (one per connection, per test, mocks) are freed with their
last instance, as in CPython, together with whatever their methods reference.
"""

import gc
import os
import socket
import struct
import weakref

import pytest
from _impl import asynchat, asyncore
from _reliability import EchoServer, LineEchoChannel, close_map, open_fd_count, rss_bytes, run_until

CYCLES = 3000
WARMUP = 300
IN_FLIGHT = 16
RSS_BOUND = 24 << 20

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd and /proc/self/status"
)


class ChurnClient(asynchat.async_chat):
    def __init__(self, map, address, n, mode, stats):
        asynchat.async_chat.__init__(self, map=map)
        self.stats = stats
        self.mode = mode
        self.request = b"request %d\n" % n
        self.set_terminator(b"\n")
        self.buf = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)

    def handle_connect(self):
        if self.mode == "early_close":
            self.stats["early_close"] += 1
            self.close()
            return
        self.push(self.request)  # sent by the handle_write() that follows

    def handle_write(self):
        self.initiate_send()
        if self.mode == "reset" and not self.producer_fifo:
            # the request is on its way: reset the connection before the echo
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.stats["reset"] += 1
            self.close()

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        assert b"".join(self.buf) + b"\n" == self.request
        self.stats["echoed"] += 1
        self.close()

    def handle_close(self):
        self.stats["unexpected_close"] += 1
        self.close()

    def handle_error(self):
        raise


class QuietChannel(LineEchoChannel):
    def handle_error(self):
        raise


def churn(map, server, use_poll, cycles, refs):
    stats = dict(echoed=0, reset=0, early_close=0, unexpected_close=0)
    modes = ["echo", "echo", "reset", "early_close"]
    started = 0
    live = []
    passes = 0
    while started < cycles or live:
        live = [c for c in live if c.socket.fileno() != -1]
        while started < cycles and len(live) < IN_FLIGHT:
            c = ChurnClient(map, server.address, started, modes[started % len(modes)], stats)
            refs.append(weakref.ref(c))
            live.append(c)
            started += 1
        asyncore.loop(timeout=0.01, use_poll=use_poll, map=map, count=1)
        passes += 1
        assert passes < 100 * cycles, "cycles do not complete"
    # the server side sees every client go away
    run_until(lambda: len(map) == 1, map, use_poll)
    for ch in server.channels:
        refs.append(weakref.ref(ch))
    server.channels.clear()
    return stats


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_connect_request_close_cycles_leak_nothing(use_poll):
    map = {}
    server = EchoServer(map, QuietChannel, backlog=256)
    refs = []
    try:
        churn(map, server, use_poll, WARMUP, refs)
        del refs[:]
        gc.collect()
        fds = open_fd_count()
        rss = rss_bytes()

        stats = churn(map, server, use_poll, CYCLES, refs)

        assert stats["echoed"] == CYCLES // 2
        assert stats["reset"] == CYCLES // 4
        assert stats["early_close"] == CYCLES // 4
        assert stats["unexpected_close"] == 0
        assert list(map.values()) == [server]
        assert len(refs) == 2 * CYCLES
        gc.collect()
        assert open_fd_count() == fds
        grown = rss_bytes() - rss
        assert grown < RSS_BOUND, "RSS grew by %d bytes over %d cycles" % (grown, CYCLES)
        # CPython frees a channel as soon as it is closed and dropped (refcounting; no cycles)
        alive = [r() for r in refs if r() is not None]
        assert alive == [], "%d of %d channels still referenced after close and gc" % (
            len(alive),
            len(refs),
        )
    finally:
        close_map(map)


@pytest.mark.parametrize("base", ["dispatcher", "async_chat"])
def test_dynamic_subclasses_are_freed(base):
    """Classes made at run time (per connection, per test, mocks) die with their last user;
    whatever their methods reference (here a list per class) goes with them."""
    base_cls = asyncore.dispatcher if base == "dispatcher" else asynchat.async_chat
    refs = []
    for i in range(300):
        payload = [bytes(1000)]

        def handle_read(self, payload=payload):
            self.recv(100)

        cls = type("Dyn%d" % i, (base_cls,), {"handle_read": handle_read, "payload": payload})
        if base == "async_chat":
            cls.collect_incoming_data = lambda self, data: None
            cls.found_terminator = lambda self: None
        a, b = socket.socketpair()
        map = {}
        obj = cls(a, map=map)
        b.send(b"x\n")
        asyncore.loop(timeout=0.01, map=map, count=1)
        obj.close()
        b.close()
        refs.append(weakref.ref(cls))
        del cls, obj, handle_read, payload
    gc.collect()
    alive = sum(1 for r in refs if r() is not None)
    assert alive == 0, "%d of %d classes still alive after gc" % (alive, len(refs))
