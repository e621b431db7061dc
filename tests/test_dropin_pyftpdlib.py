"""pyftpdlib, a real PyPI package built on asyncore/asynchat, serving ftplib clients.

pyftpdlib 2.x imports the stdlib modules by name (``import asyncore, asynchat`` in
pyftpdlib/ioloop.py and its handlers; 1.5.8-1.5.10 used vendored copies on Python 3 instead).
Its own IOLoop (epoll) drives asyncore.dispatcher / asynchat.async_chat subclasses through
handle_read_event/handle_write_event, readable()/writable(), add_channel/del_channel overrides
and connect() (active mode). The server runs in a fresh interpreter on ours (after
asyncore_rs.install()) or on the stdlib; the clients are ftplib in this process.
"""

import ftplib
import importlib.util
import io
import random
import select
import socket
import subprocess
import sys

import pytest
from _common import HOST
from _dropin import DEADLINE, PRELUDE, TIMEOUT, run_in_threads
from _impl import IMPL

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyftpdlib") is None, reason="pyftpdlib is not installed"
)

SERVER = r"""
import logging, threading, time
import pyftpdlib.ioloop
from pyftpdlib import servers
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler

# pyftpdlib must be running on the modules the prelude chose, not on vendored copies
assert pyftpdlib.ioloop.asyncore is asyncore, pyftpdlib.ioloop.asyncore
assert pyftpdlib.ioloop.asynchat is asynchat, pyftpdlib.ioloop.asynchat
assert issubclass(FTPHandler, asynchat.async_chat)
assert issubclass(servers.FTPServer, asyncore.dispatcher)

root, kind, use_sendfile = sys.argv[1:4]
logging.basicConfig(level=logging.WARNING)

authorizer = DummyAuthorizer()
authorizer.add_user("user", "12345", root, perm="elradfmwMT")
authorizer.add_anonymous(root)


class Handler(FTPHandler):
    pass


Handler.authorizer = authorizer
Handler.use_sendfile = use_sendfile == "1"
server = getattr(servers, kind)(("127.0.0.1", 0), Handler)
print(server.address[1], flush=True)

stop = threading.Event()


def wait_for_stdin_eof():
    sys.stdin.read()
    stop.set()


threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
end = time.monotonic() + 40
while not stop.is_set() and time.monotonic() < end:
    server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
server.close_all()
assert stop.is_set(), "server ran into its deadline"
print("OK")
"""


def blob(size, seed):
    return random.Random(seed).randbytes(size)


@pytest.fixture
def ftpd(tmp_path, request):
    kind, use_sendfile = request.param
    root = tmp_path / "root"
    root.mkdir()
    (root / "readme.txt").write_bytes(b"hello from pyftpdlib\n" * 100)
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE.format(impl=IMPL) + SERVER, str(root), kind, use_sendfile],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(tmp_path),
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
        line = proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            proc.kill()
            out, err = proc.communicate(timeout=DEADLINE)
            pytest.fail("server did not start: %r\n%s\n%s" % (line, out, err))
        yield root, int(line)
        proc.stdin.close()
        proc.wait(timeout=DEADLINE)
        out = proc.stdout.read()
        err = proc.stderr.read()
        detail = "exit %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (proc.returncode, out, err)
        assert proc.returncode == 0, detail
        assert out.splitlines()[-1:] == ["OK"], detail
        # pyftpdlib logs handler errors (handle_error) with their traceback
        assert "Traceback" not in err, detail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if not stream.closed:
                stream.close()


def connect(port, user="user", passwd="12345"):
    client = ftplib.FTP(timeout=TIMEOUT)
    assert client.connect(HOST, port).startswith("220")
    assert client.login(user, passwd).startswith("230")
    return client


def stor_retr(client, root, name, data, subdir=""):
    resp = client.storbinary("STOR " + name, io.BytesIO(data), blocksize=16384)
    assert resp.startswith("226"), resp
    assert (root / subdir / name).read_bytes() == data
    assert client.size(name) == len(data)
    received = bytearray()
    resp = client.retrbinary("RETR " + name, received.extend, blocksize=16384)
    assert resp.startswith("226"), resp
    assert bytes(received) == data


SERVERS = pytest.mark.parametrize(
    "ftpd",
    [("FTPServer", "0"), ("FTPServer", "1"), ("ThreadedFTPServer", "0")],
    ids=["async", "async-sendfile", "threaded"],
    indirect=True,
)


@SERVERS
def test_pyftpdlib_session(ftpd):
    root, port = ftpd
    with connect(port) as client:
        assert "pyftpdlib" in client.getwelcome()
        assert client.pwd() == "/"
        assert client.mkd("sub") == "/sub"
        client.cwd("sub")
        data = blob(400_000, 1)
        stor_retr(client, root, "big.bin", data, subdir="sub")
        # resume a download from an offset (REST)
        received = bytearray()
        client.retrbinary("RETR big.bin", received.extend, rest=300_000)
        assert bytes(received) == data[300_000:]
        # append (APPE)
        client.storbinary("APPE big.bin", io.BytesIO(b"tail"))
        assert (root / "sub" / "big.bin").read_bytes() == data + b"tail"
        client.cwd("/")
        lines = []
        client.retrlines("LIST", lines.append)
        assert any(ln.endswith(" readme.txt") for ln in lines), lines
        assert any(ln.endswith(" sub") and ln.startswith("d") for ln in lines), lines
        assert sorted(client.nlst()) == ["readme.txt", "sub"]
        assert [name for name, facts in client.mlsd("sub")] == ["big.bin"]
        client.rename("sub/big.bin", "sub/moved.bin")
        assert not (root / "sub" / "big.bin").exists()
        client.delete("sub/moved.bin")
        assert client.rmd("sub").startswith("250")
        with pytest.raises(ftplib.error_perm, match="550"):
            client.size("nope.bin")
        assert client.quit().startswith("221")


@SERVERS
def test_pyftpdlib_active_mode(ftpd):
    """PORT transfers: pyftpdlib connects back to the client with a connecting dispatcher."""
    root, port = ftpd
    with connect(port) as client:
        client.set_pasv(False)
        data = blob(250_000, 2)
        stor_retr(client, root, "active.bin", data)
        lines = []
        client.retrlines("LIST", lines.append)
        assert any(ln.endswith(" active.bin") for ln in lines), lines
        client.quit()


@SERVERS
def test_pyftpdlib_anonymous_is_read_only(ftpd):
    root, port = ftpd
    with connect(port, "anonymous", "guest@example.org") as client:
        received = bytearray()
        client.retrbinary("RETR readme.txt", received.extend)
        assert bytes(received) == (root / "readme.txt").read_bytes()
        with pytest.raises(ftplib.error_perm, match="550"):
            client.storbinary("STOR nope.bin", io.BytesIO(b"x"))
        assert not (root / "nope.bin").exists()
        client.quit()


@SERVERS
def test_pyftpdlib_several_clients_at_once(ftpd):
    root, port = ftpd
    failures = []

    def session(n):
        try:
            with connect(port) as client:
                for i in range(2):
                    stor_retr(client, root, "c%d-%d.bin" % (n, i), blob(200_000 + n, n * 10 + i))
                client.quit()
        except BaseException as exc:
            failures.append(exc)

    run_in_threads(session, 4)
    assert failures == []
    assert len(list(root.glob("c*.bin"))) == 8


@SERVERS
def test_pyftpdlib_survives_a_client_vanishing(ftpd):
    """A client that drops the connection in the middle of an upload: the server cleans up
    and serves the next client."""
    root, port = ftpd
    client = connect(port)
    conn = client.transfercmd("STOR partial.bin")
    conn.sendall(blob(100_000, 3))
    conn.close()
    client.sock.close()
    client.file.close()
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    raw.close()
    with connect(port) as client:
        stor_retr(client, root, "after.bin", blob(50_000, 4))
        client.quit()
