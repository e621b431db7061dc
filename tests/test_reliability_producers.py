"""Producers: ~20 MB through push_with_producer / push arrive whole (sha256).

A client asks for "<seed> <nbytes>\\n"; the server channel builds the payload from the seed and
queues it as a random mix of custom producers (random chunk sizes, including producers that
hand out bytearray and memoryview chunks), asynchat.simple_producer with random buffer sizes,
and plain push() of bytes / bytearray / memoryview pieces, then close_when_done(). The client
reads to EOF and compares the sha256 with the payload it rebuilds from the same seed.
"""

import hashlib
import random
import socket

import pytest
from _impl import asynchat
from _reliability import EchoServer, LineEchoChannel, Worker, close_map, run_until

CLIENTS = 2
BYTES_PER_CLIENT = 5 << 20  # 2 clients x 5 MB x 2 poll modes = 20 MB


def payload(seed, nbytes):
    return random.Random(seed).randbytes(nbytes)


class ChunkProducer:
    """Hands out data in random-size chunks of random bytes-like types, then b""."""

    def __init__(self, data, rng):
        self.data = data
        self.pos = 0
        self.rng = rng
        self.more_calls = 0

    def more(self):
        self.more_calls += 1
        if self.pos >= len(self.data):
            return b""
        n = int(2 ** self.rng.uniform(0, 18))
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        kind = self.rng.random()
        if kind < 0.2:
            return bytearray(chunk)
        if kind < 0.3:
            return memoryview(chunk)
        return chunk


class ProducerChannel(LineEchoChannel):
    def on_line(self, line):
        seed, nbytes = (int(x) for x in line.split())
        data = payload(seed, nbytes)
        rng = random.Random(seed + 1)
        pos = 0
        while pos < len(data):
            n = min(len(data) - pos, rng.randint(1, 1 << 20))
            piece = data[pos : pos + n]
            pos += n
            kind = rng.randrange(5)
            if kind == 0:
                self.push_with_producer(ChunkProducer(piece, rng))
            elif kind == 1:
                bs = int(2 ** rng.uniform(9, 17))
                self.push_with_producer(asynchat.simple_producer(piece, buffer_size=bs))
            elif kind == 2:
                self.push(piece)
            elif kind == 3:
                self.push(bytearray(piece))
            else:
                self.push(memoryview(piece))
        self.close_when_done()


def client(address, seed):
    sock = socket.create_connection(address, timeout=60)
    sock.sendall(b"%d %d\n" % (seed, BYTES_PER_CLIENT))
    got = hashlib.sha256()
    received = 0
    while True:
        data = sock.recv(1 << 18)
        if not data:
            break
        got.update(data)
        received += len(data)
    sock.close()
    want = hashlib.sha256(payload(seed, BYTES_PER_CLIENT)).hexdigest()
    return received, got.hexdigest(), want


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_producers_deliver_whole_stream(use_poll):
    map = {}
    server = EchoServer(map, ProducerChannel)
    try:
        clients = [Worker(client, server.address, 77 + i) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        run_until(lambda: not any(c.is_alive() for c in clients), map, use_poll)
        for c in clients:
            received, got, want = c.join()
            assert received == BYTES_PER_CLIENT
            assert got == want
        run_until(lambda: len(map) == 1, map, use_poll)
        assert len(server.channels) == CLIENTS
        for ch in server.channels:
            assert ch.errors == []
            assert len(ch.producer_fifo) == 0
            # close_when_done's None closes the channel through handle_close, once
            assert ch.close_calls == 1
    finally:
        close_map(map)


def test_simple_producer_chunks():
    data = bytes(range(256)) * 40
    for bs in (1, 7, 512, 4096, 20000):
        p = asynchat.simple_producer(data, buffer_size=bs)
        chunks = []
        while True:
            chunk = p.more()
            if not chunk:
                break
            chunks.append(chunk)
        assert b"".join(chunks) == data
        assert all(len(c) == bs for c in chunks[:-1])
        assert p.more() == b""
