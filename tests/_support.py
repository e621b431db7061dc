"""Small stand-ins for the parts of CPython's ``test.support`` that the ported suites use.

``test.support`` is not an API (and not installed everywhere), so the ported tests
(test_asyncore_cpython.py, test_asynchat_cpython.py) use these instead. Each helper keeps
the name and the observable behaviour the tests rely on; none of them is copied from CPython.
"""

import contextlib
import functools
import gc
import io
import os
import socket
import sys
import threading
import time
import warnings

import pytest

# socket_helper.HOST / HOSTv6
from _common import HOST, HOSTv6  # noqa: F401  (test.support's names)

# support.SHORT_TIMEOUT: the bound for joins and clean-up waits
SHORT_TIMEOUT = 30.0

# os_helper.TESTFN is a name in the current directory; the ports put it in tmp_path.
TESTFN_NAME = "@test_%s_tmp" % os.getpid()


def _ipv6_enabled():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((HOSTv6, 0))
    except OSError:
        return False
    return True


# socket_helper.IPV6_ENABLED
IPV6_ENABLED = _ipv6_enabled()


def bind_port(sock, host=HOST):
    """socket_helper.bind_port: bind sock to a free port on host and return the port."""
    sock.bind((host, 0))
    return sock.getsockname()[1]


def bind_unix_socket(sock, addr):
    """socket_helper.bind_unix_socket: bind, or skip where AF_UNIX binding is not allowed."""
    try:
        sock.bind(addr)
    except PermissionError:
        sock.close()
        pytest.skip("cannot bind AF_UNIX sockets")


def unlink(filename):
    """os_helper.unlink: remove a file, ignoring a missing one."""
    try:
        os.unlink(filename)
    except (FileNotFoundError, NotADirectoryError):
        pass


def gc_collect():
    """support.gc_collect"""
    gc.collect()
    gc.collect()
    gc.collect()


@contextlib.contextmanager
def captured_output(stream_name):
    """support.captured_output: replace sys.<stream_name> by a StringIO while the block runs."""
    orig_stdout = getattr(sys, stream_name)
    setattr(sys, stream_name, io.StringIO())
    try:
        yield getattr(sys, stream_name)
    finally:
        setattr(sys, stream_name, orig_stdout)


def captured_stdout():
    return captured_output("stdout")


def captured_stderr():
    return captured_output("stderr")


@contextlib.contextmanager
def check_warnings(*filters):
    """warnings_helper.check_warnings: every (message regex, category) filter must match a
    warning raised in the block, and every warning raised must match a filter."""
    import re

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    missing = list(filters)
    for w in caught:
        matched = False
        for msg, cat in filters:
            if re.match(msg, str(w.message), re.I) and issubclass(w.category, cat):
                matched = True
                if (msg, cat) in missing:
                    missing.remove((msg, cat))
        if not matched:
            raise AssertionError("unhandled warning %s" % w)
    if missing:
        raise AssertionError("filter (%r, %s) did not catch any warning" % missing[0])


# threading_helper


def threading_setup():
    return (frozenset(threading.enumerate()),)


def threading_cleanup(*original_values):
    """Wait (bounded) until the threads started since threading_setup() have ended."""
    (original,) = original_values
    deadline = time.monotonic() + SHORT_TIMEOUT
    while True:
        left = [t for t in threading.enumerate() if t not in original]
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError("threads still running after the test: %r" % left)
        time.sleep(0.01)


def reap_threads(func):
    """threading_helper.reap_threads: wait for the threads a test started."""

    @functools.wraps(func)
    def decorator(*args):
        key = threading_setup()
        try:
            return func(*args)
        finally:
            threading_cleanup(*key)

    return decorator


def join_thread(thread, timeout=None):
    """threading_helper.join_thread: join, failing if the thread is still alive."""
    if timeout is None:
        timeout = SHORT_TIMEOUT
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError("failed to join the thread in %.1f seconds" % timeout)
