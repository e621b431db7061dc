"""The two pollers behind the loop (src/poller.rs) against CPython's poll()/poll2().

On Linux the loop waits with epoll by default; ASYNCORE_RS_POLLER=portable gives the
polling crate's portable path (the only one on macOS, the BSDs and Windows), read when
a loop state is created (a map the loop has not polled yet). Each test here runs under
both (the environment is set per test), so the whole file checks the poll(2) flags the
portable path recovers where the crate's `Event` folds them together: POLLHUP without
POLLIN, POLLIN with POLLHUP, POLLPRI, regular files, one event per fd, signals. The whole
suite also runs under the portable poller in scripts/check.sh.

Every semantic test passes on CPython 3.11's asyncore (ASYNCORE_RS_TEST_IMPL=stdlib):
the expectations are poll(2)'s and select()'s, as CPython's poll2()/poll() act on them.
"""

import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time

import pytest
from _impl import IMPL, asyncore

WAIT = 10.0
POSIX = os.name == "posix"
ENV = "ASYNCORE_RS_POLLER"

if IMPL == "rs":
    from asyncore_rs import _core

    POLLERS = ["epoll", "portable"] if sys.platform.startswith("linux") else ["portable"]
else:
    POLLERS = ["stdlib"]


@pytest.fixture(params=POLLERS)
def poller(request, monkeypatch):
    """Every loop state created during the test uses this poller."""
    if IMPL == "rs":
        monkeypatch.setenv(ENV, request.param)
        assert _core._poller_name() == request.param
    return request.param


@pytest.fixture
def chan_map():
    m = {}
    yield m
    asyncore.close_all(m, ignore_all=True)


class Recorder(asyncore.dispatcher):
    """Records the handlers the loop calls; reads what is there."""

    def __init__(self, sock=None, map=None):
        super().__init__(sock, map=map)
        self.log = []
        self.data = b""

    def handle_read(self):
        self.log.append("read")
        self.data += self.recv(4096)

    def handle_write(self):
        self.log.append("write")

    def handle_expt(self):
        self.log.append("expt")

    def handle_close(self):
        self.log.append("close")
        self.close()

    def writable(self):
        return False


def poll_until(m, done, use_poll):
    deadline = time.monotonic() + WAIT
    fn = asyncore.poll2 if use_poll else asyncore.poll
    while not done() and time.monotonic() < deadline:
        fn(0.05, m)


# ---------------------------------------------------------------------------
# choosing the poller
# ---------------------------------------------------------------------------


@pytest.mark.skipif(IMPL != "rs", reason="asyncore-rs's own switch")
def test_poller_name_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    default = "epoll" if sys.platform.startswith("linux") else "portable"
    assert _core._poller_name() == default
    monkeypatch.setenv(ENV, "")
    assert _core._poller_name() == default
    monkeypatch.setenv(ENV, "portable")
    assert _core._poller_name() == "portable"


@pytest.mark.skipif(IMPL != "rs", reason="asyncore-rs's own switch")
def test_unknown_poller_is_an_error_when_a_loop_state_is_made(monkeypatch, chan_map):
    a, b = socket.socketpair()
    b.close()
    Recorder(a, map=chan_map)
    monkeypatch.setenv(ENV, "select")
    with pytest.raises(ValueError, match=ENV):
        _core._poller_name()
    with pytest.raises(ValueError, match=ENV):
        asyncore.loop(timeout=0, map=chan_map, count=1)


# ---------------------------------------------------------------------------
# the flags poll(2) reports, as CPython's poll2()/poll() act on them
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_poll", [True, False])
def test_peer_closed_with_nothing_to_read(poller, chan_map, use_poll):
    # A socket whose peer closed is readable (recv gives b''): poll2() sees
    # POLLIN (with POLLHUP on a pair closed both ways), poll() sees it readable;
    # either way handle_read runs first and its empty recv closes the channel.
    a, b = socket.socketpair()
    ch = Recorder(a, map=chan_map)
    b.close()
    poll_until(chan_map, lambda: "close" in ch.log, use_poll)
    assert ch.log[0] == "read"
    assert "close" in ch.log
    assert "expt" not in ch.log


@pytest.mark.parametrize("use_poll", [True, False])
def test_data_then_close_is_read_before_closing(poller, chan_map, use_poll):
    # POLLIN|POLLHUP: poll2() calls handle_read before handle_close, so the
    # data the peer sent before closing is read.
    a, b = socket.socketpair()
    ch = Recorder(a, map=chan_map)
    b.sendall(b"last words")
    b.close()
    poll_until(chan_map, lambda: "close" in ch.log, use_poll)
    assert ch.data == b"last words"
    assert ch.log[0] == "read"


@pytest.mark.skipif(not POSIX, reason="file_dispatcher is POSIX-only, as in CPython")
def test_pipe_hangup_alone_is_close_not_read_under_poll2(poller, chan_map):
    # A pipe whose writer closed with nothing written: poll(2) reports POLLHUP
    # without POLLIN, and CPython's readwrite() calls handle_close only. (The
    # polling crate reports this as "readable"; the portable path asks poll(2).)
    r, w = os.pipe()
    try:
        ch = Recorder(None, map=chan_map)
        ch.set_socket(asyncore.file_wrapper(r))
        ch.connected = True
        os.close(w)
        w = -1
        poll_until(chan_map, lambda: ch.log, use_poll=True)
        assert ch.log == ["close"]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.skipif(not POSIX, reason="file_dispatcher is POSIX-only, as in CPython")
def test_pipe_hangup_is_readable_under_select(poller, chan_map):
    # select() calls a hung-up pipe readable: poll() calls handle_read (whose
    # empty read closes the channel).
    r, w = os.pipe()
    try:
        ch = Recorder(None, map=chan_map)
        ch.set_socket(asyncore.file_wrapper(r))
        ch.connected = True
        os.close(w)
        w = -1
        poll_until(chan_map, lambda: ch.log, use_poll=False)
        assert ch.log[0] == "read"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.skipif(not POSIX, reason="file_dispatcher is POSIX-only, as in CPython")
@pytest.mark.parametrize("use_poll", [True, False])
def test_regular_file_is_always_ready(poller, chan_map, use_poll):
    # poll(2) and select() call a regular file ready, even at its end (epoll
    # refuses regular files; kqueue would call one at its end not readable).
    with tempfile.TemporaryFile() as f:

        class FileChannel(asyncore.file_dispatcher):
            def __init__(self, fd, map):
                super().__init__(fd, map=map)
                self.log = []

            def handle_read(self):
                self.log.append("read")

            def handle_write(self):
                self.log.append("write")

            def writable(self):
                return True

        ch = FileChannel(f.fileno(), chan_map)
        (asyncore.poll2 if use_poll else asyncore.poll)(0.0, chan_map)
        assert ch.log == ["read", "write"]
        (asyncore.poll2 if use_poll else asyncore.poll)(0.0, chan_map)
        assert ch.log == ["read", "write"] * 2
        ch.close()


@pytest.mark.parametrize("use_poll", [True, False])
def test_one_event_per_channel_and_pass(poller, chan_map, use_poll):
    # Readable and writable at once: one readwrite() per pass (kqueue reports
    # the read and the write filter apart; the portable path merges them).
    a, b = socket.socketpair()
    ch = Recorder(a, map=chan_map)
    ch.writable = lambda: True
    b.sendall(b"x")
    time.sleep(0.05)
    (asyncore.poll2 if use_poll else asyncore.poll)(1.0, chan_map)
    assert sorted(ch.log) == ["read", "write"]
    b.close()


@pytest.mark.parametrize("use_poll", [True, False])
def test_urgent_data_calls_handle_expt(poller, chan_map, use_poll):
    # POLLPRI (select's exceptional set) apart from POLLIN.
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        b = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
    finally:
        srv.close()
    ch = Recorder(a, map=chan_map)
    b.send(b"!", socket.MSG_OOB)
    poll_until(chan_map, lambda: "expt" in ch.log, use_poll)
    assert "expt" in ch.log
    b.close()


def test_timeout_is_waited_in_full(poller, chan_map):
    # Nothing ready: the wait lasts the timeout (not less, as a wait cut in
    # slices for signal handlers could if it returned early).
    a, b = socket.socketpair()
    Recorder(a, map=chan_map)
    t0 = time.monotonic()
    asyncore.poll2(0.3, chan_map)
    assert time.monotonic() - t0 >= 0.29
    b.close()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)
def test_signal_handler_runs_during_a_long_wait(poller, chan_map):
    # PEP 475: a signal during the wait runs its Python handler at once; an
    # exception it raises leaves the loop. (The polling crate retries EINTR
    # itself; the portable path waits in slices on the main thread for this.)
    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    a, b = socket.socketpair()
    Recorder(a, map=chan_map)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(Alarm):
            asyncore.loop(timeout=5.0, use_poll=True, map=chan_map, count=1)
        assert time.monotonic() - t0 < 2.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        b.close()


def test_posix_only_names_follow_cpython():
    # CPython defines file_wrapper and file_dispatcher under `if os.name == 'posix':`.
    assert hasattr(asyncore, "file_dispatcher") == POSIX
    assert hasattr(asyncore, "file_wrapper") == POSIX


def test_select_constants_are_ours():
    # The loop passes poll(2) flags to readwrite() with select's values.
    if hasattr(select, "POLLIN"):
        assert (select.POLLIN, select.POLLPRI, select.POLLOUT) == (1, 2, 4)
        assert (select.POLLERR, select.POLLHUP, select.POLLNVAL) == (8, 16, 32)
