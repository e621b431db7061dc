"""TLS inside a dispatcher and inside an async_chat, with the handshake driven from the loop.

The sockets are ssl.SSLSocket objects created with do_handshake_on_connect=False; the handlers
call do_handshake() from handle_read/handle_write and treat SSLWantReadError /
SSLWantWriteError as "try again on the next event", as real TLS code on asyncore does. Python
overrides of readable()/writable()/recv()/send() decide what the loop does.
"""

import hashlib
import random
import socket
import ssl
import sys

import pytest
from _common import HOST
from _dropin import TIMEOUT, LoopThread, client_context, run_in_threads, server_context, wait_for
from _impl import asynchat, asyncore

USE_POLL = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])


def blob(size, seed):
    return random.Random(seed).randbytes(size)


class Acceptor(asyncore.dispatcher):
    """Plain listening dispatcher that hands accepted sockets to handler_class."""

    def __init__(self, handler_class, chmap):
        asyncore.dispatcher.__init__(self, map=chmap)
        self.chmap = chmap
        self.handler_class = handler_class
        self.handlers = []
        self.errors = []
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((HOST, 0))
        self.listen(16)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock, addr):
        self.handlers.append(self.handler_class(sock, self))

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])
        self.close()


class TLSEchoHandler(asyncore.dispatcher):
    """Echo over TLS with a plain dispatcher: own buffer, own handshake."""

    def __init__(self, sock, server):
        tls = server_context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        asyncore.dispatcher.__init__(self, tls, map=server.chmap)
        self.server = server
        self.handshaking = True
        self.out = bytearray()
        self.retry = None  # a TLS write to repeat exactly after SSLWant*Error
        self.echoed = 0
        self.handshake_events = []

    def _handshake(self, event):
        self.handshake_events.append(event)
        try:
            self.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        self.handshaking = False

    def readable(self):
        return True

    def writable(self):
        return self.handshaking or bool(self.out) or self.retry is not None

    def handle_read(self):
        if self.handshaking:
            self._handshake("read")
            return
        try:
            data = self.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        self.out += data

    def handle_write(self):
        if self.handshaking:
            self._handshake("write")
            return
        chunk = self.retry if self.retry is not None else bytes(self.out[:65536])
        try:
            sent = self.send(chunk)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self.retry = chunk
            return
        # chunk is a prefix of out, which only grows at its end
        del self.out[:sent]
        self.retry = None
        self.echoed += sent

    def handle_close(self):
        self.close()

    def handle_error(self):
        self.server.errors.append(sys.exc_info()[1])
        self.close()


class TLSEchoClient(asyncore.dispatcher):
    """Client dispatcher: connects, wraps its socket in handle_connect, handshakes in the loop."""

    def __init__(self, address, payload, chmap, errors):
        asyncore.dispatcher.__init__(self, map=chmap)
        self.payload = payload
        self.sent = 0
        self.received = bytearray()
        self.errors = errors
        self.handshaking = False
        self.retry = None
        self.done = False
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)

    def handle_connect(self):
        tls = client_context().wrap_socket(
            self.socket, server_hostname="localhost", do_handshake_on_connect=False
        )
        self.del_channel()
        self.set_socket(tls)
        self.handshaking = True

    def writable(self):
        if not self.connected or self.handshaking:
            return True
        return self.sent < len(self.payload)

    def _handshake(self):
        try:
            self.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        self.handshaking = False
        self.peer_cn = dict(x[0] for x in self.socket.getpeercert()["subject"])["commonName"]

    def handle_read(self):
        if self.handshaking:
            self._handshake()
            return
        try:
            self.received += self.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        if len(self.received) >= len(self.payload):
            self.done = True
            self.close()

    def handle_write(self):
        if self.handshaking:
            self._handshake()
            return
        chunk = self.retry or self.payload[self.sent : self.sent + 32768]
        if not chunk:
            return
        try:
            n = self.send(chunk)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self.retry = chunk
            return
        self.retry = None
        self.sent += n

    def handle_close(self):
        self.close()

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])
        self.close()


class TLSChat(asynchat.async_chat):
    """async_chat over TLS: handshake in handle_read/handle_write, SSLWant* in recv/send."""

    def __init__(self, sock=None, chmap=None):
        asynchat.async_chat.__init__(self, sock, map=chmap)
        self.handshaking = sock is not None
        self.incoming = []

    def _handshake(self):
        try:
            self.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        self.handshaking = False
        self.handshake_done()

    def handshake_done(self):
        pass

    def writable(self):
        return self.handshaking or asynchat.async_chat.writable(self)

    def handle_read(self):
        if self.handshaking:
            self._handshake()
        else:
            asynchat.async_chat.handle_read(self)

    def handle_write(self):
        if self.handshaking:
            self._handshake()
        else:
            asynchat.async_chat.handle_write(self)

    def recv(self, buffer_size):
        try:
            return asynchat.async_chat.recv(self, buffer_size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return b""

    def send(self, data):
        try:
            return asynchat.async_chat.send(self, data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return 0

    def collect_incoming_data(self, data):
        self.incoming.append(data)


class TLSLineServerChat(TLSChat):
    """Line protocol: a line is echoed upper-cased; "BLOB n" switches to an int terminator and
    answers the length and sha256 of the next n bytes; "QUIT" answers BYE and closes."""

    def __init__(self, sock, server):
        tls = server_context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        TLSChat.__init__(self, tls, server.chmap)
        self.server = server
        self.set_terminator(b"\n")

    def found_terminator(self):
        data = b"".join(self.incoming)
        self.incoming = []
        if isinstance(self.get_terminator(), int):
            digest = hashlib.sha256(data).hexdigest().encode()
            self.push(b"GOT %d %s\n" % (len(data), digest))
            self.set_terminator(b"\n")
        elif data.startswith(b"BLOB "):
            self.set_terminator(int(data[5:]))
        elif data == b"QUIT":
            self.push(b"BYE\n")
            self.close_when_done()
        else:
            self.push(data.upper() + b"\n")

    def handle_error(self):
        self.server.errors.append(sys.exc_info()[1])
        self.close()


class StartTLSServerChat(asynchat.async_chat):
    """Starts in clear text; "STARTTLS" answers OK in clear, then wraps the socket in the middle
    of handle_read (del_channel + set_socket) and handshakes from handle_read only, as CPython's
    test POP3 server does: no Python readable()/writable() override. "BIG n" answers n bytes."""

    def __init__(self, sock, server):
        asynchat.async_chat.__init__(self, sock, map=server.chmap)
        self.server = server
        self.handshaking = False
        self.incoming = []
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self.incoming.append(data)

    def found_terminator(self):
        data = b"".join(self.incoming)
        self.incoming = []
        if data == b"STARTTLS":
            self.push(b"OK\n")
            tls = server_context().wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
            self.del_channel()
            self.set_socket(tls)
            self.handshaking = True
        elif data.startswith(b"BIG "):
            self.push(b"x" * int(data[4:]) + b"\n")
        else:
            self.push(data.upper() + b"\n")

    def handle_read(self):
        if self.handshaking:
            try:
                self.socket.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            self.handshaking = False
        else:
            asynchat.async_chat.handle_read(self)

    def handle_error(self):
        self.server.errors.append(sys.exc_info()[1])
        self.close()


class TLSLineClientChat(TLSChat):
    """Client async_chat whose socket is wrapped before connect(); the handshake starts when
    the connection is up."""

    def __init__(self, address, requests, chmap, errors):
        TLSChat.__init__(self, None, chmap)
        self.errors = errors
        self.requests = requests
        self.replies = []
        self.set_terminator(b"\n")
        sock = client_context().wrap_socket(
            socket.socket(socket.AF_INET, socket.SOCK_STREAM),
            server_hostname="localhost",
            do_handshake_on_connect=False,
        )
        sock.setblocking(False)
        self.set_socket(sock)
        self.connect(address)

    def handle_connect(self):
        self.handshaking = True

    def handshake_done(self):
        for request in self.requests:
            self.push(request)
        self.push(b"QUIT\n")

    def found_terminator(self):
        self.replies.append(b"".join(self.incoming))
        self.incoming = []
        if self.replies[-1] == b"BYE":
            self.close()

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])
        self.close()


def tls_blocking_client(address):
    raw = socket.create_connection(address, timeout=TIMEOUT)
    return client_context().wrap_socket(raw, server_hostname="localhost")


def recv_exactly(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed after %d of %d bytes" % (len(buf), n)
        buf += chunk
    return bytes(buf)


def recv_line(f):
    line = f.readline()
    assert line.endswith(b"\n"), line
    return line[:-1]


@USE_POLL
def test_tls_dispatcher_echo_with_blocking_clients(use_poll):
    chmap = {}
    server = Acceptor(TLSEchoHandler, chmap)
    failures = []

    def client(n):
        try:
            with tls_blocking_client(server.address) as sock:
                assert sock.version() is not None
                for size in (1, 100, 16384, 70_000, 250_000):
                    data = blob(size, n * 1000 + size)
                    # all of it first (an SSLSocket must not be used from two threads at
                    # once): the server keeps reading while its echo waits to be sent
                    sock.sendall(data)
                    assert recv_exactly(sock, size) == data
        except BaseException as exc:
            failures.append(exc)

    with LoopThread(chmap, use_poll=use_poll):
        run_in_threads(client, 3)
    assert failures == []
    assert server.errors == []
    assert len(server.handlers) == 3
    for handler in server.handlers:
        assert not handler.handshaking
        assert handler.handshake_events  # the handshake ran from loop events
        assert handler.echoed == 1 + 100 + 16384 + 70_000 + 250_000


@USE_POLL
def test_tls_dispatcher_both_ends_in_the_loop(use_poll):
    chmap = {}
    errors = []
    server = Acceptor(TLSEchoHandler, chmap)
    clients = [
        TLSEchoClient(server.address, blob(size, size), chmap, errors)
        for size in (10, 40_000, 300_000)
    ]
    with LoopThread(chmap, use_poll=use_poll):
        wait_for(lambda: all(c.done for c in clients) or errors, message="echo not finished")
    assert errors == []
    assert server.errors == []
    for c in clients:
        assert c.peer_cn == "localhost"
        assert bytes(c.received) == c.payload


@USE_POLL
def test_tls_async_chat_with_blocking_client(use_poll):
    chmap = {}
    server = Acceptor(TLSLineServerChat, chmap)
    big = blob(300_000, 7)
    with LoopThread(chmap, use_poll=use_poll):
        with tls_blocking_client(server.address) as sock:
            f = sock.makefile("rb")
            lines = [b"line %d %s" % (i, b"z" * (i % 50)) for i in range(300)]
            sock.sendall(b"".join(ln + b"\n" for ln in lines))
            for ln in lines:
                assert recv_line(f) == ln.upper()
            # an int terminator across many TLS records, split mid-way by the client
            sock.sendall(b"BLOB %d\n" % len(big) + big[:1000])
            sock.sendall(big[1000:] + b"after\n")
            digest = hashlib.sha256(big).hexdigest().encode()
            assert recv_line(f) == b"GOT %d %s" % (len(big), digest)
            assert recv_line(f) == b"AFTER"
            sock.sendall(b"QUIT\n")
            assert recv_line(f) == b"BYE"
            assert f.read() == b""  # close_when_done closed the channel
            f.close()
    assert server.errors == []
    assert len(server.handlers) == 1
    assert not server.handlers[0].handshaking


@USE_POLL
def test_tls_async_chat_both_ends_in_the_loop(use_poll):
    chmap = {}
    errors = []
    server = Acceptor(TLSLineServerChat, chmap)
    big = blob(100_000, 9)
    requests = [b"hello\n", b"BLOB %d\n" % len(big), big, b"world\n"]
    clients = [TLSLineClientChat(server.address, requests, chmap, errors) for _ in range(3)]
    with LoopThread(chmap, use_poll=use_poll):
        wait_for(
            lambda: all(c.replies[-1:] == [b"BYE"] for c in clients) or errors,
            message="chat not finished",
        )
    assert errors == []
    assert server.errors == []
    digest = hashlib.sha256(big).hexdigest().encode()
    for c in clients:
        assert c.replies == [b"HELLO", b"GOT %d %s" % (len(big), digest), b"WORLD", b"BYE"]


@USE_POLL
def test_tls_handshake_error_goes_to_handle_error(use_poll):
    """A client that speaks clear text to the TLS server: do_handshake() raises SSLError
    inside handle_read, the loop calls handle_error with that exception being handled."""
    chmap = {}
    server = Acceptor(TLSEchoHandler, chmap)
    with LoopThread(chmap, use_poll=use_poll) as loop:
        with socket.create_connection(server.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
            wait_for(lambda: server.errors, message="handle_error not called")
            # the handler closed itself in handle_error: it left the map
            with loop.lock:
                assert len(server.handlers) == 1
                assert server.handlers[0] not in chmap.values()
                assert list(chmap.values()) == [server]
    assert len(server.errors) == 1
    assert isinstance(server.errors[0], ssl.SSLError)
    # and the server still works
    chmap2 = {}
    server2 = Acceptor(TLSEchoHandler, chmap2)
    with LoopThread(chmap2, use_poll=use_poll):
        with tls_blocking_client(server2.address) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
    assert server2.errors == []


@USE_POLL
def test_tls_async_chat_starttls_then_large_responses(use_poll):
    """STARTTLS in the middle of a session, then responses larger than one send: the rest of
    producer_fifo must go out on later write events."""
    chmap = {}
    server = Acceptor(StartTLSServerChat, chmap)
    with LoopThread(chmap, use_poll=use_poll):
        raw = socket.create_connection(server.address, timeout=TIMEOUT)
        raw.sendall(b"hello\nSTARTTLS\n")
        assert recv_exactly(raw, len(b"HELLO\nOK\n")) == b"HELLO\nOK\n"
        with client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            f = sock.makefile("rb")
            sock.sendall(b"secret\n")
            assert recv_line(f) == b"SECRET"
            for size in (100, 70_000, 300_000):
                sock.sendall(b"BIG %d\n" % size)
                assert recv_line(f) == b"x" * size
            f.close()
    assert server.errors == []
    assert isinstance(server.handlers[0].socket, ssl.SSLSocket)
