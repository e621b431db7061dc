"""A POP3 server written the way CPython's own test server is, driven by poplib clients.

The server classes are adapted from CPython 3.11's Lib/test/test_poplib.py (DummyPOP3Handler,
DummyPOP3Server, DummyPOP3_SSLHandler), Copyright (c) Python Software Foundation, licensed
under the PSF License Agreement. Changes: several mailboxes with real message bodies, the loop
thread is bounded in time and its errors are re-raised in the test.

What it exercises: an async_chat command/response server whose handle_error re-raises (errors
escape the loop), STLS switching the channel to TLS in the middle of a session from inside
found_terminator (the plain-text "+OK" must leave before the wrap), a handshake driven from
handle_read, and POP3 over TLS from the first byte (handshake driven by the read/write events).
"""

import errno
import poplib
import ssl
import threading
import time

import pytest
from _common import HOST
from _dropin import DEADLINE, TIMEOUT, SSLConnection, client_context, server_context
from _impl import asynchat, asyncore

MESSAGES = [
    b"From: postmaster@python.org\r\nSubject: Dummy\r\n\r\nline1\r\nline2\r\n.dotted\r\n",
    b"From: a@example.org\r\nSubject: Big\r\n\r\n"
    + b"".join(b"line %05d %s\r\n" % (i, b"x" * 60) for i in range(3000)),
    b"From: b@example.org\r\nSubject: Short\r\n\r\nhi\r\n",
]


def stuffed(message):
    """The message as sent on the wire: dot-stuffed, with the terminating line."""
    lines = message.split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


class DummyPOP3Handler(asynchat.async_chat):
    CAPAS = {"UIDL": [], "IMPLEMENTATION": ["python-testlib-pop-server"]}

    def __init__(self, conn):
        asynchat.async_chat.__init__(self, conn)
        self.set_terminator(b"\r\n")
        self.in_buffer = []
        self.push("+OK dummy pop3 server ready. <timestamp>")
        self.tls_active = False
        self.tls_starting = False

    def collect_incoming_data(self, data):
        self.in_buffer.append(data)

    def found_terminator(self):
        line = b"".join(self.in_buffer)
        line = str(line, "ISO-8859-1")
        self.in_buffer = []
        cmd = line.split(" ")[0].lower()
        space = line.find(" ")
        if space != -1:
            arg = line[space + 1 :]
        else:
            arg = ""
        if hasattr(self, "cmd_" + cmd):
            method = getattr(self, "cmd_" + cmd)
            method(arg)
        else:
            self.push('-ERR unrecognized POP3 command "%s".' % cmd)

    def handle_error(self):
        raise

    def push(self, data):
        asynchat.async_chat.push(self, data.encode("ISO-8859-1") + b"\r\n")

    def cmd_echo(self, arg):
        self.push(arg)

    def cmd_user(self, arg):
        if arg != "guido":
            self.push("-ERR no such user")
        else:
            self.push("+OK password required")

    def cmd_pass(self, arg):
        if arg != "python":
            self.push("-ERR wrong password")
        else:
            self.push("+OK %d messages" % len(MESSAGES))

    def cmd_stat(self, arg):
        self.push("+OK %d %d" % (len(MESSAGES), sum(map(len, MESSAGES))))

    def cmd_list(self, arg):
        if arg:
            self.push("+OK %s %d" % (arg, len(MESSAGES[int(arg) - 1])))
        else:
            self.push("+OK")
            for i, msg in enumerate(MESSAGES, 1):
                self.push("%d %d" % (i, len(msg)))
            self.push(".")

    def cmd_retr(self, arg):
        msg = MESSAGES[int(arg) - 1]
        self.push("+OK %d bytes" % len(msg))
        asynchat.async_chat.push(self, stuffed(msg))

    def cmd_dele(self, arg):
        self.push("+OK message marked for deletion.")

    def cmd_noop(self, arg):
        self.push("+OK done nothing.")

    def cmd_quit(self, arg):
        self.push("+OK closing.")
        self.close_when_done()

    def _get_capas(self):
        _capas = dict(self.CAPAS)
        if not self.tls_active:
            _capas["STLS"] = []
        return _capas

    def cmd_capa(self, arg):
        self.push("+OK Capability list follows")
        for cap, params in self._get_capas().items():
            self.push(" ".join([cap, *params]))
        self.push(".")

    def cmd_stls(self, arg):
        if self.tls_active is False:
            self.push("+OK Begin TLS negotiation")
            tls_sock = server_context().wrap_socket(
                self.socket,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,
            )
            self.del_channel()
            self.set_socket(tls_sock)
            self.tls_active = True
            self.tls_starting = True
            self.in_buffer = []
            self._do_tls_handshake()
        else:
            self.push("-ERR Command not permitted when TLS active")

    def _do_tls_handshake(self):
        try:
            self.socket.do_handshake()
        except ssl.SSLError as err:
            if err.args[0] in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                return
            elif err.args[0] == ssl.SSL_ERROR_EOF:
                return self.handle_close()
            elif (
                "SSLV3_ALERT_BAD_CERTIFICATE" in err.args[1]
                or "SSLV3_ALERT_CERTIFICATE_UNKNOWN" in err.args[1]
            ):
                return self.handle_close()
            raise
        except OSError as err:
            if err.args[0] == errno.ECONNABORTED:
                return self.handle_close()
        else:
            self.tls_active = True
            self.tls_starting = False

    def handle_read(self):
        if self.tls_starting:
            self._do_tls_handshake()
        else:
            try:
                asynchat.async_chat.handle_read(self)
            except ssl.SSLEOFError:
                self.handle_close()


class DummyPOP3_SSLHandler(SSLConnection, DummyPOP3Handler):
    def __init__(self, conn):
        asynchat.async_chat.__init__(self, conn)
        self.secure_connection()
        self.set_terminator(b"\r\n")
        self.in_buffer = []
        self.push("+OK dummy pop3 server ready. <timestamp>")
        self.tls_active = True
        self.tls_starting = False


class DummyPOP3Server(asyncore.dispatcher, threading.Thread):
    handler = DummyPOP3Handler

    def __init__(self, address, af=None):
        threading.Thread.__init__(self)
        asyncore.dispatcher.__init__(self)
        self.daemon = True
        self.create_socket()
        self.bind(address)
        self.listen(5)
        self.active = False
        self.active_lock = threading.Lock()
        self.host, self.port = self.socket.getsockname()[:2]
        self.handler_instance = None
        self.loop_error = None

    def start(self):
        assert not self.active
        self.__flag = threading.Event()
        threading.Thread.start(self)
        self.__flag.wait()

    def run(self):
        self.active = True
        self.__flag.set()
        end = time.monotonic() + DEADLINE
        try:
            while self.active and asyncore.socket_map and time.monotonic() < end:
                with self.active_lock:
                    asyncore.loop(timeout=0.1, count=1)
        except BaseException as exc:
            self.loop_error = exc
        finally:
            asyncore.close_all(ignore_all=True)

    def stop(self):
        assert self.active
        self.active = False
        self.join(DEADLINE)
        assert not self.is_alive()
        if self.loop_error is not None:
            raise self.loop_error

    def handle_accepted(self, conn, addr):
        self.handler_instance = self.handler(conn)

    def handle_connect(self):
        self.close()

    handle_read = handle_connect

    def writable(self):
        return 0

    def handle_error(self):
        raise


@pytest.fixture
def server():
    server = DummyPOP3Server((HOST, 0))
    try:
        yield server
    finally:
        try:
            if server.active:
                server.stop()
        finally:
            asyncore.close_all(ignore_all=True)


def check_mailbox(client):
    assert client.user("guido") == b"+OK password required"
    assert client.pass_("python") == b"+OK 3 messages"
    assert client.stat() == (3, sum(map(len, MESSAGES)))
    resp, listing, octets = client.list()
    assert resp == b"+OK"
    assert listing == [b"%d %d" % (i, len(m)) for i, m in enumerate(MESSAGES, 1)]
    assert client.list(2) == b"+OK 2 %d" % len(MESSAGES[1])
    for i, msg in enumerate(MESSAGES, 1):
        resp, lines, octets = client.retr(i)
        assert resp == b"+OK %d bytes" % len(msg)
        assert lines == msg.split(b"\r\n")[:-1]
    with pytest.raises(poplib.error_proto, match="unrecognized"):
        client._shortcmd("xyzzy")
    assert client.noop() == b"+OK done nothing."


def test_pop3_session_plain(server):
    server.start()
    client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
    try:
        assert client.getwelcome() == b"+OK dummy pop3 server ready. <timestamp>"
        assert "STLS" in client.capa()
        check_mailbox(client)
        assert client.quit() == b"+OK closing."
    finally:
        client.close()
    server.stop()


def test_pop3_stls_in_the_middle_of_a_session(server):
    server.start()
    client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
    try:
        assert client.noop() == b"+OK done nothing."
        assert client.stls(client_context()) == b"+OK Begin TLS negotiation"
        assert isinstance(client.sock, ssl.SSLSocket)
        assert "STLS" not in client.capa()
        check_mailbox(client)
        with server.active_lock:
            handler = server.handler_instance
            assert isinstance(handler.socket, ssl.SSLSocket)
            assert handler.tls_active and not handler.tls_starting
        with pytest.raises(poplib.error_proto, match="not permitted"):
            client._shortcmd("STLS")
        assert client.quit() == b"+OK closing."
    finally:
        client.close()
    server.stop()


def test_pop3_ssl_from_the_first_byte(server):
    server.handler = DummyPOP3_SSLHandler
    server.start()
    client = poplib.POP3_SSL(server.host, server.port, timeout=TIMEOUT, context=client_context())
    try:
        assert client.getwelcome() == b"+OK dummy pop3 server ready. <timestamp>"
        assert "STLS" not in client.capa()
        check_mailbox(client)
        assert client.quit() == b"+OK closing."
    finally:
        client.close()
    server.stop()


def test_pop3_several_stls_sessions_at_once(server):
    server.start()
    failures = []

    def session():
        try:
            client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
            try:
                client.stls(client_context())
                for _ in range(3):
                    check_mailbox(client)
                client.quit()
            finally:
                client.close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=session) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    server.stop()


def test_pop3_handler_error_escapes_the_loop(server):
    """handle_error re-raises (as CPython's test server does): the exception leaves loop()."""

    class Boom(Exception):
        pass

    class Handler(DummyPOP3Handler):
        def cmd_boom(self, arg):
            raise Boom("from a command")

    server.handler = Handler
    server.start()
    client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
    try:
        client._putcmd("BOOM")
        server.join(DEADLINE)
        assert not server.is_alive()
        assert isinstance(server.loop_error, Boom)
    finally:
        client.close()
        server.active = False
        server.loop_error = None
