"""Bad input to every public function and method: the same outcome as CPython, never a crash.

Each case runs twice: on the modules under test and on an oracle, CPython 3.11's own
asyncore.py / asynchat.py loaded from the stdlib directory under private names (or, on a Python
without them, the vendored copies in tests/_reference). The outcomes must match: the same
exception type (and errno for OSError; and the exact args where CPython's own code builds the
exception), or no exception and the same returned value. Calls that would block in CPython
(poll(None) with nothing ready, a huge timeout with nothing ready) are left out: every loop
call here has count=1 and either fails before waiting or has a readable fd.
"""

import array
import errno
import importlib.util
import os
import select
import socket
import sys
import sysconfig
import warnings

import pytest
from _impl import asynchat, asyncore


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_oracle():
    stdlib = sysconfig.get_paths()["stdlib"]
    core_path = os.path.join(stdlib, "asyncore.py")
    chat_path = os.path.join(stdlib, "asynchat.py")
    if not (os.path.exists(core_path) and os.path.exists(chat_path)):
        from _reference import _ref_asynchat, _ref_asyncore

        return _ref_asyncore, _ref_asynchat
    missing = object()
    saved = sys.modules.get("asyncore", missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        core = _load("_oracle_asyncore", core_path)
        sys.modules["asyncore"] = core  # asynchat.py says "import asyncore"
        try:
            chat = _load("_oracle_asynchat", chat_path)
        finally:
            if saved is missing:
                del sys.modules["asyncore"]
            else:
                sys.modules["asyncore"] = saved
    assert chat.asyncore is core
    return core, chat


ORACLE = load_oracle()


class Env:
    """What one run of a case gets: the two modules, helper classes built on them, and
    bookkeeping so that every socket and channel made by the case is closed afterwards."""

    _classes = {}

    def __init__(self, core, chat, tmp_path):
        self.aio = core
        self.ach = chat
        self.tmp = tmp_path
        self.socks = []
        self.maps = []
        (
            self.Rec,
            self.Idle,
            self.Chat,
        ) = self._make_classes(core, chat)

    @classmethod
    def _make_classes(cls, core, chat):
        key = (id(core), id(chat))
        if key not in cls._classes:

            class Rec(core.dispatcher):
                def __init__(self, *args, **kwargs):
                    self.events = []
                    core.dispatcher.__init__(self, *args, **kwargs)

                def readable(self):
                    self.events.append("readable")
                    return True

                def writable(self):
                    return False

                def handle_read(self):
                    self.events.append(("read", self.recv(100)))

                def handle_close(self):
                    self.events.append("close")
                    self.close()

                def handle_expt(self):
                    self.events.append("expt")

                def handle_error(self):
                    self.events.append(("error", sys.exc_info()[0].__name__))

            class Idle(core.dispatcher):
                def readable(self):
                    return False

                def writable(self):
                    return False

            class Chat(chat.async_chat):
                def __init__(self, *args, **kwargs):
                    self.calls = []
                    chat.async_chat.__init__(self, *args, **kwargs)

                def collect_incoming_data(self, data):
                    self.calls.append(("collect", bytes(data)))

                def found_terminator(self):
                    self.calls.append(("found", self.get_terminator()))

            cls._classes[key] = (Rec, Idle, Chat)
        return cls._classes[key]

    def sock(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        s = socket.socket(family, type)
        self.socks.append(s)
        return s

    def pair(self):
        a, b = socket.socketpair()
        self.socks += [a, b]
        return a, b

    def map(self):
        m = {}
        self.maps.append(m)
        return m

    def ready(self):
        """A map holding one Rec whose socket has a byte waiting: no call here can block."""
        a, b = self.pair()
        b.send(b"x")
        assert select.select([a], [], [], 10)[0]
        m = self.map()
        return m, self.Rec(a, map=m)

    def idle(self):
        """A map holding one channel that is neither readable nor writable (poll() sleeps)."""
        a, _ = self.pair()
        m = self.map()
        self.Idle(a, map=m)
        return m

    def chat_with_input(self, data, terminator, use_encoding=0):
        a, b = self.pair()
        ch = self.Chat(a, map=self.map())
        ch.use_encoding = use_encoding
        ch.terminator = terminator
        b.sendall(data)
        assert select.select([a], [], [], 10)[0]
        return ch

    def closed_fd_rec(self):
        """A Rec in a map under the number of an fd that is now closed."""
        a, _ = self.pair()
        m = self.map()
        d = self.Rec(a, map=m)
        a.close()
        return m, d

    def close(self):
        for m in self.maps:
            for obj in list(m.values()):
                try:
                    obj.close()
                except Exception:
                    pass
            m.clear()
        for s in self.socks:
            s.close()


class Producer:
    def __init__(self, chunks):
        self.chunks = list(chunks)

    def more(self):
        return self.chunks.pop(0) if self.chunks else b""


class FakeSock:
    """Socket stand-in whose getpeername() fails with a given errno."""

    def __init__(self, err):
        self.err = err

    def setblocking(self, flag):
        pass

    def fileno(self):
        return 987654

    def getpeername(self):
        raise OSError(self.err, os.strerror(self.err))


class Closer:
    def __init__(self, exc):
        self.exc = exc

    def close(self):
        raise self.exc


def _events_after(call, d):
    call()
    return d.events


def _catch(fn, *state):
    """Runs fn(); returns (exception type name or None, *state()) so state after an error
    is compared too."""
    try:
        fn()
        name = None
    except Exception as e:
        name = type(e).__name__
    return (name,) + tuple(s() for s in state)


def _unconnected(e):
    d = e.Rec(map=e.map())
    d.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    return d


def _chat(e, sock=None):
    return e.Chat(sock, map=e.map())


def _chat_read(e, data, terminator, use_encoding=0):
    ch = e.chat_with_input(data, terminator, use_encoding)
    ch.handle_read()
    return ch.calls, ch.get_terminator(), bytes(ch.ac_in_buffer)


def _unix_connect(e, listen):
    path = str(e.tmp / ("s%d" % len(e.socks)))
    if listen is not None:
        srv = e.sock(socket.AF_UNIX)
        srv.bind(path)
        if listen:
            srv.listen(1)
    d = e.Rec(map=e.map())
    d.create_socket(socket.AF_UNIX, socket.SOCK_STREAM)
    d.connect(path)
    return d.connecting


def _accept(e, kind):
    d = e.Rec(map=e.map())
    if kind == "tcp":
        d.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    elif kind == "udp":
        d.create_socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif kind == "listening":
        d.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        d.bind(("127.0.0.1", 0))
        d.listen(5)
    return d.accept()


def _push(e, data):
    ch = _chat(e)
    ch.push(data)
    return [None if x is None else len(x) for x in ch.producer_fifo]


NAN = float("nan")
INF = float("inf")

# (id, case, exact_args): case(env) -> value; exact_args compares the exception's args too
CASES = [
    # --- asyncore.loop -------------------------------------------------------------
    ("loop_timeout_str", lambda e: e.aio.loop(timeout="x", map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_str_poll",
        lambda e: e.aio.loop(timeout="x", use_poll=True, map=e.ready()[0], count=1),
        0,
    ),
    ("loop_timeout_negative", lambda e: e.aio.loop(timeout=-1, map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_negative_poll_ready",
        lambda e: (lambda m, d: (e.aio.loop(-1, True, m, 1), d.events)[1])(*e.ready()),
        0,
    ),
    ("loop_timeout_nan", lambda e: e.aio.loop(timeout=NAN, map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_nan_poll",
        lambda e: e.aio.loop(timeout=NAN, use_poll=True, map=e.ready()[0], count=1),
        0,
    ),
    ("loop_timeout_inf_ready", lambda e: e.aio.loop(timeout=INF, map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_inf_poll_ready",
        lambda e: e.aio.loop(timeout=INF, use_poll=True, map=e.ready()[0], count=1),
        0,
    ),
    ("loop_timeout_huge_ready", lambda e: e.aio.loop(timeout=1e300, map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_huge_poll_ready",
        lambda e: e.aio.loop(timeout=1e300, use_poll=True, map=e.ready()[0], count=1),
        0,
    ),
    ("loop_timeout_none_ready", lambda e: e.aio.loop(timeout=None, map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_none_poll_ready",
        lambda e: e.aio.loop(timeout=None, use_poll=True, map=e.ready()[0], count=1),
        0,
    ),
    ("loop_timeout_list", lambda e: e.aio.loop(timeout=[], map=e.ready()[0], count=1), 0),
    (
        "loop_timeout_list_poll",
        lambda e: e.aio.loop(timeout=[], use_poll=True, map=e.ready()[0], count=1),
        0,
    ),
    ("loop_timeout_bytes", lambda e: e.aio.loop(timeout=b"1", map=e.ready()[0], count=1), 0),
    ("loop_count_str", lambda e: e.aio.loop(count="x", map=e.ready()[0]), 0),
    ("loop_count_none_type", lambda e: e.aio.loop(count=[], map=e.ready()[0]), 0),
    (
        "loop_count_float",
        lambda e: (lambda m, d: (e.aio.loop(timeout=0, count=1.5, map=m), d.events)[1])(*e.ready()),
        0,
    ),
    (
        "loop_count_zero",
        lambda e: (lambda m, d: (e.aio.loop(count=0, map=m), d.events)[1])(*e.ready()),
        0,
    ),
    (
        "loop_count_negative",
        lambda e: (lambda m, d: (e.aio.loop(count=-5, map=m), d.events)[1])(*e.ready()),
        0,
    ),
    (
        "loop_use_poll_str",
        lambda e: (lambda m, d: (e.aio.loop(0, "yes", m, 1), d.events)[1])(*e.ready()),
        0,
    ),
    ("loop_map_int", lambda e: e.aio.loop(map=123, count=1), 0),
    ("loop_map_int_poll", lambda e: e.aio.loop(map=123, use_poll=True, count=1), 0),
    ("loop_map_list", lambda e: e.aio.loop(map=[1], count=1), 0),
    ("loop_map_zero", lambda e: e.aio.loop(map=0), 0),
    ("loop_map_empty_dict", lambda e: e.aio.loop(map={}), 0),
    ("loop_bad_kwarg", lambda e: e.aio.loop(bogus=1, map={}), 0),
    ("loop_too_many_args", lambda e: e.aio.loop(0, False, {}, 1, 2), 0),
    # --- maps with odd keys / values ---------------------------------------------------
    (
        "map_str_key",
        lambda e: e.aio.loop(timeout=0, map={"a": e.ready()[1]}, count=1),
        0,
    ),
    (
        "map_str_key_poll",
        lambda e: e.aio.loop(timeout=0, use_poll=True, map={"a": e.ready()[1]}, count=1),
        0,
    ),
    ("map_float_key", lambda e: e.aio.loop(timeout=0, map={3.0: e.ready()[1]}, count=1), 0),
    (
        "map_float_key_poll",
        lambda e: e.aio.loop(timeout=0, use_poll=True, map={3.0: e.ready()[1]}, count=1),
        0,
    ),
    ("map_negative_key", lambda e: e.aio.loop(timeout=0, map={-1: e.ready()[1]}, count=1), 0),
    (
        "map_negative_key_poll",
        lambda e: e.aio.loop(timeout=0, use_poll=True, map={-1: e.ready()[1]}, count=1),
        0,
    ),
    ("map_huge_key", lambda e: e.aio.loop(timeout=0, map={2**40: e.ready()[1]}, count=1), 0),
    (
        "map_huge_key_poll",
        lambda e: e.aio.loop(timeout=0, use_poll=True, map={2**40: e.ready()[1]}, count=1),
        0,
    ),
    ("map_none_key", lambda e: e.aio.loop(timeout=0, map={None: e.ready()[1]}, count=1), 0),
    (
        "map_socket_key",
        lambda e: (lambda d: (e.aio.loop(0, False, {d.socket: d}, 1), d.events)[1])(e.ready()[1]),
        0,
    ),
    (
        "map_socket_key_poll",
        lambda e: (lambda d: (e.aio.loop(0, True, {d.socket: d}, 1), d.events)[1])(e.ready()[1]),
        0,
    ),
    ("map_int_value", lambda e: e.aio.loop(timeout=0, map={e.pair()[0].fileno(): 123}, count=1), 0),
    (
        "map_int_value_poll",
        lambda e: e.aio.loop(timeout=0, use_poll=True, map={e.pair()[0].fileno(): 1}, count=1),
        0,
    ),
    (
        "map_closed_fd_poll",
        lambda e: (lambda m, d: (e.aio.loop(0, True, m, 1), d.events)[1])(*e.closed_fd_rec()),
        0,
    ),
    # --- poll / poll2 / poll3 ------------------------------------------------------------
    ("poll_negative_ready", lambda e: e.aio.poll(-1, e.ready()[0]), 0),
    ("poll_negative_empty", lambda e: e.aio.poll(-1, {}), 0),
    ("poll_negative_idle", lambda e: e.aio.poll(-1, e.idle()), 0),
    ("poll_str_idle", lambda e: e.aio.poll("x", e.idle()), 0),
    ("poll_nan_idle", lambda e: e.aio.poll(NAN, e.idle()), 0),
    ("poll_huge_idle", lambda e: e.aio.poll(1e300, e.idle()), 0),
    ("poll_zero_idle", lambda e: e.aio.poll(0, e.idle()), 0),
    ("poll_none_empty", lambda e: e.aio.poll(None, {}), 0),
    ("poll_str_empty", lambda e: e.aio.poll("x", {}), 0),
    ("poll_map_int", lambda e: e.aio.poll(0, 123), 0),
    ("poll2_str_empty", lambda e: e.aio.poll2("x", {}), 0),
    ("poll2_none_empty", lambda e: e.aio.poll2(None, {}), 0),
    ("poll2_list_empty", lambda e: e.aio.poll2([], {}), 0),
    ("poll2_object_empty", lambda e: e.aio.poll2(object(), {}), 0),
    ("poll2_nan_empty", lambda e: e.aio.poll2(NAN, {}), 0),
    ("poll2_inf_empty", lambda e: e.aio.poll2(INF, {}), 0),
    ("poll2_huge_empty", lambda e: e.aio.poll2(1e300, {}), 0),
    ("poll2_huge_ready", lambda e: e.aio.poll2(1e300, e.ready()[0]), 0),
    ("poll2_negative_ready", lambda e: e.aio.poll2(-1, e.ready()[0]), 0),
    ("poll2_bool_ready", lambda e: e.aio.poll2(True, e.ready()[0]), 0),
    ("poll2_str_digits_ready", lambda e: e.aio.poll2("0", e.ready()[0]), 0),
    ("poll2_map_int", lambda e: e.aio.poll2(0, 123), 0),
    ("poll3_str_empty", lambda e: e.aio.poll3("x", {}), 0),
    # --- read / write / _exception / readwrite --------------------------------------------
    ("read_none", lambda e: e.aio.read(None), 0),
    ("write_int", lambda e: e.aio.write(123), 0),
    ("exception_none", lambda e: e.aio._exception(None), 0),
    ("readwrite_none", lambda e: e.aio.readwrite(None, select.POLLIN), 0),
    (
        "readwrite_str_flags",
        lambda e: (lambda d: (e.aio.readwrite(d, "x"), d.events)[1])(e.ready()[1]),
        0,
    ),
    (
        "readwrite_zero_flags",
        lambda e: (lambda d: (e.aio.readwrite(d, 0), d.events)[1])(e.ready()[1]),
        0,
    ),
    (
        "readwrite_nval",
        lambda e: (lambda d: (e.aio.readwrite(d, select.POLLNVAL), d.events)[1])(e.ready()[1]),
        0,
    ),
    (
        "readwrite_all_flags",
        lambda e: (lambda d: (e.aio.readwrite(d, 0xFFFF), d.events)[1])(e.ready()[1]),
        0,
    ),
    # --- compact_traceback / close_all -------------------------------------------------------
    ("compact_traceback_outside_except", lambda e: e.aio.compact_traceback(), 1),
    ("close_all_int", lambda e: e.aio.close_all(map=123), 0),
    ("close_all_list", lambda e: e.aio.close_all(map=[]), 0),
    ("close_all_object", lambda e: e.aio.close_all(map={1: object()}), 0),
    (
        "close_all_object_ignore_all",
        lambda e: (lambda m: (e.aio.close_all(map=m, ignore_all=True), m)[1])({1: object()}),
        0,
    ),
    (
        "close_all_ebadf",
        lambda e: (lambda m: (e.aio.close_all(map=m), m)[1])(
            {1: Closer(OSError(errno.EBADF, "x"))}
        ),
        0,
    ),
    ("close_all_eperm", lambda e: e.aio.close_all(map={1: Closer(OSError(errno.EPERM, "x"))}), 0),
    (
        "close_all_eperm_ignore_all",
        lambda e: e.aio.close_all(map={1: Closer(OSError(errno.EPERM, "x"))}, ignore_all=True),
        0,
    ),
    # --- dispatcher construction --------------------------------------------------------------
    ("dispatcher_sock_object", lambda e: e.aio.dispatcher(sock=object(), map=e.map()), 0),
    ("dispatcher_sock_int", lambda e: e.aio.dispatcher(sock=123, map=e.map()), 0),
    ("dispatcher_sock_str", lambda e: e.aio.dispatcher(sock="s", map=e.map()), 0),
    (
        "dispatcher_sock_zero",
        lambda e: e.aio.dispatcher(sock=0, map=e.map()).socket,
        0,
    ),
    (
        "dispatcher_sock_closed",
        lambda e: (lambda s: (s.close(), e.aio.dispatcher(sock=s, map=e.map())))(e.sock()),
        0,
    ),
    ("dispatcher_too_many_args", lambda e: e.aio.dispatcher(None, {}, 3), 0),
    ("dispatcher_bad_kwarg", lambda e: e.aio.dispatcher(foo=1), 0),
    ("dispatcher_map_int", lambda e: e.aio.dispatcher(sock=e.pair()[0], map=123), 0),
    (
        "dispatcher_unconnected_tcp",
        lambda e: (
            lambda m: (lambda d: (d.connected, d.addr, len(m)))(e.aio.dispatcher(e.sock(), m))
        )(e.map()),
        0,
    ),
    (
        "dispatcher_unconnected_udp",
        lambda e: (lambda d: (d.connected, d.addr))(
            e.aio.dispatcher(e.sock(type=socket.SOCK_DGRAM), e.map())
        ),
        0,
    ),
    (
        "dispatcher_getpeername_ebadf",
        lambda e: (
            lambda m: _catch(lambda: e.aio.dispatcher(FakeSock(errno.EBADF), m), lambda: dict(m))
        )(e.map()),
        0,
    ),
    (
        "dispatcher_getpeername_einval",
        lambda e: (
            lambda m: (lambda d: (d.connected, len(m)))(e.aio.dispatcher(FakeSock(errno.EINVAL), m))
        )(e.map()),
        0,
    ),
    # --- dispatcher methods without a socket ------------------------------------------------
    ("connect_no_socket", lambda e: e.Rec(map=e.map()).connect(("127.0.0.1", 1)), 0),
    (
        "connect_no_socket_state",
        lambda e: (lambda d: _catch(lambda: d.connect(("127.0.0.1", 1)), lambda: d.connecting))(
            e.Rec(map=e.map())
        ),
        0,
    ),
    ("bind_no_socket", lambda e: e.Rec(map=e.map()).bind(("127.0.0.1", 0)), 0),
    (
        "listen_no_socket_state",
        lambda e: (lambda d: _catch(lambda: d.listen(5), lambda: d.accepting))(e.Rec(map=e.map())),
        0,
    ),
    ("accept_no_socket", lambda e: e.Rec(map=e.map()).accept(), 0),
    ("recv_no_socket", lambda e: e.Rec(map=e.map()).recv(10), 0),
    ("send_no_socket", lambda e: e.Rec(map=e.map()).send(b"x"), 0),
    ("set_reuse_addr_no_socket", lambda e: e.Rec(map=e.map()).set_reuse_addr(), 0),
    ("handle_expt_event_no_socket", lambda e: e.Rec(map=e.map()).handle_expt_event(), 0),
    ("handle_connect_event_no_socket", lambda e: e.Rec(map=e.map()).handle_connect_event(), 0),
    ("handle_accept_no_socket", lambda e: e.Rec(map=e.map()).handle_accept(), 0),
    (
        "handle_read_event_no_socket",
        lambda e: (lambda d: (d.handle_read_event(), d.events)[1])(e.Rec(map=e.map())),
        0,
    ),
    (
        "handle_read_event_no_socket_base",
        lambda e: e.aio.dispatcher(map=e.map()).handle_read_event(),
        0,
    ),
    (
        "handle_write_event_no_socket",
        lambda e: e.aio.dispatcher(map=e.map()).handle_write_event(),
        0,
    ),
    (
        "close_twice",
        lambda e: (lambda d: (d.close(), d.close(), d.socket is None)[2])(e.Rec(map=e.map())),
        0,
    ),
    (
        "close_twice_with_socket",
        lambda e: (lambda m: (lambda d: (d.close(), d.close(), dict(m))[2])(e.Rec(e.pair()[0], m)))(
            e.map()
        ),
        0,
    ),
    (
        "del_channel_twice",
        lambda e: (
            lambda m: (lambda d: (d.del_channel(), d.del_channel(), dict(m))[2])(
                e.Rec(e.pair()[0], m)
            )
        )(e.map()),
        0,
    ),
    ("del_channel_map_int", lambda e: e.Rec(map=e.map()).del_channel(map=123), 0),
    ("add_channel_map_int", lambda e: e.Rec(map=e.map()).add_channel(map=123), 0),
    (
        "add_channel_no_socket",
        lambda e: (lambda m: (e.Rec(map=m).add_channel(), list(m))[1])(e.map()),
        0,
    ),
    (
        "set_socket_object",
        lambda e: (lambda d, o: _catch(lambda: d.set_socket(o), lambda: d.socket is o))(
            e.Rec(map=e.map()), object()
        ),
        0,
    ),
    ("set_socket_map_int", lambda e: e.Rec(map=e.map()).set_socket(e.pair()[0], 123), 0),
    ("create_socket_str_family", lambda e: e.Rec(map=e.map()).create_socket("x"), 0),
    ("create_socket_bad_family", lambda e: e.Rec(map=e.map()).create_socket(99999), 0),
    (
        "create_socket_bad_type",
        lambda e: e.Rec(map=e.map()).create_socket(socket.AF_INET, 99999),
        0,
    ),
    ("log_info_unhashable_type", lambda e: e.aio.dispatcher(map=e.map()).log_info("m", []), 0),
    ("log_int", lambda e: e.aio.dispatcher(map=e.map()).log(123), 0),
    ("missing_attribute", lambda e: e.aio.dispatcher(map=e.map()).no_such_attribute, 0),
    # --- dispatcher methods with odd arguments --------------------------------------------------
    ("connect_short_tuple", lambda e: _unconnected(e).connect(("127.0.0.1",)), 0),
    ("connect_long_tuple", lambda e: _unconnected(e).connect(("127.0.0.1", 1, 2)), 0),
    ("connect_str_port", lambda e: _unconnected(e).connect(("127.0.0.1", "x")), 0),
    ("connect_port_too_big", lambda e: _unconnected(e).connect(("127.0.0.1", 70000)), 0),
    ("connect_port_negative", lambda e: _unconnected(e).connect(("127.0.0.1", -1)), 0),
    ("connect_int_address", lambda e: _unconnected(e).connect(123), 0),
    ("connect_none_address", lambda e: _unconnected(e).connect(None), 0),
    ("connect_int_host", lambda e: _unconnected(e).connect((1, 1)), 0),
    ("connect_unix_missing_path", lambda e: _unix_connect(e, None), 1),
    ("connect_unix_not_listening", lambda e: _unix_connect(e, False), 1),
    ("connect_unix_listening", lambda e: _unix_connect(e, True), 0),
    ("bind_port_negative", lambda e: _unconnected(e).bind(("127.0.0.1", -1)), 0),
    ("bind_port_too_big", lambda e: _unconnected(e).bind(("127.0.0.1", 70000)), 0),
    ("bind_str", lambda e: _unconnected(e).bind("x"), 0),
    (
        "bind_twice",
        lambda e: (lambda d: (d.bind(("127.0.0.1", 0)), d.bind(("127.0.0.1", 0))))(_unconnected(e)),
        0,
    ),
    (
        "listen_str_state",
        lambda e: (lambda d: _catch(lambda: d.listen("x"), lambda: d.accepting))(_unconnected(e)),
        0,
    ),
    ("accept_not_listening", lambda e: _accept(e, "tcp"), 0),
    ("accept_udp", lambda e: _accept(e, "udp"), 0),
    ("accept_nothing_pending", lambda e: _accept(e, "listening"), 0),
    ("recv_str", lambda e: e.Rec(e.pair()[0], map=e.map()).recv("x"), 0),
    ("recv_negative", lambda e: e.Rec(e.pair()[0], map=e.map()).recv(-1), 0),
    (
        "recv_zero",
        lambda e: (lambda d: (d.recv(0), d.events))(e.Rec(e.pair()[0], map=e.map())),
        0,
    ),
    (
        "recv_unconnected",
        lambda e: (lambda d: (d.recv(10), d.events))(_unconnected(e)),
        0,
    ),
    ("recv_would_block", lambda e: e.Rec(e.pair()[0], map=e.map()).recv(10), 0),
    ("send_str", lambda e: e.Rec(e.pair()[0], map=e.map()).send("s"), 0),
    ("send_none", lambda e: e.Rec(e.pair()[0], map=e.map()).send(None), 0),
    ("send_int", lambda e: e.Rec(e.pair()[0], map=e.map()).send(1), 0),
    ("send_bytearray", lambda e: e.Rec(e.pair()[0], map=e.map()).send(bytearray(b"ab")), 0),
    ("send_memoryview", lambda e: e.Rec(e.pair()[0], map=e.map()).send(memoryview(b"abc")), 0),
    (
        "send_unconnected",
        lambda e: (lambda d: (d.send(b"x"), d.events))(_unconnected(e)),
        0,
    ),
    # --- dispatcher_with_send / file_wrapper / file_dispatcher ------------------------------------
    ("dws_send_str", lambda e: e.aio.dispatcher_with_send(map=e.map()).send("s"), 0),
    ("dws_send_no_socket", lambda e: e.aio.dispatcher_with_send(map=e.map()).send(b"x"), 0),
    (
        "dws_initiate_send_no_socket",
        lambda e: e.aio.dispatcher_with_send(map=e.map()).initiate_send(),
        0,
    ),
    (
        "dws_writable_fresh",
        lambda e: bool(e.aio.dispatcher_with_send(map=e.map()).writable()),
        0,
    ),
    ("file_wrapper_negative", lambda e: e.aio.file_wrapper(-1), 0),
    ("file_wrapper_str", lambda e: e.aio.file_wrapper("x"), 0),
    ("file_dispatcher_str", lambda e: e.aio.file_dispatcher("x", map=e.map()), 0),
    ("file_dispatcher_negative", lambda e: e.aio.file_dispatcher(-1, map=e.map()), 0),
    (
        "file_wrapper_getsockopt_other",
        lambda e: (
            lambda w: _catch(lambda: w.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE), w.close)
        )(e.aio.file_wrapper(e.pair()[0].fileno())),
        0,
    ),
    (
        "file_wrapper_close_twice",
        lambda e: (lambda w: (w.close(), w.close(), w.fileno())[2])(
            e.aio.file_wrapper(e.pair()[0].fileno())
        ),
        0,
    ),
    # --- async_chat ------------------------------------------------------------------------
    ("chat_sock_object", lambda e: e.ach.async_chat(sock=object(), map=e.map()), 0),
    ("chat_map_int", lambda e: e.ach.async_chat(e.pair()[0], map=123), 0),
    ("chat_too_many_args", lambda e: e.ach.async_chat(None, {}, 3), 0),
    ("push_int", lambda e: _push(e, 1), 1),
    ("push_str", lambda e: _push(e, "s"), 1),
    ("push_none", lambda e: _push(e, None), 1),
    ("push_array", lambda e: _push(e, array.array("b", [1, 2])), 1),
    ("push_list", lambda e: _push(e, [1]), 1),
    ("push_empty", lambda e: _push(e, b""), 0),
    ("push_memoryview", lambda e: _push(e, memoryview(b"ab")), 0),
    ("push_bytearray", lambda e: _push(e, bytearray(b"ab")), 0),
    ("push_big", lambda e: _push(e, b"x" * 200_000), 0),
    ("push_no_args", lambda e: _chat(e).push(), 0),
    (
        "push_with_producer_odd",
        lambda e: (
            lambda c: (c.push_with_producer(None), c.push_with_producer(123), len(c.producer_fifo))[
                2
            ]
        )(_chat(e)),
        0,
    ),
    ("set_terminator_negative", lambda e: _chat(e).set_terminator(-1), 1),
    ("set_terminator_huge_negative", lambda e: _chat(e).set_terminator(-(2**100)), 1),
    (
        "set_terminator_values",
        lambda e: [
            (lambda c: (c.set_terminator(t), c.get_terminator())[1])(_chat(e))
            for t in (0, "x", True, 1.5, -1.5, None, b"", 2**70, [1])
        ],
        0,
    ),
    (
        "set_terminator_str_use_encoding",
        lambda e: (
            lambda c: (setattr(c, "use_encoding", 1), c.set_terminator("\xe9"), c.get_terminator())[
                2
            ]
        )(_chat(e)),
        0,
    ),
    ("get_terminator_fresh", lambda e: _chat(e).get_terminator(), 0),
    ("chat_found_terminator_base", lambda e: e.ach.async_chat(map=e.map()).found_terminator(), 0),
    (
        "chat_collect_incoming_data_base",
        lambda e: e.ach.async_chat(map=e.map()).collect_incoming_data(b"x"),
        0,
    ),
    (
        "chat_get_data",
        lambda e: (
            lambda c: (
                c._collect_incoming_data(b"a"),
                c._collect_incoming_data(b"b"),
                c._get_data(),
                c._get_data(),
            )[2:]
        )(_chat(e)),
        0,
    ),
    (
        "chat_get_data_str",
        lambda e: (lambda c: (c._collect_incoming_data("a"), c._get_data()))(_chat(e)),
        0,
    ),
    ("chat_handle_read_no_socket", lambda e: _chat(e).handle_read(), 0),
    ("chat_handle_write_no_socket", lambda e: _chat(e).handle_write(), 0),
    (
        "chat_discard_buffers_fresh",
        lambda e: (lambda c: (c.discard_buffers(), len(c.producer_fifo), c.ac_in_buffer)[1:])(
            _chat(e)
        ),
        0,
    ),
    (
        "chat_close_when_done_fresh",
        lambda e: (lambda c: (c.close_when_done(), list(c.producer_fifo))[1])(_chat(e)),
        0,
    ),
    # handle_read with odd terminators set directly (set_terminator does not check them)
    ("read_terminator_str", lambda e: _chat_read(e, b"abc", "x"), 0),
    ("read_terminator_list", lambda e: _chat_read(e, b"abc", [1]), 0),
    ("read_terminator_float", lambda e: _chat_read(e, b"abc", 2.5), 0),
    ("read_terminator_bytearray", lambda e: _chat_read(e, b"ab\ncd\n", bytearray(b"\n")), 0),
    ("read_terminator_memoryview", lambda e: _chat_read(e, b"ab\r\ncd\r", memoryview(b"\r\n")), 0),
    ("read_terminator_true", lambda e: _chat_read(e, b"abc", True), 0),
    ("read_terminator_huge_int", lambda e: _chat_read(e, b"abc", 2**70), 0),
    ("read_terminator_zero", lambda e: _chat_read(e, b"abc", 0), 0),
    ("read_terminator_empty", lambda e: _chat_read(e, b"abc", b""), 0),
    ("read_terminator_str_use_encoding", lambda e: _chat_read(e, b"abc", "b", 1), 0),
    # --- simple_producer / find_prefix_at_end ---------------------------------------------------
    ("simple_producer_int", lambda e: e.ach.simple_producer(123).more(), 0),
    ("simple_producer_none", lambda e: e.ach.simple_producer(None).more(), 0),
    ("simple_producer_zero_size", lambda e: e.ach.simple_producer(b"abc", 0).more(), 0),
    ("simple_producer_negative_size", lambda e: e.ach.simple_producer(b"abc", -1).more(), 0),
    ("simple_producer_str_size", lambda e: e.ach.simple_producer(b"abc", "x").more(), 0),
    ("simple_producer_float_size", lambda e: e.ach.simple_producer(b"abc", 1.5).more(), 0),
    ("simple_producer_str_data", lambda e: e.ach.simple_producer("abcdef", 4).more(), 0),
    ("simple_producer_no_args", lambda e: e.ach.simple_producer(), 0),
    (
        "simple_producer_drain",
        lambda e: (lambda p: [p.more() for _ in range(4)])(e.ach.simple_producer(b"abcdefg", 3)),
        0,
    ),
    ("fpae_empty_needle", lambda e: e.ach.find_prefix_at_end(b"x", b""), 0),
    ("fpae_str_haystack", lambda e: e.ach.find_prefix_at_end("abc", b"cd"), 0),
    ("fpae_str_needle", lambda e: e.ach.find_prefix_at_end(b"abc", "cd"), 0),
    ("fpae_str_both", lambda e: e.ach.find_prefix_at_end("ab", "bc"), 0),
    ("fpae_int_haystack", lambda e: e.ach.find_prefix_at_end(1, b"ab"), 0),
    ("fpae_none_haystack_short_needle", lambda e: e.ach.find_prefix_at_end(None, b"a"), 0),
    ("fpae_int_needle", lambda e: e.ach.find_prefix_at_end(b"a", 1), 0),
    ("fpae_none_needle", lambda e: e.ach.find_prefix_at_end(b"a", None), 0),
    ("fpae_match", lambda e: e.ach.find_prefix_at_end(b"ab", b"bc"), 0),
    ("fpae_no_match", lambda e: e.ach.find_prefix_at_end(b"abc", b"c"), 0),
    ("fpae_bytearray", lambda e: e.ach.find_prefix_at_end(bytearray(b"ab"), b"bcd"), 0),
    ("fpae_memoryview_needle", lambda e: e.ach.find_prefix_at_end(b"ab", memoryview(b"bc")), 0),
    ("fpae_memoryview_haystack", lambda e: e.ach.find_prefix_at_end(memoryview(b"ab"), b"bc"), 0),
    ("fpae_too_few_args", lambda e: e.ach.find_prefix_at_end(b"a"), 0),
]


def _norm(v):
    if isinstance(v, (list, tuple)):
        return type(v).__name__, [_norm(x) for x in v]
    if isinstance(v, dict):
        return "dict", sorted((repr(k), _norm(x)) for k, x in v.items())
    if isinstance(v, type):
        return "type", v.__name__
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "bytes", bytes(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return "object", type(v).__name__


def outcome(core, chat, case, exact_args, tmp_path):
    tmp_path.mkdir()
    env = Env(core, chat, tmp_path)
    try:
        try:
            value = case(env)
        except Exception as e:
            return (
                "raise",
                type(e).__name__ if type(e).__module__ == "builtins" else type(e).__qualname__,
                getattr(e, "errno", None) if isinstance(e, OSError) else None,
                _norm(e.args) if exact_args else None,
            )
        return "return", _norm(value)
    finally:
        env.close()


@pytest.fixture
def clean_socket_maps():
    """Cases that default map= would touch the module's socket_map: leave it as it was."""
    before = [(m, dict(m.socket_map)) for m in (asyncore, ORACLE[0])]
    yield
    for module, saved in before:
        for fd, obj in list(module.socket_map.items()):
            if fd not in saved:
                try:
                    obj.close()
                except Exception:
                    pass
                module.socket_map.pop(fd, None)


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("clean_socket_maps")
@pytest.mark.parametrize("name,case,exact_args", CASES, ids=[c[0] for c in CASES])
def test_same_outcome_as_cpython(name, case, exact_args, tmp_path, capsys):
    want = outcome(ORACLE[0], ORACLE[1], case, exact_args, tmp_path / "oracle")
    got = outcome(asyncore, asynchat, case, exact_args, tmp_path / "impl")
    assert got == want


def test_oracle_is_not_the_module_under_test():
    assert ORACLE[0] is not asyncore
    assert ORACLE[1].asyncore is ORACLE[0]
