"""Writes to the socket map that the loop must see at once, whatever path they take.

On CPython 3.12+ the loop watches the ``SocketMap`` it polls (src/socket_map.rs), and
while no write has been made since its last look at the map it takes an event's
channel from its registrations instead of ``map.get(fd)`` (src/loop_state.rs
``target``). Each test here makes a write that must end that, and fails if the
loop dispatches as if the map were unchanged:

- a handler deletes another channel's entry in the pass where both are readable;
- ``readable()`` deletes another channel's entry while the loop asks it, that is
  while the loop is reading the map;
- the entry is deleted or replaced behind ``SocketMap``'s back
  (``dict.__delitem__``/``dict.__setitem__``) between two passes;
- the key is no int but an object with ``fileno()``: ``poll()`` reports int fds,
  and ``map.get(fd)`` finds nothing for them;
- a handler writes the map and then runs a pass of its own over it (a nested
  ``loop()``): the outer loop still sees the write. (Before this file, the nested
  pass took the map's change log, and the outer loop never served a channel added
  just before it, on every CPython version.)

Each test checks CPython's behaviour too (ASYNCORE_RS_TEST_IMPL=stdlib).
"""

import socket
import sys
import sysconfig

import pytest
from _impl import IMPL, asyncore

POLL_MODES = [False, True]

# Where the loop can watch the map (dict watchers: CPython 3.12+, not the abi3 or
# free-threaded builds). Without them, an entry replaced behind SocketMap's back
# is seen only through the map.get(fd) of an event (docs/migration.rst).
_core_file = getattr(sys.modules.get("asyncore_rs._core"), "__file__", "") or ""
WATCHED = (
    sys.version_info >= (3, 12)
    and ".abi3." not in _core_file
    and not sysconfig.get_config_var("Py_GIL_DISABLED")
)


class Reader(asyncore.dispatcher):
    """Records its reads in ``log``; ``on_read`` runs before it records."""

    def __init__(self, sock, name, log, map=None):
        asyncore.dispatcher.__init__(self, sock, map=map)
        self.name = name
        self.log = log
        self.on_read = None

    def writable(self):
        return False

    def handle_read(self):
        if self.on_read is not None:
            self.on_read()
        self.log.append(self.name)
        self.recv(100)


@pytest.fixture
def pairs():
    made = []

    def make():
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield make
    for s in made:
        s.close()


def one_pass(use_poll, timeout=0.2):
    asyncore.loop(timeout=timeout, use_poll=use_poll, count=1)


@pytest.mark.parametrize("use_poll", POLL_MODES)
def test_handler_deletes_other_entry_in_same_pass(global_map, pairs, use_poll):
    log = []
    (a1, b1), (a2, b2) = pairs(), pairs()
    x, y = Reader(a1, "x", log), Reader(a2, "y", log)
    one_pass(use_poll, timeout=0)  # both registered, nothing to read
    for me, other in ((x, y), (y, x)):
        # Whichever runs first takes the other out of the map (not closing it).
        me.on_read = lambda other=other: global_map.pop(other._fileno, None)
    b1.send(b"1")
    b2.send(b"2")
    one_pass(use_poll)
    assert len(log) == 1, log


@pytest.mark.parametrize("use_poll", POLL_MODES)
def test_readable_deletes_other_entry_while_map_is_read(global_map, pairs, use_poll):
    log = []
    (a1, _b1), (a2, b2) = pairs(), pairs()
    victim = Reader(a2, "victim", log)

    class Deleter(Reader):
        armed = False

        def readable(self):
            if self.armed:
                self.armed = False
                global_map.pop(victim._fileno, None)
            return True

    deleter = Deleter(a1, "deleter", log)
    one_pass(use_poll, timeout=0)
    b2.send(b"x")
    deleter.armed = True
    one_pass(use_poll)
    assert "victim" not in log
    assert victim._fileno not in global_map


@pytest.mark.parametrize("use_poll", POLL_MODES)
def test_entry_deleted_behind_socket_map_between_passes(global_map, pairs, use_poll):
    log = []
    a, b = pairs()
    r = Reader(a, "r", log)
    one_pass(use_poll, timeout=0)
    dict.__delitem__(global_map, r._fileno)
    b.send(b"x")
    one_pass(use_poll)
    assert log == []


@pytest.mark.parametrize("use_poll", POLL_MODES)
def test_entry_replaced_behind_socket_map_between_passes(global_map, pairs, use_poll):
    log = []
    a, b = pairs()
    old = Reader(a, "old", log)
    one_pass(use_poll, timeout=0)
    new = Reader(a, "new", log, map={})  # the same socket, not in the global map
    dict.__setitem__(global_map, old._fileno, new)
    b.send(b"x")
    one_pass(use_poll)
    if IMPL == "rs" and not WATCHED:
        # Without a watcher the loop does not learn of the write: the event
        # finds another channel than it polled, and goes to neither
        # (docs/migration.rst, "Differences").
        assert log == []
    else:
        assert log == ["new"]


class FilenoKey:
    """A map key that select()/poll() take for its fd, but that is no int."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


@pytest.mark.parametrize("use_poll", POLL_MODES)
def test_key_with_fileno_is_looked_up_as_cpython_does(global_map, pairs, use_poll):
    log = []
    a, b = pairs()
    r = Reader(a, "r", log, map={})
    global_map[FilenoKey(a.fileno())] = r
    one_pass(use_poll, timeout=0)
    b.send(b"x")
    one_pass(use_poll)
    # select() hands back the key itself, which map.get() finds; poll() hands
    # back the int fd, which it does not.
    assert log == ([] if use_poll else ["r"])


@pytest.mark.parametrize("use_poll", POLL_MODES)
@pytest.mark.parametrize("write", ["delete", "add"])
def test_nested_pass_leaves_map_writes_to_outer_loop(global_map, pairs, use_poll, write):
    # A handler writes the map, then runs a pass of its own over the same map
    # (asyncore.loop inside a handler): the outer loop still sees the write.
    log = []
    (a1, b1), (a2, b2), (a3, b3) = pairs(), pairs(), pairs()
    victim = Reader(a2, "victim", log)
    added = []

    class Nester(Reader):
        def handle_read(self):
            self.recv(100)
            if write == "delete":
                global_map.pop(victim._fileno, None)
            else:
                added.append(Reader(a3, "added", log))
            asyncore.loop(timeout=0, use_poll=use_poll, count=1)

    Nester(a1, "nester", log)
    one_pass(use_poll, timeout=0)
    b1.send(b"n")
    one_pass(use_poll)
    b2.send(b"v")
    b3.send(b"a")
    for _ in range(3):
        one_pass(use_poll, timeout=0.05)
    if write == "delete":
        assert "victim" not in log
    else:
        assert "added" in log
