"""Integrity: megabytes of random lines through an async_chat line-echo server come back intact.

Clients write random lines (0 B to 200 KB, longer than ac_in_buffer_size now and then) in
random-size writes; the server's found_terminator pushes each line back; the sha256 of what
each client gets back must equal the sha256 of what it sent.
"""

import hashlib
import random
import socket

import pytest
from _impl import asynchat
from _reliability import (
    EchoServer,
    Worker,
    blocking_client,
    close_map,
    run_until,
)

THREAD_CLIENTS = 6
LOOP_CLIENTS = 4
BYTES_PER_CLIENT = 3 << 20


def random_lines(rng, nbytes):
    """Random lines (no b"\\n" inside) adding up to at least nbytes, each ending in b"\\n"."""
    parts = []
    total = 0
    while total < nbytes:
        r = rng.random()
        if r < 0.01:
            n = rng.randint(65536, 200_000)
        elif r < 0.05:
            n = 0
        else:
            n = rng.randint(1, 300)
        line = rng.randbytes(n).replace(b"\n", b"\r") + b"\n"
        parts.append(line)
        total += len(line)
    return b"".join(parts)


def random_sizes(rng, total):
    """Write sizes from 1 B to 64 KB, log-uniform, adding up to total."""
    sizes = []
    while total > 0:
        n = min(total, int(2 ** rng.uniform(0, 16)))
        sizes.append(n)
        total -= n
    return sizes


def thread_client(address, seed):
    rng = random.Random(seed)
    stream = random_lines(rng, BYTES_PER_CLIENT)
    lines = stream.count(b"\n")
    sock = blocking_client(address)

    def write():
        pos = 0
        for n in random_sizes(rng, len(stream)):
            sock.sendall(stream[pos : pos + n])
            pos += n

    writer = Worker(write)
    writer.start()
    got = hashlib.sha256()
    remaining = len(stream)
    while remaining:
        data = sock.recv(1 << 18)
        if not data:
            break
        got.update(data)
        remaining -= len(data)
    writer.join()
    sock.close()
    return len(stream), lines, remaining, hashlib.sha256(stream).hexdigest(), got.hexdigest()


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_line_echo_integrity_thread_clients(use_poll):
    map = {}
    server = EchoServer(map)
    try:
        clients = [Worker(thread_client, server.address, 1000 + i) for i in range(THREAD_CLIENTS)]
        for c in clients:
            c.start()
        run_until(lambda: not any(c.is_alive() for c in clients), map, use_poll)
        checked = lines = 0
        for c in clients:
            sent, nlines, missing, want, got = c.join()
            assert missing == 0
            assert got == want
            checked += sent
            lines += nlines
        assert checked >= THREAD_CLIENTS * BYTES_PER_CLIENT
        # every client closed: each server channel sees EOF, handle_close runs once
        run_until(lambda: len(map) == 1, map, use_poll)
        assert len(server.channels) == THREAD_CLIENTS
        for ch in server.channels:
            assert ch.close_calls == 1
            assert ch.errors == []
            assert ch.ac_in_buffer == b""
        assert sum(ch.lines for ch in server.channels) == lines
    finally:
        close_map(map)


class ChatClient(asynchat.async_chat):
    """In-loop client: pushes its stream in random pieces, hashes what comes back."""

    def __init__(self, map, address, seed):
        asynchat.async_chat.__init__(self, map=map)
        rng = random.Random(seed)
        self.stream = random_lines(rng, BYTES_PER_CLIENT // 2)
        self.want = hashlib.sha256(self.stream).hexdigest()
        self.got = hashlib.sha256()
        self.received = 0
        self.close_calls = 0
        self.set_terminator(None)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)
        pos = 0
        for n in random_sizes(rng, len(self.stream)):
            self.push(self.stream[pos : pos + n])
            pos += n

    def done(self):
        return self.received >= len(self.stream)

    def collect_incoming_data(self, data):
        self.got.update(data)
        self.received += len(data)
        if self.done():
            self.close()

    def found_terminator(self):
        raise AssertionError("terminator is None: found_terminator must not be called")

    def handle_close(self):
        self.close_calls += 1
        self.close()

    def handle_error(self):
        raise


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_line_echo_integrity_dispatcher_clients(use_poll):
    map = {}
    server = EchoServer(map)
    try:
        clients = [ChatClient(map, server.address, 2000 + i) for i in range(LOOP_CLIENTS)]
        run_until(lambda: all(c.done() for c in clients), map, use_poll)
        for c in clients:
            assert c.received == len(c.stream)
            assert c.got.hexdigest() == c.want
            assert c.close_calls == 0
        run_until(lambda: len(map) == 1, map, use_poll)
        for ch in server.channels:
            assert ch.close_calls == 1
            assert ch.errors == []
    finally:
        close_map(map)
