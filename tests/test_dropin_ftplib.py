"""An FTP server written the way CPython's own test server is, driven by ftplib clients.

The server classes are adapted from CPython 3.11's Lib/test/test_ftplib.py (DummyDTPHandler,
DummyFTPHandler, DummyFTPServer, DummyTLS_*), Copyright (c) Python Software Foundation,
licensed under the PSF License Agreement. Changes: STOR keeps the uploaded bytes and RETR serves
them back, PASV answers the real address, handler errors are recorded and checked instead of
ignored, and the loop thread is bounded in time.

What it exercises: async_chat control and data channels, a dispatcher that is also a
threading.Thread, blocking accept() inside a handler (PASV), AUTH TLS upgrading the control
channel in the middle of a session (wrap + del_channel + set_socket, handshake driven from the
loop), TLS data channels (PROT P), CCC (TLS shutdown back to clear text, assigning
``self.socket``), and EPSV over IPv6.
"""

import ftplib
import io
import random
import socket
import ssl
import sys
import threading
import time

import pytest
from _common import HOST, HOSTv6
from _dropin import DEADLINE, IPV6_ENABLED, TIMEOUT, SSLConnection, client_context, run_in_threads
from _impl import asynchat, asyncore

LIST_DATA = "foo\r\nbar\r\n non-ascii char \xae\r\n"
NLST_DATA = "foo\r\nbar\r\n"


def payload(size, seed):
    return random.Random(seed).randbytes(size)


class DummyDTPHandler(asynchat.async_chat):
    dtp_conn_closed = False

    def __init__(self, conn, baseclass):
        asynchat.async_chat.__init__(self, conn)
        self.baseclass = baseclass
        self.baseclass.last_received_data = bytearray()
        self.encoding = baseclass.encoding

    def handle_read(self):
        new_data = self.recv(1024)
        self.baseclass.last_received_data += new_data

    def handle_close(self):
        # can be called several times in a row for one connection
        if not self.dtp_conn_closed:
            self.baseclass.transfer_done()
            self.close()
            self.dtp_conn_closed = True

    def push(self, what):
        if isinstance(what, str):
            what = what.encode(self.encoding)
        super().push(what)

    def handle_error(self):
        self.baseclass.record_error()


class DummyFTPHandler(asynchat.async_chat):
    dtp_handler = DummyDTPHandler

    def __init__(self, conn, server, encoding="utf-8"):
        asynchat.async_chat.__init__(self, conn)
        # tells the socket to handle urgent data inline (ABOR command)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        self.set_terminator(b"\r\n")
        self.server = server
        self.in_buffer = []
        self.dtp = None
        self.last_received_cmd = None
        self.last_received_data = bytearray()
        self.storing = None
        self.rest = None
        self.encoding = encoding
        self.push("220 welcome")

    def record_error(self):
        self.server.errors.append(sys.exc_info()[1])

    def collect_incoming_data(self, data):
        self.in_buffer.append(data)

    def found_terminator(self):
        line = b"".join(self.in_buffer).decode(self.encoding)
        self.in_buffer = []
        cmd = line.split(" ")[0].lower()
        self.last_received_cmd = cmd
        self.server.commands.append(cmd)
        space = line.find(" ")
        if space != -1:
            arg = line[space + 1 :]
        else:
            arg = ""
        if hasattr(self, "cmd_" + cmd):
            method = getattr(self, "cmd_" + cmd)
            method(arg)
        else:
            self.push('550 command "%s" not understood.' % cmd)

    def handle_error(self):
        self.record_error()
        self.close()

    def push(self, data):
        asynchat.async_chat.push(self, data.encode(self.encoding) + b"\r\n")

    def transfer_done(self):
        if self.storing is not None:
            self.server.files[self.storing] = bytes(self.last_received_data)
            self.storing = None
        self.push("226 transfer complete")

    def cmd_pasv(self, arg):
        with socket.create_server((self.socket.getsockname()[0], 0)) as sock:
            sock.settimeout(TIMEOUT)
            ip, port = sock.getsockname()[:2]
            self.push(
                "227 entering passive mode (%s,%d,%d)"
                % (ip.replace(".", ","), port // 256, port % 256)
            )
            conn, addr = sock.accept()
            self.dtp = self.dtp_handler(conn, baseclass=self)

    def cmd_epsv(self, arg):
        with socket.create_server(
            (self.socket.getsockname()[0], 0), family=socket.AF_INET6
        ) as sock:
            sock.settimeout(TIMEOUT)
            port = sock.getsockname()[1]
            self.push("229 entering extended passive mode (|||%d|)" % port)
            conn, addr = sock.accept()
            self.dtp = self.dtp_handler(conn, baseclass=self)

    def cmd_echo(self, arg):
        self.push(arg)

    def cmd_noop(self, arg):
        self.push("200 noop ok")

    def cmd_user(self, arg):
        self.push("331 username ok")

    def cmd_pass(self, arg):
        self.push("230 password ok")

    def cmd_cwd(self, arg):
        self.push("250 cwd ok")

    def cmd_pwd(self, arg):
        self.push('257 "pwd ok"')

    def cmd_type(self, arg):
        self.push("200 type ok")

    def cmd_size(self, arg):
        if arg in self.server.files:
            self.push("213 %d" % len(self.server.files[arg]))
        else:
            self.push("550 no such file")

    def cmd_quit(self, arg):
        self.push("221 quit ok")
        self.close()

    def cmd_stor(self, arg):
        self.storing = arg
        self.push("125 stor ok")

    def cmd_rest(self, arg):
        self.rest = arg
        self.push("350 rest ok")

    def cmd_retr(self, arg):
        data = self.server.files.get(arg)
        if data is None:
            self.push("550 no such file")
            self.dtp.close()
            return
        self.push("125 retr ok")
        offset = int(self.rest) if self.rest is not None else 0
        self.dtp.push(data[offset:])
        self.dtp.close_when_done()
        self.rest = None

    def cmd_list(self, arg):
        self.push("125 list ok")
        self.dtp.push(LIST_DATA)
        self.dtp.close_when_done()

    def cmd_nlst(self, arg):
        self.push("125 nlst ok")
        self.dtp.push(NLST_DATA)
        self.dtp.close_when_done()


class DummyTLS_DTPHandler(SSLConnection, DummyDTPHandler):
    """A DummyDTPHandler subclass supporting TLS/SSL."""

    def __init__(self, conn, baseclass):
        DummyDTPHandler.__init__(self, conn, baseclass)
        if self.baseclass.secure_data_channel:
            self.secure_connection()


class DummyTLS_FTPHandler(SSLConnection, DummyFTPHandler):
    """A DummyFTPHandler subclass supporting TLS/SSL."""

    dtp_handler = DummyTLS_DTPHandler

    def __init__(self, conn, server, encoding="utf-8"):
        DummyFTPHandler.__init__(self, conn, server, encoding=encoding)
        self.secure_data_channel = False
        self._ccc = False

    def cmd_auth(self, line):
        """Set up secure control channel."""
        self.push("234 AUTH TLS successful")
        self.secure_connection()

    def cmd_ccc(self, line):
        self.push("220 Reverting back to clear-text")
        self._ccc = True
        self._do_ssl_shutdown()

    def cmd_pbsz(self, line):
        self.push("200 PBSZ=0 successful.")

    def cmd_prot(self, line):
        """Set up un/secure data channel."""
        arg = line.upper()
        if arg == "C":
            self.push("200 Protection set to Clear")
            self.secure_data_channel = False
        elif arg == "P":
            self.push("200 Protection set to Private")
            self.secure_data_channel = True
        else:
            self.push("502 Unrecognized PROT type (use C or P).")


class DummyFTPServer(asyncore.dispatcher, threading.Thread):
    handler = DummyFTPHandler

    def __init__(self, address, af=socket.AF_INET, encoding="utf-8"):
        threading.Thread.__init__(self)
        asyncore.dispatcher.__init__(self)
        self.daemon = True
        self.create_socket(af, socket.SOCK_STREAM)
        self.bind(address)
        self.listen(5)
        self.active = False
        self.active_lock = threading.Lock()
        self.host, self.port = self.socket.getsockname()[:2]
        self.handler_instance = None
        self.encoding = encoding
        self.files = {}
        self.errors = []
        self.commands = []
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
        self.handler_instance = self.handler(conn, self, encoding=self.encoding)

    def handle_connect(self):
        self.close()

    handle_read = handle_connect

    def writable(self):
        return 0

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])


class DummyTLS_FTPServer(DummyFTPServer):
    handler = DummyTLS_FTPHandler


@pytest.fixture
def server_factory():
    servers = []

    def make(cls=DummyFTPServer, address=(HOST, 0), af=socket.AF_INET):
        server = cls(address, af=af)
        server.start()
        servers.append(server)
        return server

    yield make
    try:
        for server in servers:
            server.stop()
            assert server.errors == []
    finally:
        asyncore.close_all(ignore_all=True)


def stor_retr_roundtrip(client, server, name, data):
    resp = client.storbinary("STOR " + name, io.BytesIO(data), blocksize=8192)
    assert resp == "226 transfer complete"
    assert server.files[name] == data
    assert client.size(name) == len(data)
    received = bytearray()
    resp = client.retrbinary("RETR " + name, received.extend)
    assert resp == "226 transfer complete"
    assert bytes(received) == data


def test_dummy_server_is_a_dispatcher_and_a_thread(server_factory):
    server = server_factory()
    assert isinstance(server, asyncore.dispatcher)
    assert isinstance(server, threading.Thread)
    assert server.is_alive()
    assert server.accepting
    assert server.daemon


def test_ftp_session_plain(server_factory):
    server = server_factory()
    with ftplib.FTP(timeout=TIMEOUT) as client:
        assert client.connect(server.host, server.port) == "220 welcome"
        assert client.login("user", "pass") == "230 password ok"
        assert client.pwd() == "pwd ok"
        assert client.cwd("/incoming") == "250 cwd ok"
        lines = []
        assert client.retrlines("LIST", lines.append) == "226 transfer complete"
        assert lines == ["foo", "bar", " non-ascii char \xae"]
        assert client.nlst() == ["foo", "bar"]
        stor_retr_roundtrip(client, server, "big.bin", payload(300_000, 1))
        # RETR with REST: a partial download from an offset
        received = bytearray()
        client.retrbinary("RETR big.bin", received.extend, rest=250_000)
        assert bytes(received) == server.files["big.bin"][250_000:]
        with pytest.raises(ftplib.error_perm, match="550"):
            client.sendcmd("XYZZY")
        assert client.sendcmd("echo 200 hello world") == "200 hello world"
        assert client.quit() == "221 quit ok"


def test_ftp_tls_session_upgrades_in_the_middle(server_factory):
    server = server_factory(DummyTLS_FTPServer)
    with ftplib.FTP_TLS(context=client_context(), timeout=TIMEOUT) as client:
        client.connect(server.host, server.port)
        # clear text first
        assert client.voidcmd("NOOP") == "200 noop ok"
        assert not isinstance(client.sock, ssl.SSLSocket)
        # AUTH TLS: the server wraps its socket and drives the handshake from the loop
        assert client.auth() == "234 AUTH TLS successful"
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.login("user", "pass") == "230 password ok"
        # the server has read a command over TLS: its handshake is over
        with server.active_lock:
            handler = server.handler_instance
            assert isinstance(handler.socket, ssl.SSLSocket)
            assert handler.socket.version() is not None
            assert not handler._ssl_accepting
            assert handler.connected
        # protected data channels
        assert client.prot_p() == "200 Protection set to Private"
        lines = []
        client.retrlines("LIST", lines.append)
        assert lines == ["foo", "bar", " non-ascii char \xae"]
        stor_retr_roundtrip(client, server, "secret.bin", payload(300_000, 2))
        # back to clear data channels on the same TLS control connection
        assert client.prot_c() == "200 Protection set to Clear"
        stor_retr_roundtrip(client, server, "clear.bin", payload(100_000, 3))
        # CCC: TLS shutdown on the control channel, then clear-text commands again
        assert client.ccc() == "220 Reverting back to clear-text"
        # unwrap() leaves an SSLSocket object without a TLS session (version() is None)
        assert client.sock.version() is None
        assert client.voidcmd("NOOP") == "200 noop ok"
        with server.active_lock:
            assert server.handler_instance.socket.version() is None
            assert not server.handler_instance._ssl_closing
        assert client.quit() == "221 quit ok"


def test_ftp_tls_rejects_wrong_hostname(server_factory):
    """The client refuses the certificate for another name; the server survives the
    failed handshake and serves the next client."""
    server = server_factory(DummyTLS_FTPServer)
    with ftplib.FTP_TLS(context=client_context(), timeout=TIMEOUT) as client:
        client.connect(server.host, server.port)
        client.host = "not-localhost.invalid"
        with pytest.raises(ssl.SSLCertVerificationError):
            client.auth()
    with ftplib.FTP_TLS(context=client_context(), timeout=TIMEOUT) as client:
        client.connect(server.host, server.port)
        client.login("user", "pass", secure=True)
        assert client.voidcmd("NOOP") == "200 noop ok"
        client.quit()


def test_ftp_several_sessions_at_once(server_factory):
    server = server_factory(DummyTLS_FTPServer)
    failures = []

    def session(n):
        try:
            with ftplib.FTP_TLS(context=client_context(), timeout=TIMEOUT) as client:
                client.connect(server.host, server.port)
                client.login("user%d" % n, "pass", secure=(n % 2 == 0))
                if n % 2 == 0:
                    client.prot_p()
                for i in range(3):
                    name = "f%d-%d" % (n, i)
                    stor_retr_roundtrip(client, server, name, payload(50_000 + n * 1000 + i, n))
                client.quit()
        except BaseException as exc:
            failures.append(exc)

    run_in_threads(session, 4)
    assert failures == []
    assert len(server.files) == 12


@pytest.mark.skipif(not IPV6_ENABLED, reason="IPv6 loopback not available")
def test_ftp_ipv6_epsv(server_factory):
    server = server_factory(address=(HOSTv6, 0), af=socket.AF_INET6)
    with ftplib.FTP(timeout=TIMEOUT) as client:
        client.connect(HOSTv6, server.port)
        assert client.af == socket.AF_INET6
        client.login("user", "pass")
        lines = []
        client.retrlines("LIST", lines.append)
        assert lines == ["foo", "bar", " non-ascii char \xae"]
        stor_retr_roundtrip(client, server, "v6.bin", payload(200_000, 6))
        assert "epsv" in server.commands
        assert "pasv" not in server.commands
        client.quit()
