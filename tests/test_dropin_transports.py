"""The transports real programs put under asyncore besides TCP/IPv4: pipes through
file_dispatcher, AF_UNIX stream sockets (listening and connecting dispatchers, socketpair), and
IPv6 loopback. Each runs both ends in one loop thread (select and poll flavours)."""

import os
import random
import shutil
import socket
import sys
import tempfile
import threading

import pytest
from _common import HOST, HOSTv6
from _dropin import DEADLINE, HAS_AF_UNIX, IPV6_ENABLED, LoopThread, wait_for
from _impl import asynchat, asyncore

USE_POLL = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
needs_unix = pytest.mark.skipif(not HAS_AF_UNIX, reason="no AF_UNIX")
needs_ipv6 = pytest.mark.skipif(not IPV6_ENABLED, reason="IPv6 loopback not available")
needs_file_dispatcher = pytest.mark.skipif(
    not hasattr(asyncore, "file_dispatcher"), reason="no file_dispatcher on this platform"
)


def blob(size, seed):
    return random.Random(seed).randbytes(size)


class ErrorRecording:
    def handle_error(self):
        self.errors.append(sys.exc_info()[1])
        self.close()


@needs_file_dispatcher
@USE_POLL
def test_file_dispatcher_reads_a_pipe_written_by_a_thread(use_poll):
    chmap = {}
    errors = []
    data = blob(300_000, 1)

    class PipeReader(ErrorRecording, asyncore.file_dispatcher):
        def __init__(self, fd):
            asyncore.file_dispatcher.__init__(self, fd, map=chmap)
            self.errors = errors
            self.received = bytearray()
            self.eof = False

        def writable(self):
            return False

        def handle_read(self):
            # read all there is: under poll() the writer's close arrives as POLLIN|POLLHUP,
            # and readwrite() calls handle_close right after this one handle_read
            while self.connected:
                try:
                    chunk = self.recv(4096)
                except BlockingIOError:
                    return
                self.received += chunk

        def handle_close(self):
            self.eof = True
            self.close()

    r, w = os.pipe()
    reader = PipeReader(r)
    os.close(r)  # file_dispatcher works on a dup of it
    assert isinstance(reader.socket, asyncore.file_wrapper)
    assert reader.connected

    def write_all():
        rnd = random.Random(2)
        pos = 0
        with open(w, "wb", buffering=0) as f:
            while pos < len(data):
                n = rnd.randint(1, 20_000)
                f.write(data[pos : pos + n])
                pos += n

    with LoopThread(chmap, use_poll=use_poll):
        writer = threading.Thread(target=write_all)
        writer.start()
        writer.join(DEADLINE)
        wait_for(lambda: reader.eof or errors, message="reader did not see EOF")
    assert errors == []
    assert bytes(reader.received) == data
    assert chmap == {}


@needs_file_dispatcher
@USE_POLL
def test_file_dispatcher_writes_a_pipe_read_by_a_thread(use_poll):
    chmap = {}
    errors = []
    data = blob(300_000, 3)

    class PipeWriter(ErrorRecording, asyncore.file_dispatcher):
        def __init__(self, fd):
            asyncore.file_dispatcher.__init__(self, fd, map=chmap)
            self.errors = errors
            self.pending = memoryview(data)
            self.writes = 0

        def readable(self):
            return False

        def writable(self):
            return len(self.pending) > 0

        def handle_write(self):
            n = self.send(self.pending[:65536])
            self.pending = self.pending[n:]
            self.writes += 1
            if not self.pending:
                self.close()

    r, w = os.pipe()
    writer = PipeWriter(w)
    os.close(w)
    received = bytearray()

    def read_all():
        with open(r, "rb", buffering=0) as f:
            while True:
                chunk = f.read(8192)
                if not chunk:
                    return
                received.extend(chunk)

    with LoopThread(chmap, use_poll=use_poll):
        reader = threading.Thread(target=read_all)
        reader.start()
        reader.join(DEADLINE)
        assert not reader.is_alive()
    assert errors == []
    assert bytes(received) == data
    # a pipe holds 64 KiB: the writer had to wait for room several times
    assert writer.writes > 1


class EchoHandler(ErrorRecording, asyncore.dispatcher_with_send):
    def __init__(self, sock, server):
        asyncore.dispatcher_with_send.__init__(self, sock, map=server.chmap)
        self.errors = server.errors

    def handle_read(self):
        self.send(self.recv(8192))

    def handle_close(self):
        self.close()


class EchoServer(ErrorRecording, asyncore.dispatcher):
    def __init__(self, family, address, chmap):
        asyncore.dispatcher.__init__(self, map=chmap)
        self.chmap = chmap
        self.errors = []
        self.accepted = []
        self.create_socket(family, socket.SOCK_STREAM)
        self.bind(address)
        self.listen(16)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock, addr):
        self.accepted.append(addr)
        EchoHandler(sock, self)


class EchoClient(ErrorRecording, asyncore.dispatcher_with_send):
    def __init__(self, family, address, payload, chmap, errors):
        asyncore.dispatcher_with_send.__init__(self, map=chmap)
        self.errors = errors
        self.payload = payload
        self.received = bytearray()
        self.connect_called = False
        self.done = False
        self.create_socket(family, socket.SOCK_STREAM)
        self.connect(address)

    def handle_connect(self):
        self.connect_called = True
        self.send(self.payload)

    def handle_read(self):
        self.received += self.recv(65536)
        if len(self.received) >= len(self.payload):
            self.done = True
            self.close()


def run_echo(family, address, use_poll, sizes):
    chmap = {}
    errors = []
    server = EchoServer(family, address, chmap)
    clients = [
        EchoClient(family, server.address, blob(size, i), chmap, errors)
        for i, size in enumerate(sizes)
    ]
    with LoopThread(chmap, use_poll=use_poll):
        wait_for(lambda: all(c.done for c in clients) or errors, message="echo not finished")
    assert errors == []
    assert server.errors == []
    assert len(server.accepted) == len(sizes)
    for c in clients:
        assert c.connect_called
        assert bytes(c.received) == c.payload
    return server, clients


@pytest.fixture
def short_tmpdir():
    # AF_UNIX paths are limited to about 100 bytes: pytest's tmp_path can be longer
    path = tempfile.mkdtemp(prefix="acrs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_unix
@USE_POLL
def test_af_unix_server_and_client_dispatchers(use_poll, short_tmpdir):
    path = os.path.join(short_tmpdir, "echo.sock")
    server, clients = run_echo(socket.AF_UNIX, path, use_poll, [1, 5000, 200_000, 70_000])
    assert server.address == path
    assert clients[0].family_and_type == (socket.AF_UNIX, socket.SOCK_STREAM)


@needs_unix
@USE_POLL
def test_af_unix_socketpair_async_chat(use_poll):
    chmap = {}
    errors = []

    class LineChat(ErrorRecording, asynchat.async_chat):
        def __init__(self, sock, replies):
            asynchat.async_chat.__init__(self, sock, map=chmap)
            self.errors = errors
            self.replies = replies
            self.set_terminator(b"\n")
            self.buf = []
            self.lines = []

        def collect_incoming_data(self, data):
            self.buf.append(data)

        def found_terminator(self):
            line = b"".join(self.buf)
            self.buf = []
            self.lines.append(line)
            if not self.replies:
                if line == b"BYE":
                    self.close()
            elif line == b"END":
                self.push(b"BYE\n")
                self.close_when_done()
            else:
                self.push(line[::-1] + b"\n")

    a, b = socket.socketpair()
    server = LineChat(a, replies=True)
    client = LineChat(b, replies=False)
    lines = [b"%d-%s" % (i, b"ab" * i) for i in range(200)]
    with LoopThread(chmap, use_poll=use_poll) as loop:
        with loop.lock:
            for ln in lines:
                client.push(ln + b"\n")
            client.push(b"END\n")
        wait_for(lambda: chmap == {} or errors, message="chat not finished")
    assert errors == []
    assert server.lines == lines + [b"END"]
    assert client.lines == [ln[::-1] for ln in lines] + [b"BYE"]


@needs_ipv6
@USE_POLL
def test_ipv6_server_and_client_dispatchers(use_poll):
    server, clients = run_echo(socket.AF_INET6, (HOSTv6, 0), use_poll, [1, 100_000, 3000])
    assert server.address[0] == HOSTv6
    for c in clients:
        assert c.addr[0] == HOSTv6


@USE_POLL
def test_ipv4_server_and_client_dispatchers(use_poll):
    """The same echo on IPv4, the baseline for the transports above."""
    run_echo(socket.AF_INET, (HOST, 0), use_poll, [1, 100_000, 3000])
