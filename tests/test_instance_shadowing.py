"""An instance attribute set while a channel runs shadows its class's method at once.

CPython looks in the instance dict before it uses a class's method or setting.
asyncore-rs skips that lookup for an instance dict it watches (src/dict_watch.rs,
CPython 3.12+): a dict is watched once it holds none of the names the hot path
resolves, and the watcher stops watching it before such a name goes in. Its
calls into the handler's own methods (src/handler_calls.rs) and its read of
``terminator`` (channel::instance_attr) skip the lookups too. Each test lets the
dict be watched (a few messages first), then adds a shadowing name between two
messages of one read, in each way Python code can, and checks that the very next
message sees it. Run with ASYNCORE_RS_TEST_IMPL=stdlib, they check CPython.
"""

import socket

import pytest
from _common import pump
from _impl import asynchat, asyncore


def line_handler(log, on_line):
    """A line handler that logs each call; `on_line(self, n)` runs in the n-th
    found_terminator (from 0)."""

    class Lines(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\n")
            self.buf = []
            self.count = 0

        def collect_incoming_data(self, data):
            self.buf.append(data)

        def found_terminator(self):
            log.append(b"".join(self.buf))
            self.buf = []
            on_line(self, self.count)
            self.count += 1

    return Lines


def run_lines(chan_map, cls, chunks):
    a, b = socket.socketpair()
    with b:
        cls(a, chan_map)
        del a
        for chunk in chunks:
            b.sendall(chunk)
            pump(chan_map, lambda: False, passes=2, timeout=0.01)


def shadow_log(log):
    def collect(data):
        log.append(("collect", data))

    def found():
        log.append(("found",))

    return collect, found


# Each way to add an instance attribute: (name, setter(obj, name, value)).
class Key(str):
    """A str subclass key: CPython's lookup of the interned name finds it."""


SETTERS = {
    "setattr": lambda obj, name, value: setattr(obj, name, value),
    "dict item": lambda obj, name, value: obj.__dict__.__setitem__(name, value),
    "dict update": lambda obj, name, value: obj.__dict__.update({"other": 1, name: value}),
    "setdefault": lambda obj, name, value: obj.__dict__.setdefault(name, value),
    "dict replaced": lambda obj, name, value: setattr(
        obj, "__dict__", dict(obj.__dict__, **{name: value})
    ),
    "str subclass key": lambda obj, name, value: obj.__dict__.__setitem__(Key(name), value),
    # An empty dict updated from a dict is a copy of it (CPython's clone).
    "cleared and refilled": lambda obj, name, value: refill(obj.__dict__, {name: value}),
}


def refill(d, extra):
    saved = dict(d, **extra)
    d.clear()
    d.update(saved)


@pytest.mark.parametrize("how", sorted(SETTERS))
def test_found_terminator_shadowed_mid_read(chan_map, how):
    log = []
    _, found = shadow_log(log)

    def on_line(self, n):
        if n == 4:
            SETTERS[how](self, "found_terminator", found)

    cls = line_handler(log, on_line)
    # Three reads: the dict is watched after the first; the shadow goes in
    # at the 5th line, in the middle of the second read.
    run_lines(chan_map, cls, [b"a\nb\n", b"c\nd\ne\nf\ng\n", b"h\n"])
    assert log == [b"a", b"b", b"c", b"d", b"e", ("found",), ("found",), ("found",)]


@pytest.mark.parametrize("how", sorted(SETTERS))
def test_collect_incoming_data_shadowed_mid_read(chan_map, how):
    log = []
    collect, _ = shadow_log(log)

    def on_line(self, n):
        if n == 2:
            SETTERS[how](self, "collect_incoming_data", collect)

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\nb\n", b"c\nd\ne\n"])
    # After the shadow, lines go to it; found_terminator still logs (an
    # empty join: buf stays empty).
    assert log == [b"a", b"b", b"c", ("collect", b"d"), b"", ("collect", b"e"), b""]


@pytest.mark.parametrize("how", sorted(SETTERS))
def test_shadowed_in_a_channel_without_attributes(chan_map, how):
    # No attribute of its own (its terminator is a class attribute): the
    # instance dict is none or empty until the shadow goes in, mid-read.
    log = []
    collect, _ = shadow_log(log)

    class Bare(asynchat.async_chat):
        terminator = b"\n"

        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map=map)

        def collect_incoming_data(self, data):
            log.append(data)

        def found_terminator(self):
            log.append("found")
            if log.count("found") == 3:
                SETTERS[how](self, "collect_incoming_data", collect)

    run_lines(chan_map, Bare, [b"a\nb\n", b"c\nd\ne\n"])
    assert log == [b"a", "found", b"b", "found", b"c", "found"] + [
        ("collect", b"d"),
        "found",
        ("collect", b"e"),
        "found",
    ]


def test_class_collect_replaced_mid_read(chan_map):
    log = []

    def on_line(self, n):
        if n == 2:
            type(self).collect_incoming_data = lambda self, data: log.append(("class", data))

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\nb\n", b"c\nd\ne\n"])
    assert log == [b"a", b"b", b"c", ("class", b"d"), b"", ("class", b"e"), b""]


def test_found_terminator_shadowed_before_any_event(chan_map):
    log = []
    _, found = shadow_log(log)
    base = line_handler(log, lambda self, n: None)

    class Shadowed(base):
        def __init__(self, sock, map):
            base.__init__(self, sock, map)
            self.found_terminator = found

    run_lines(chan_map, Shadowed, [b"a\nb\n", b"c\n"])
    assert log == [("found",), ("found",), ("found",)]


@pytest.mark.parametrize("kind", ["staticmethod", "classmethod", "builtin"])
def test_found_terminator_not_a_plain_function(chan_map, kind):
    # Called through the class's descriptor as CPython does: no `self` for a
    # staticmethod, the class for a classmethod, and a builtin bound.
    log = []
    base = line_handler(log, lambda self, n: None)
    wrappers = {
        "staticmethod": staticmethod(lambda: log.append("static")),
        "classmethod": classmethod(lambda cls: log.append(cls.__name__)),
        "builtin": log.append,  # a builtin method: not bound to the channel
    }

    class Odd(base):
        found_terminator = wrappers[kind]

    run_lines(chan_map, Odd, [b"a\nb\n"])
    if kind == "builtin":
        assert log == []  # log.append() without an argument: TypeError, to handle_error
    else:
        assert log == [{"staticmethod": "static", "classmethod": "Odd"}[kind]] * 2


def test_class_method_replaced_mid_read(chan_map):
    log = []

    def on_line(self, n):
        if n == 2:
            type(self).found_terminator = lambda self: log.append("class")

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\nb\n", b"c\nd\ne\n"])
    assert log == [b"a", b"b", b"c", "class", "class"]


def test_class_terminator_property_wins_over_the_instance_value(chan_map):
    log = []

    def on_line(self, n):
        if n == 1:
            # A data descriptor on the class comes before the instance dict.
            type(self).terminator = property(lambda self: b";")

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\n", b"b\nc;d\n;"])
    assert log == [b"a", b"b", b"c", b"d\n"]


def test_instance_terminator_assigned_directly(chan_map):
    log = []

    def on_line(self, n):
        if n == 1:
            self.terminator = b";"

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\n", b"b\nc;d;"])
    assert log == [b"a", b"b", b"c", b"d"]


KEPT_ALIVE = []

# Each way to change the instance's terminator: setter(obj, value).
TERMINATOR_SETTERS = {
    "set_terminator": lambda obj, value: obj.set_terminator(value),
    "setattr": lambda obj, value: setattr(obj, "terminator", value),
    "dict item": lambda obj, value: obj.__dict__.__setitem__("terminator", value),
    "dict update": lambda obj, value: obj.__dict__.update({"other": 1, "terminator": value}),
    "dict replaced": lambda obj, value: setattr(
        obj, "__dict__", dict(obj.__dict__, terminator=value)
    ),
    "str subclass key": lambda obj, value: obj.__dict__.__setitem__(Key("terminator"), value),
    "cleared and refilled": lambda obj, value: refill(obj.__dict__, {"terminator": value}),
    # The old dict lives on (nothing changes in it): only its identity tells.
    "dict replaced, old one kept": lambda obj, value: (
        KEPT_ALIVE.append(obj.__dict__),
        setattr(obj, "__dict__", dict(obj.__dict__, terminator=value)),
    ),
    "popped and set again": lambda obj, value: (
        obj.__dict__.pop("terminator"),
        obj.__dict__.__setitem__("terminator", value),
    ),
}


@pytest.mark.parametrize("how", sorted(TERMINATOR_SETTERS))
def test_instance_terminator_changed_mid_read(chan_map, how):
    # The terminator read for one message is kept for the next ones of the
    # same read (channel::instance_attr) until its dict reports a change.
    log = []

    def on_line(self, n):
        if n == 1:
            TERMINATOR_SETTERS[how](self, b";")

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\n", b"b\nc;d;"])
    assert log == [b"a", b"b", b"c", b"d"]


def test_instance_terminator_changed_after_the_dict_stops_being_watched(chan_map):
    # A shadowing setting marks the dict, and the next check stops watching
    # it: a terminator read before must not be kept past that, nor one read
    # from the dict after (its changes are no longer reported).
    log = []

    def on_line(self, n):
        if n == 1:
            self.ac_out_buffer_size = 4096
        elif n == 2:
            self.terminator = b";"
        elif n == 3:
            self.terminator = b"|"

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\n", b"b\nc\nd;e|f|"])
    assert log == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_instance_out_buffer_size_shadowed_mid_read(chan_map):
    # CPython's push cuts the data by ac_out_buffer_size and initiate_send
    # sends one piece: with the instance's 2, two of three pieces stay queued.
    log = []

    def on_line(self, n):
        if n == 2:
            self.ac_out_buffer_size = 2
        self.push(b"hello\n")
        log.append(len(self.producer_fifo))

    cls = line_handler(log, on_line)
    run_lines(chan_map, cls, [b"a\nb\n", b"c\nd\n"])
    assert log == [b"a", 0, b"b", 0, b"c", 2, b"d", 4]


def test_instance_send_shadowed_after_events(chan_map):
    sent = []

    class Echo(asyncore.dispatcher_with_send):
        def __init__(self, sock, map):
            asyncore.dispatcher_with_send.__init__(self, sock, map=map)
            self.seen = 0  # an instance dict with a name in it

        def handle_read(self):
            data = self.recv(8192)
            self.seen += 1
            if self.seen == 3:
                self.send = lambda d: sent.append(d) or len(d)
            self.send(data)

    a, b = socket.socketpair()
    with b:
        Echo(a, chan_map)
        del a
        b.settimeout(5.0)
        for word in (b"one", b"two"):
            b.sendall(word)
            pump(chan_map, lambda: False, passes=2, timeout=0.01)
            assert b.recv(16) == word
        b.sendall(b"three")
        pump(chan_map, lambda: False, passes=2, timeout=0.01)
        assert sent == [b"three"]
