"""Load: 2000 simultaneous connections (4001 channels in one map) are all served.

2000 in-loop async_chat clients connect; only once all of them are connected and accepted does
each push one request naming itself, so that every connection is open at once. Every client
must get its own echo, then all close and the map returns to the listening socket alone.
select() cannot watch fds >= 1024 (FD_SETSIZE): CPython's use_poll=False fails here, so on the
stdlib only use_poll=True runs (ours runs both: its select mode has no such ceiling).
"""

import socket

import pytest
from _impl import IMPL, asynchat
from _reliability import EchoServer, LineEchoChannel, close_map, raise_nofile, run_until

CONNECTIONS = 2000


class LoadClient(asynchat.async_chat):
    def __init__(self, map, address, n):
        asynchat.async_chat.__init__(self, map=map)
        self.request = b"client %d\n" % n
        self.reply = None
        self.connected_once = False
        self.set_terminator(b"\n")
        self.buf = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)

    def handle_connect(self):
        self.connected_once = True

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        self.reply = b"".join(self.buf) + b"\n"
        self.buf = []

    def handle_close(self):
        raise AssertionError("server closed %r" % self.request)

    def handle_error(self):
        raise


class QuietChannel(LineEchoChannel):
    def handle_error(self):
        raise


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_thousands_of_simultaneous_connections(use_poll):
    if IMPL == "stdlib" and not use_poll:
        pytest.skip("CPython's select() cannot watch fds >= FD_SETSIZE (1024)")
    if not raise_nofile(2 * CONNECTIONS + 200):
        pytest.skip("RLIMIT_NOFILE hard limit below %d" % (2 * CONNECTIONS + 200))
    map = {}
    server = EchoServer(map, QuietChannel, backlog=CONNECTIONS, accept_all=True)
    clients = []
    try:
        # connect in batches, so that the listen backlog never overflows
        for start in range(0, CONNECTIONS, 250):
            clients.extend(LoadClient(map, server.address, n) for n in range(start, start + 250))
            run_until(
                lambda: (
                    len(server.channels) == len(clients) and all(c.connected_once for c in clients)
                ),
                map,
                use_poll,
            )
        assert len(map) == 1 + 2 * CONNECTIONS
        assert max(map) >= 1024  # the point of the test: fds beyond FD_SETSIZE
        for c in clients:
            c.push(c.request)
        run_until(lambda: all(c.reply is not None for c in clients), map, use_poll)
        for c in clients:
            assert c.reply == c.request
        assert sum(ch.lines for ch in server.channels) == CONNECTIONS
        for c in clients:
            c.close()
        run_until(lambda: len(map) == 1, map, use_poll)
        assert all(ch.close_calls == 1 for ch in server.channels)
    finally:
        close_map(map)
