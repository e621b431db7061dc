"""Peers that reset, half-close or vanish: the channel closes once and leaves the map.

Each scenario runs beside three well-behaved clients that echo a line before and after the
disruption; they must be unaffected. Everything runs in the test's thread: the clients are
blocking sockets that are only read once select() says they are readable, and the server is
driven by bounded loop passes.
"""

import socket

import pytest
from _impl import asyncore
from _reliability import (
    EchoServer,
    RecordingChannel,
    blocking_client,
    close_map,
    reset,
    roundtrip,
    run_until,
    send_interleaved,
)

GOOD_CLIENTS = 3
BIG = 4 << 20  # larger than both socket buffers together: the server's echo stays queued


def channel_of(server, sock):
    name = sock.getsockname()
    found = [ch for ch in server.channels if ch.addr == name]
    assert len(found) == 1
    return found[0]


def settle(map, use_poll, passes=20):
    """A few more bounded passes, so that a second handle_close would show up."""
    for _ in range(passes):
        if not map:
            break
        asyncore.loop(timeout=0.01, use_poll=use_poll, map=map, count=1)


SCENARIOS = [
    "reset_mid_line",
    "reset_while_server_sends",
    "half_close",
    "close_mid_line",
    "close_with_unread_echo",
    "close_before_accept",
    "reset_before_accept",
]


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_peer_disconnect(scenario, use_poll):
    map = {}
    server = EchoServer(map, RecordingChannel)
    good = []
    bad = None
    try:
        good = [blocking_client(server.address) for _ in range(GOOD_CLIENTS)]
        run_until(lambda: len(server.channels) == GOOD_CLIENTS, map, use_poll)
        for i, sock in enumerate(good):
            roundtrip(sock, b"hello %d\n" % i, map, use_poll)

        if scenario.endswith("before_accept"):
            bad = blocking_client(server.address)
            bad.sendall(b"never read")
            if scenario == "reset_before_accept":
                reset(bad)
            else:
                bad.close()
            run_until(lambda: len(server.channels) == GOOD_CLIENTS + 1, map, use_poll)
            ch = server.channels[-1]
        else:
            bad = blocking_client(server.address)
            run_until(lambda: len(server.channels) == GOOD_CLIENTS + 1, map, use_poll)
            ch = channel_of(server, bad)
            roundtrip(bad, b"first\n", map, use_poll)
            if scenario in ("reset_mid_line", "close_mid_line"):
                bad.sendall(b"partial line without its terminator")
                run_until(lambda: ch.buf, map, use_poll)
                if scenario == "reset_mid_line":
                    reset(bad)
                else:
                    bad.close()
            elif scenario in ("reset_while_server_sends", "close_with_unread_echo"):
                send_interleaved(bad, b"x" * BIG + b"\n", map, use_poll)
                run_until(lambda: ch.lines == 2, map, use_poll)
                assert ch.producer_fifo, "the echo should still be queued"
                if scenario == "reset_while_server_sends":
                    reset(bad)
                else:
                    bad.close()  # unread data in its receive queue: the kernel sends a RST
            elif scenario == "half_close":
                bad.sendall(b"last line\n")
                bad.shutdown(socket.SHUT_WR)
                run_until(lambda: ch.closed, map, use_poll)
                bad.settimeout(10)
                assert bad.recv(1 << 16) == b"last line\n"
                assert bad.recv(1 << 16) == b""
                bad.close()
            else:
                raise AssertionError(scenario)

        run_until(lambda: ch.closed, map, use_poll)
        settle(map, use_poll)
        assert ch not in map.values()
        assert len(map) == 1 + GOOD_CLIENTS
        assert ch.errors == []
        if use_poll:
            # poll2's readwrite() dispatches every flag of the pass to the same object: after
            # the read that closed the channel it still calls handle_close() for POLLHUP/POLLERR
            # (and its POLLOUT handle_write_event), as CPython 3.11 does on a reset
            assert 1 <= ch.close_calls <= 2
            assert set(ch.calls_after_close) <= {"handle_write_event", "handle_expt_event"}
        else:
            assert ch.close_calls == 1
            assert ch.calls_after_close == []

        # the other channels keep echoing
        for i, sock in enumerate(good):
            roundtrip(sock, b"still here %d\n" % i, map, use_poll)
        for other in server.channels[:GOOD_CLIENTS]:
            assert other.close_calls == 0
            assert other.errors == []
            assert other.lines == 2
    finally:
        for sock in good:
            sock.close()
        if bad is not None:
            bad.close()
        close_map(map)
