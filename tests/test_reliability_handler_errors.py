"""Exceptions in handlers: they reach that channel's handle_error, other channels keep being
served; KeyboardInterrupt / SystemExit / ExitNow leave loop() with the map intact and loop()
can be called again to finish the work.
"""

import socket
import sys

import pytest
from _impl import asynchat, asyncore
from _reliability import (
    EchoServer,
    LineEchoChannel,
    blocking_client,
    close_map,
    readable,
    roundtrip,
    run_until,
)

GOOD_CLIENTS = 3


class BadProducer:
    def more(self):
        raise ValueError("boom")


class FaultyChannel(LineEchoChannel):
    """Raises ValueError("boom") from the handler named by the line it receives."""

    boom_on_write = False

    def on_line(self, line):
        if line == b"found_terminator":
            raise ValueError("boom")
        if line == b"producer_more":
            self.push_with_producer(BadProducer())
            return
        if line == b"handle_write":
            self.boom_on_write = True
        self.push(line + b"\n")

    def collect_incoming_data(self, data):
        if data == b"collect_incoming_data":
            raise ValueError("boom")
        LineEchoChannel.collect_incoming_data(self, data)

    def writable(self):
        return self.boom_on_write or asynchat.async_chat.writable(self)

    def handle_write(self):
        if self.boom_on_write:
            self.boom_on_write = False
            raise ValueError("boom")
        asynchat.async_chat.handle_write(self)

    def handle_error(self):
        # record what is being handled, then drop the poisoned input/output and carry on
        t, v, tb = sys.exc_info()
        self.errors.append((t, str(v), asyncore.compact_traceback()[1]))
        self.discard_buffers()
        self.buf = []


def start(server_cls_channel, use_poll, n):
    map = {}
    server = EchoServer(map, server_cls_channel)
    clients = [blocking_client(server.address) for _ in range(n)]
    run_until(lambda: len(server.channels) == n, map, use_poll)
    by_name = {ch.addr: ch for ch in server.channels}
    channels = [by_name[c.getsockname()] for c in clients]
    return map, server, clients, channels


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize(
    "where", ["found_terminator", "collect_incoming_data", "producer_more", "handle_write"]
)
def test_exception_reaches_handle_error(where, use_poll):
    map, server, clients, channels = start(FaultyChannel, use_poll, GOOD_CLIENTS + 1)
    try:
        bad, bad_ch = clients[-1], channels[-1]
        for i, sock in enumerate(clients):
            roundtrip(sock, b"before %d\n" % i, map, use_poll)
        bad.sendall(where.encode() + b"\n")
        run_until(lambda: bad_ch.errors, map, use_poll)
        assert bad_ch.errors == [(ValueError, "boom", ValueError)]
        if where == "handle_write":
            # the line was echoed before the write event that raised
            bad.settimeout(10)
            assert bad.recv(100) == b"handle_write\n"
        # the faulty channel and the others are all still served
        for i, sock in enumerate(clients):
            roundtrip(sock, b"after %d\n" % i, map, use_poll)
        assert len(map) == GOOD_CLIENTS + 2
        for ch in channels:
            assert ch.close_calls == 0
        for ch in channels[:-1]:
            assert ch.errors == []
        assert bad_ch.errors == [(ValueError, "boom", ValueError)]
    finally:
        for sock in clients:
            sock.close()
        close_map(map)


class DefaultErrorChannel(LineEchoChannel):
    """Keeps dispatcher.handle_error: it logs the exception and closes the channel."""

    def on_line(self, line):
        if line == b"boom":
            raise ValueError("boom")
        self.push(line + b"\n")

    handle_error = asynchat.async_chat.handle_error


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_default_handle_error_closes_only_that_channel(use_poll, capsys):
    map, server, clients, channels = start(DefaultErrorChannel, use_poll, GOOD_CLIENTS + 1)
    try:
        bad, bad_ch = clients[-1], channels[-1]
        bad.sendall(b"boom\n")
        run_until(lambda: bad_ch.closed, map, use_poll)
        out = capsys.readouterr().out
        assert "uncaptured python exception" in out
        assert "ValueError" in out and "boom" in out
        assert bad_ch.close_calls == 1
        assert bad_ch not in map.values()
        bad.settimeout(10)
        assert bad.recv(100) == b""
        for i, sock in enumerate(clients[:-1]):
            roundtrip(sock, b"still served %d\n" % i, map, use_poll)
    finally:
        for sock in clients:
            sock.close()
        close_map(map)


class StoppingChannel(LineEchoChannel):
    stop_with = KeyboardInterrupt

    def on_line(self, line):
        self.push(line + b"\n")
        if line == b"stop":
            raise self.stop_with()


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit", "ExitNow"])
def test_reraised_exception_leaves_loop_and_loop_resumes(exc, use_poll):
    exc_type = {
        "KeyboardInterrupt": KeyboardInterrupt,
        "SystemExit": SystemExit,
        "ExitNow": asyncore.ExitNow,
    }[exc]

    class Channel(StoppingChannel):
        stop_with = exc_type

    map, server, clients, channels = start(Channel, use_poll, GOOD_CLIENTS + 1)
    try:
        bad = clients[-1]
        for i, sock in enumerate(clients):
            roundtrip(sock, b"before %d\n" % i, map, use_poll)
        before = dict(map)
        # everybody's next line is pending in the same pass as the interrupting one
        for i, sock in enumerate(clients[:-1]):
            sock.sendall(b"pending %d\n" % i)
        bad.sendall(b"stop\n")
        with pytest.raises(exc_type):
            run_until(lambda: False, map, use_poll, max_passes=1000)
        assert map == before
        assert all(map[k] is before[k] for k in before)
        for ch in channels:
            assert ch.close_calls == 0
            assert ch.errors == []
        # loop() again finishes the work: every pending line is echoed
        for i, sock in enumerate(clients[:-1]):
            sock.setblocking(False)
            got = b""
            want = b"pending %d\n" % i
            while got != want:
                run_until(lambda s=sock: readable(s), map, use_poll)
                got += sock.recv(100)
            sock.settimeout(10)
        bad.settimeout(10)
        got = b""
        while got != b"stop\n":
            run_until(lambda: readable(bad), map, use_poll)
            got += bad.recv(100)
        for i, sock in enumerate(clients):
            roundtrip(sock, b"after %d\n" % i, map, use_poll)
    finally:
        for sock in clients:
            sock.close()
        close_map(map)


class ExplodingReadable(asyncore.dispatcher):
    def readable(self):
        raise ValueError("readable")


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_exception_in_readable_propagates_out_of_loop(use_poll):
    a, b = socket.socketpair()
    map = {}
    try:
        d = ExplodingReadable(a, map=map)
        with pytest.raises(ValueError, match="readable"):
            asyncore.loop(timeout=0.01, use_poll=use_poll, map=map, count=1)
        assert map == {a.fileno(): d}
    finally:
        close_map(map)
        b.close()
