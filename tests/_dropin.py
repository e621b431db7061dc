"""Helpers shared by the test_dropin_* files (real programs run unchanged on our modules).

- TLS material: a self-signed certificate for "localhost" (127.0.0.1, ::1), made at test time
  with the ``openssl`` command when there is one, else the pair shipped in tests/certs/.
- ``LoopThread``: runs ``asyncore.loop(count=1)`` passes in a thread, bounded in time, the way
  real programs and CPython's own test servers do while the main thread is a blocking client.
- ``run_python``: runs a scenario in a fresh interpreter, for the tests that must import
  ``asyncore``/``asynchat`` by name (after ``asyncore_rs.install()`` when testing ours).
"""

import atexit
import errno
import functools
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from _common import HOSTv6
from _impl import IMPL, asyncore

# blocking clients' socket timeout
TIMEOUT = 10.0
# the longest a loop thread may run before it stops by itself
DEADLINE = 30.0
# the longest a scenario subprocess may run
SUBPROCESS_TIMEOUT = 60.0

CERTS_DIR = Path(__file__).resolve().parent / "certs"


def _ipv6_enabled():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((HOSTv6, 0))
    except OSError:
        return False
    return True


IPV6_ENABLED = _ipv6_enabled()
HAS_AF_UNIX = hasattr(socket, "AF_UNIX")


_cert_lock = threading.Lock()


def cert_files():
    """(certfile, keyfile) of a self-signed certificate for localhost, made once."""
    with _cert_lock:
        return _make_cert_files()


@functools.cache
def _make_cert_files():
    openssl = shutil.which("openssl")
    if openssl:
        tmp = tempfile.mkdtemp(prefix="asyncore-rs-certs-")
        atexit.register(shutil.rmtree, tmp, True)
        cert = os.path.join(tmp, "localhost.crt")
        key = os.path.join(tmp, "localhost.key")
        cmd = [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
            "-keyout",
            key,
            "-out",
            cert,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0:
            return cert, key
    # no usable openssl command: the pair shipped with the tests (valid until 2126)
    return str(CERTS_DIR / "localhost.crt"), str(CERTS_DIR / "localhost.key")


def server_context():
    cert, key = cert_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context():
    """A verifying client context (CERT_REQUIRED, check_hostname) that trusts our cert."""
    cert, _ = cert_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    return ctx


class LoopThread(threading.Thread):
    """Run ``asyncore.loop(timeout, use_poll, map, count=1)`` until stop() or DEADLINE.

    ``lock`` is held around each pass (as CPython's test servers do), so the main thread can
    inspect server state between passes. An exception escaping the loop is re-raised by stop().
    """

    def __init__(self, map=None, use_poll=False, timeout=0.02, deadline=DEADLINE):
        super().__init__(daemon=True)
        self.map = map
        self.use_poll = use_poll
        self.timeout = timeout
        self.deadline = deadline
        self.lock = threading.Lock()
        self.error = None
        self.timed_out = False
        self._stopping = threading.Event()

    def _map(self):
        return asyncore.socket_map if self.map is None else self.map

    def run(self):
        end = time.monotonic() + self.deadline
        try:
            while not self._stopping.is_set():
                if time.monotonic() > end:
                    self.timed_out = True
                    break
                if not self._map():
                    time.sleep(self.timeout)
                    continue
                with self.lock:
                    asyncore.loop(self.timeout, self.use_poll, self.map, count=1)
        except BaseException as exc:  # re-raised in the main thread by stop()
            self.error = exc
        finally:
            asyncore.close_all(self.map, ignore_all=True)

    def stop(self):
        self._stopping.set()
        self.join(DEADLINE)
        assert not self.is_alive(), "loop thread did not stop"
        if self.error is not None:
            raise self.error
        assert not self.timed_out, "loop thread ran into its deadline"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def run_in_threads(target, count, deadline=DEADLINE):
    """Runs ``target(n)`` for n in range(count), each in a thread, and joins them all;
    fails if one is still running after `deadline`."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline)
    assert not any(t.is_alive() for t in threads)


def wait_for(predicate, timeout=DEADLINE, message="condition not reached"):
    """Poll predicate() until it is true (bounded); fail with message otherwise."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(message)
        time.sleep(0.005)


# Put first in every scenario run by run_python: it makes `asyncore`/`asynchat` ours
# (IMPL == "rs") or leaves the stdlib ones (IMPL == "stdlib"), and checks which it got.
PRELUDE = """\
import sys, warnings
IMPL = {impl!r}
if IMPL == "rs":
    import asyncore_rs
    asyncore_rs.install()
warnings.filterwarnings("ignore", category=DeprecationWarning)
import asyncore, asynchat
if IMPL == "rs":
    assert asyncore is asyncore_rs.asyncore, asyncore
    assert asynchat is asyncore_rs.asynchat, asynchat
else:
    assert "asyncore_rs" not in sys.modules
    assert asyncore.__file__.endswith("asyncore.py"), asyncore
"""


def run_python(code, *args, impl=IMPL, timeout=SUBPROCESS_TIMEOUT, python=None, **kwargs):
    """Run PRELUDE + code in a fresh interpreter; return the CompletedProcess."""
    source = PRELUDE.format(impl=impl) + textwrap.dedent(code)
    return run_raw(source, *args, timeout=timeout, python=python, **kwargs)


def run_raw(source, *args, timeout=SUBPROCESS_TIMEOUT, python=None, **kwargs):
    """Run source as is (no prelude) in a fresh interpreter, from a neutral directory."""
    kwargs.setdefault("cwd", tempfile.gettempdir())
    env = dict(os.environ)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    kwargs.setdefault("env", env)
    return subprocess.run(
        [python or sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def check_ok(proc):
    """Assert the scenario exited 0 and printed OK as its last line."""
    detail = "exit %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode,
        proc.stdout[-4000:],
        proc.stderr[-4000:],
    )
    assert proc.returncode == 0, detail
    assert proc.stdout.rstrip().splitlines()[-1:] == ["OK"], detail


# Adapted from CPython 3.11's Lib/test/test_ftplib.py (SSLConnection), Copyright (c) Python
# Software Foundation, licensed under the PSF License Agreement: a dispatcher mixin that wraps
# its socket in TLS in the middle of a session and drives the handshake and the TLS shutdown
# from the loop's read/write events.
class SSLConnection(asyncore.dispatcher):
    """An asyncore.dispatcher mixin supporting TLS/SSL, driven from the loop."""

    _ssl_accepting = False
    _ssl_closing = False

    def secure_connection(self):
        socket = server_context().wrap_socket(
            self.socket,
            suppress_ragged_eofs=False,
            server_side=True,
            do_handshake_on_connect=False,
        )
        self.del_channel()
        self.set_socket(socket)
        self._ssl_accepting = True

    def _do_ssl_handshake(self):
        try:
            self.socket.do_handshake()
        except ssl.SSLError as err:
            if err.args[0] in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                return
            elif err.args[0] == ssl.SSL_ERROR_EOF:
                return self.handle_close()
            # the client refused our certificate
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
            self._ssl_accepting = False

    def _do_ssl_shutdown(self):
        self._ssl_closing = True
        try:
            self.socket = self.socket.unwrap()
        except ssl.SSLError as err:
            if err.args[0] in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                return
        except OSError:
            # SSL_ERROR_SYSCALL from SSL_shutdown(): the peer closed the socket
            pass
        self._ssl_closing = False
        if getattr(self, "_ccc", False) is False:
            super().close()

    def handle_read_event(self):
        if self._ssl_accepting:
            self._do_ssl_handshake()
        elif self._ssl_closing:
            self._do_ssl_shutdown()
        else:
            super().handle_read_event()

    def handle_write_event(self):
        if self._ssl_accepting:
            self._do_ssl_handshake()
        elif self._ssl_closing:
            self._do_ssl_shutdown()
        else:
            super().handle_write_event()

    def send(self, data):
        try:
            return super().send(data)
        except ssl.SSLError as err:
            if err.args[0] in (
                ssl.SSL_ERROR_EOF,
                ssl.SSL_ERROR_ZERO_RETURN,
                ssl.SSL_ERROR_WANT_READ,
                ssl.SSL_ERROR_WANT_WRITE,
            ):
                return 0
            raise

    def recv(self, buffer_size):
        try:
            return super().recv(buffer_size)
        except ssl.SSLError as err:
            if err.args[0] in (ssl.SSL_ERROR_WANT_READ, ssl.SSL_ERROR_WANT_WRITE):
                return b""
            if err.args[0] in (ssl.SSL_ERROR_EOF, ssl.SSL_ERROR_ZERO_RETURN):
                self.handle_close()
                return b""
            raise

    def close(self):
        if isinstance(self.socket, ssl.SSLSocket) and self.socket._sslobj is not None:
            self._do_ssl_shutdown()
        else:
            super().close()
