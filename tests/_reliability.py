"""Helpers shared by the test_reliability_* files.

- ``run_until``: drives ``asyncore.loop(count=1)`` passes on a private map until a predicate
  holds, bounded by a pass count and a wall-clock bound (the bound fails the test, it is not a
  timing assertion).
- ``LineEchoChannel`` / ``EchoServer``: an async_chat line-echo server (terminator b"\\n",
  found_terminator pushes the line back) that records handler calls per channel.
- ``Worker``: a thread whose exception is re-raised by ``join()`` in the test's thread.
- ``open_fd_count``, ``rss_bytes``, ``raise_nofile``: resource probes (Linux /proc).
"""

import os
import select
import socket
import struct
import sys
import threading
import time

from _common import HOST
from _impl import asynchat, asyncore

# blocking clients' socket timeout and the bound for any one scenario
CLIENT_TIMEOUT = 60.0
BOUND_S = 90.0


def run_until(pred, map, use_poll=False, bound_s=BOUND_S, max_passes=10_000_000, timeout=0.02):
    """Run single loop passes on ``map`` until ``pred()``; fail if the bounds are reached."""
    end = time.monotonic() + bound_s
    passes = 0
    while not pred():
        if passes >= max_passes or time.monotonic() > end:
            raise AssertionError(
                "condition not reached after %d passes (map size %d)" % (passes, len(map))
            )
        if map:
            asyncore.loop(timeout=timeout, use_poll=use_poll, map=map, count=1)
        else:
            time.sleep(0.001)
        passes += 1
    return passes


class Worker(threading.Thread):
    """A daemon thread running ``fn(*args)``; ``join()`` re-raises its exception."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._fn = fn
        self._args = args
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self._fn(*self._args)
        except BaseException as e:  # handed to the test's thread
            self.error = e

    def join(self, timeout=BOUND_S):
        super().join(timeout)
        if self.is_alive():
            raise AssertionError("worker thread did not finish within %s s" % timeout)
        if self.error is not None:
            raise self.error
        return self.result


class LineEchoChannel(asynchat.async_chat):
    """Echoes every line back; records handle_close / handle_error calls."""

    def __init__(self, sock, map, server=None):
        asynchat.async_chat.__init__(self, sock, map=map)
        self.set_terminator(b"\n")
        self.server = server
        self.buf = []
        self.lines = 0
        self.close_calls = 0
        self.errors = []
        self.calls_after_close = []
        self.closed = False

    def collect_incoming_data(self, data):
        if self.closed:
            self.calls_after_close.append("collect_incoming_data")
        self.buf.append(data)

    def found_terminator(self):
        if self.closed:
            self.calls_after_close.append("found_terminator")
        line = b"".join(self.buf)
        self.buf = []
        self.lines += 1
        self.on_line(line)

    def on_line(self, line):
        self.push(line + b"\n")

    def handle_close(self):
        self.close_calls += 1
        self.close()

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])
        asynchat.async_chat.handle_error(self)

    def close(self):
        self.closed = True
        asynchat.async_chat.close(self)


class RecordingChannel(LineEchoChannel):
    """LineEchoChannel that also records event-method calls made after close()."""

    def handle_read_event(self):
        if self.closed:
            self.calls_after_close.append("handle_read_event")
        asynchat.async_chat.handle_read_event(self)

    def handle_write_event(self):
        if self.closed:
            self.calls_after_close.append("handle_write_event")
        asynchat.async_chat.handle_write_event(self)

    def handle_expt_event(self):
        if self.closed:
            self.calls_after_close.append("handle_expt_event")
        asynchat.async_chat.handle_expt_event(self)


class EchoServer(asyncore.dispatcher):
    """Listening dispatcher that wraps each accepted socket in ``channel_class``."""

    def __init__(self, map, channel_class=LineEchoChannel, backlog=128, accept_all=False):
        asyncore.dispatcher.__init__(self, map=map)
        self.channel_class = channel_class
        self.accept_all = accept_all
        self.channels = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((HOST, 0))
        self.listen(backlog)
        self.address = self.socket.getsockname()

    def handle_accept(self):
        # accept_all: drain the backlog in one event (plain user code, keeps load tests short)
        while True:
            pair = self.accept()
            if pair is None:
                return
            self.handle_accepted(*pair)
            if not self.accept_all:
                return

    def handle_accepted(self, sock, addr):
        self.channels.append(self.channel_class(sock, self._map, self))

    def handle_error(self):
        raise


def readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


def expect(sock, want, map, use_poll):
    """Run the loop until ``want`` has arrived on the blocking client ``sock``."""
    got = b""
    while len(got) < len(want):
        run_until(lambda: readable(sock), map, use_poll)
        data = sock.recv(len(want) - len(got))
        assert data, "EOF after %r, expecting %r" % (got, want)
        got += data
    assert got == want


def roundtrip(sock, line, map, use_poll):
    sock.sendall(line)
    expect(sock, line, map, use_poll)


def send_interleaved(sock, data, map, use_poll):
    """Send all of data without blocking the (single) thread that also runs the loop."""
    sock.setblocking(False)
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            asyncore.loop(timeout=0.01, use_poll=use_poll, map=map, count=1)
    sock.settimeout(10)


def blocking_client(address, timeout=CLIENT_TIMEOUT):
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock, n):
    chunks = []
    while n:
        data = sock.recv(min(n, 1 << 20))
        if not data:
            raise AssertionError("EOF with %d bytes still expected" % n)
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def recv_until_eof(sock):
    chunks = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def reset(sock):
    """Close with SO_LINGER 0: the peer sees a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def open_fd_count():
    return len(os.listdir("/proc/self/fd"))


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def raise_nofile(needed):
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return False if still < needed."""
    try:
        import resource
    except ImportError:
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        return False
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return True
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return True


def close_map(map):
    for obj in list(map.values()):
        try:
            obj.close()
        except OSError:
            pass
    map.clear()
