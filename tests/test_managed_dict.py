"""Handlers keep their attributes as plain classes do (CPython 3.13+).

From 3.13 (not the abi3 or free-threaded builds) asyncore-rs's Rust class has no
dict slot, and ``asyncore.dispatcher`` is a Python class over it, so handler classes
get CPython's managed dict: on 3.14 the attribute values live inline, under names
kept in the class's shared keys, with no dict object until one is asked for. The
hot path then answers "may this instance shadow a method?" from those shared keys
(src/managed_dict.rs): no instance of a class can hold a name its keys lack, and a
new name is added at their end. These tests take each way that answer could go
stale and check that the very next message sees the instance attribute, as CPython
does. They pass against CPython's own modules too (ASYNCORE_RS_TEST_IMPL=stdlib).
"""

import gc
import socket
import sys
import sysconfig

from _common import pump
from _impl import IMPL, asynchat, asyncore

MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT


def our_build_is_managed():
    """Whether this build's dispatcher leaves the dict to CPython (see channel.rs)."""
    if IMPL != "rs" or sys.version_info < (3, 13) or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    from asyncore_rs import _core

    return ".abi3." not in _core.__file__


def feed(chan_map, chunks, make):
    """Makes one channel with `make(sock, map)` and sends it each chunk, one read each."""
    a, b = socket.socketpair()
    with b:
        make(a, chan_map)
        del a
        for chunk in chunks:
            b.sendall(chunk)
            pump(chan_map, lambda: False, passes=2, timeout=0.01)


def lines_class(log, **extra):
    """A line handler logging each line; `extra` names become class attributes."""

    class Lines(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\n")
            self.buf = []

        def collect_incoming_data(self, data):
            self.buf.append(data)

        def found_terminator(self):
            log.append(b"".join(self.buf))
            self.buf = []

    for name, value in extra.items():
        setattr(Lines, name, value)
    return Lines


def test_layout():
    # The layout these tests are about: a managed dict on the builds that read it,
    # the dict slot elsewhere; CPython's plain classes always have the managed dict.
    handler = lines_class([])
    if our_build_is_managed():
        assert asyncore.dispatcher.__flags__ & MANAGED_DICT
        assert handler.__dictoffset__ == -1
    elif IMPL == "rs":
        assert handler.__dictoffset__ > 0
    assert asyncore.dispatcher.__module__ == "asyncore"
    assert issubclass(handler, asyncore.dispatcher)
    d = asyncore.dispatcher()
    d.anything = 1
    assert d.__dict__["anything"] == 1


def test_object_setattr_shadows_at_once(chan_map):
    # object.__setattr__ stores past any __setattr__ of the class: still the
    # instance's attribute, and still a new name in the class's keys.
    log = []

    def found_terminator(self):
        log.append(b"".join(self.buf))
        self.buf = []
        if len(log) == 2:
            object.__setattr__(self, "found_terminator", lambda: log.append("instance"))

    cls = lines_class(log, found_terminator=found_terminator)
    feed(chan_map, [b"a\nb\nc\nd\n"], cls)
    assert log == [b"a", b"b", "instance", "instance"]


def test_another_instance_shadowing_does_not_change_this_one(chan_map):
    # One instance's shadowing name goes into the keys the whole class shares:
    # the others, which do not have it, still call the class's method.
    log = []
    cls = lines_class(log)
    a, b = socket.socketpair()
    with b:
        shadowed = cls(a, {})
        shadowed.found_terminator = lambda: log.append("shadowed")
        try:
            feed(chan_map, [b"a\nb\n", b"c\n"], cls)
            assert log == [b"a", b"b", b"c"]
        finally:
            shadowed.close()


def test_shadow_stored_by_the_first_attribute_of_a_bare_class(chan_map):
    # A class whose instances had no attribute at all (its keys are empty:
    # every answer was "no attribute") gets its first one mid-read.
    log = []

    class Bare(asynchat.async_chat):
        terminator = b"\n"

        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map=map)

        def collect_incoming_data(self, data):
            log.append(data)

        def found_terminator(self):
            log.append("found")
            if log.count("found") == 2:
                self.found_terminator = lambda: log.append("instance")

    feed(chan_map, [b"a\n", b"b\nc\nd\n"], Bare)
    assert log == [b"a", "found", b"b", "found", b"c", "instance", b"d", "instance"]


def test_readable_shadowed_on_an_instance_of_a_bare_class(chan_map):
    # `readable` read by the loop itself (not a handler call), shadowed by an
    # instance of a class without attributes: CPython never reads the channel
    # again. asyncore-rs's documented difference (docs/migration.rst): the
    # override takes effect at the channel's next map change.
    log = []

    class Bare(asyncore.dispatcher):
        def handle_read(self):
            log.append(self.recv(100))

    a, b = socket.socketpair()
    with b:
        chan = Bare(a, chan_map)
        b.sendall(b"x")
        pump(chan_map, lambda: bool(log), timeout=0.01)
        assert log == [b"x"]
        chan.readable = lambda: False
        b.sendall(b"y")
        pump(chan_map, lambda: False, passes=3, timeout=0.01)
        assert log == ([b"x", b"y"] if IMPL == "rs" else [b"x"])
        chan.del_channel()
        chan.set_socket(chan.socket, chan_map)
        b.sendall(b"z")
        pump(chan_map, lambda: False, passes=3, timeout=0.01)
        assert log == ([b"x", b"y"] if IMPL == "rs" else [b"x"])
        chan.close()


def test_new_class_at_a_freed_class_address(chan_map):
    # The answer for a class is kept by the address of its keys and their
    # count. A class freed and a new one made often get the same addresses and
    # counts: here the new class's one name shadows found_terminator, and its
    # instances must call theirs. Many rounds, as the reuse is the allocator's.
    log = []
    for _ in range(30):
        log.clear()

        class Clean(asynchat.async_chat):
            def __init__(self, sock, map):
                asynchat.async_chat.__init__(self, sock, map=map)
                self.set_terminator(b"\n")
                self.xx = 0

            def collect_incoming_data(self, data):
                pass

            def found_terminator(self):
                log.append("class")

        feed(chan_map, [b"a\n"], Clean)
        assert log == ["class"]
        for obj in list(chan_map.values()):
            obj.close()
        del Clean, obj
        gc.collect()

        class Shadowing(asynchat.async_chat):
            def __init__(self, sock, map):
                asynchat.async_chat.__init__(self, sock, map=map)
                self.set_terminator(b"\n")
                self.found_terminator = lambda: log.append("instance")

            def collect_incoming_data(self, data):
                pass

            def found_terminator(self):
                log.append("class")

        feed(chan_map, [b"b\n"], Shadowing)
        assert log == ["class", "instance"]
        for obj in list(chan_map.values()):
            obj.close()
        del Shadowing, obj
        gc.collect()


def test_dict_made_then_shadowed_through_it(chan_map):
    # `__dict__` makes the dict object (the values stay where they were); a
    # name put in through it shadows at once.
    log = []

    def found_terminator(self):
        log.append(b"".join(self.buf))
        self.buf = []
        if len(log) == 1:
            self.__dict__  # noqa: B018  (makes the dict)
        if len(log) == 2:
            self.__dict__["found_terminator"] = lambda: log.append("instance")

    cls = lines_class(log, found_terminator=found_terminator)
    feed(chan_map, [b"a\nb\n", b"c\nd\n"], cls)
    assert log == [b"a", b"b", "instance", "instance"]


def test_instance_cycle_through_inline_values_is_collected():
    # A channel that refers to itself through an attribute (kept inline on
    # 3.14) is freed by the collector, as a plain class's instance is.
    import weakref

    class Handler(asyncore.dispatcher):
        pass

    h = Handler()
    h.me = h
    ref = weakref.ref(h)
    del h
    gc.collect()
    assert ref() is None


def test_terminator_never_set_is_an_attribute_error(chan_map):
    # No terminator at all (set_terminator never called; CPython's __init__
    # sets none): get_terminator() raises AttributeError, to handle_error(),
    # whatever other attributes the instance keeps inline.
    errors = []

    class NoTerminator(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.first = b"\n"

        def collect_incoming_data(self, data):
            errors.append(("data", data))

        def found_terminator(self):
            errors.append("found")

        def handle_error(self):
            errors.append(sys.exc_info()[0])
            self.close()

    feed(chan_map, [b"a\nb\n"], NoTerminator)
    assert errors == [AttributeError]
