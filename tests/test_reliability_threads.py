"""Two loops with separate maps in two threads at once, each serving its own echo clients.

Each loop thread runs bounded loop() passes on its own map while blocking client threads talk
to its server; every handler of a map must run in that map's loop thread, every client must get
its own lines back, and the global socket_map must stay untouched.
"""

import random
import threading
import time

import pytest
from _impl import asyncore
from _reliability import BOUND_S, EchoServer, LineEchoChannel, Worker, blocking_client, close_map

LOOPS = 2
CLIENTS_PER_LOOP = 4
ROUNDS = 300


class ThreadCheckingChannel(LineEchoChannel):
    def on_line(self, line):
        self.server.threads.add(threading.get_ident())
        self.push(line + b"\n")


def serve(map, stop, use_poll):
    end = time.monotonic() + BOUND_S
    passes = 0
    while not stop.is_set():
        if time.monotonic() > end:
            raise AssertionError("loop thread not stopped within the bound")
        asyncore.loop(timeout=0.01, use_poll=use_poll, map=map, count=1)
        passes += 1
    return threading.get_ident(), passes


def client(address, seed):
    rng = random.Random(seed)
    sock = blocking_client(address)
    try:
        for i in range(ROUNDS):
            line = b"%d:%d:" % (seed, i) + bytes(
                rng.randrange(32, 127) for _ in range(rng.randrange(200))
            )
            sock.sendall(line + b"\n")
            got = b""
            while not got.endswith(b"\n"):
                data = sock.recv(4096)
                assert data, "EOF"
                got += data
            assert got == line + b"\n"
    finally:
        sock.close()
    return ROUNDS


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_two_loops_in_two_threads(use_poll):
    global_before = dict(asyncore.socket_map)
    maps = [{} for _ in range(LOOPS)]
    servers = []
    stops = [threading.Event() for _ in range(LOOPS)]
    loops = []
    try:
        for m in maps:
            s = EchoServer(m, ThreadCheckingChannel)
            s.threads = set()
            servers.append(s)
        loops = [Worker(serve, maps[i], stops[i], use_poll) for i in range(LOOPS)]
        for t in loops:
            t.start()
        clients = [
            Worker(client, servers[i].address, 100 * i + j)
            for i in range(LOOPS)
            for j in range(CLIENTS_PER_LOOP)
        ]
        for c in clients:
            c.start()
        for c in clients:
            assert c.join() == ROUNDS
        for e in stops:
            e.set()
        idents = [t.join()[0] for t in loops]
        assert len(set(idents)) == LOOPS
        for i, s in enumerate(servers):
            assert s.threads == {idents[i]}
            assert len(s.channels) == CLIENTS_PER_LOOP
            assert sum(ch.lines for ch in s.channels) == CLIENTS_PER_LOOP * ROUNDS
            assert all(ch.errors == [] for ch in s.channels)
        assert dict(asyncore.socket_map) == global_before
    finally:
        for e in stops:
            e.set()
        for t in loops:
            t.join()
        for m in maps:
            close_map(m)
