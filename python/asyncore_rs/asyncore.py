"""Basic infrastructure for asynchronous socket service clients and servers.

CPython 3.11's ``asyncore``, with the event loop, the socket calls and the
dispatcher written in Rust (asyncore-rs). The names, signatures and behaviour
are CPython's; see the documentation for the few deliberate differences.
"""

import os
import select
import socket
import sys
import time
import warnings
from errno import (  # noqa: F401  (CPython's asyncore exports these names)
    EAGAIN,
    EALREADY,
    EBADF,
    ECONNABORTED,
    ECONNRESET,
    EINPROGRESS,
    EINVAL,
    EISCONN,
    ENOTCONN,
    EPIPE,
    ESHUTDOWN,
    EWOULDBLOCK,
    errorcode,
)

from asyncore_rs import _core

_DISCONNECTED = frozenset({ECONNRESET, ENOTCONN, ESHUTDOWN, ECONNABORTED, EPIPE, EBADF})


class SocketMap(dict):
    """The type of ``socket_map``: a dict that tells the Rust loop which keys
    were written, so a pass costs what changed, not what is in the map."""

    # The change log (src/socket_map.rs) is the one place that decides what
    # the loop re-reads; add_channel/del_channel note their writes there too.
    __slots__ = ("_changes", "__weakref__")
    _asyncore_rs_change_log = True

    def __init__(self, *args, **kwargs):
        self._changes = _core._ChangeLog()
        super().__init__(*args, **kwargs)

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        self._changes.note(key)

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        self._changes.note(key)

    def pop(self, key, /, *default):
        self._changes.note(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key, default=None, /):
        self._changes.note(key)
        return dict.setdefault(self, key, default)

    def popitem(self):
        self._changes.note_all()
        return dict.popitem(self)

    def clear(self):
        self._changes.note_all()
        dict.clear(self)

    def update(self, *args, **kwargs):
        self._changes.note_all()
        dict.update(self, *args, **kwargs)

    def __ior__(self, other):
        self._changes.note_all()
        return dict.__ior__(self, other)

    def __reduce__(self):
        return (dict, (dict(self),))


try:
    socket_map  # noqa: B018  (kept across importlib.reload, as CPython does)
except NameError:
    socket_map = SocketMap()

_strerror = _core._strerror


class ExitNow(Exception):
    pass


_reraised_exceptions = (ExitNow, KeyboardInterrupt, SystemExit)

read = _core.read
write = _core.write
_exception = _core._exception
readwrite = _core.readwrite


def poll(timeout=0.0, map=None):
    return _core.poll(timeout, map)


def poll2(timeout=0.0, map=None):
    # Use the poll() support added to the select module in Python 2.0
    return _core.poll2(timeout, map)


poll3 = poll2  # Alias for backward compatibility


def loop(timeout=30.0, use_poll=False, map=None, count=None):
    return _core.loop(timeout, use_poll, map, count)


class dispatcher(_core.dispatcher):
    # A Python class over the Rust one, so that its instances (and every
    # handler's) keep their attributes as a plain class's do: CPython's managed
    # dict, whose attribute reads it specialises (src/channel.rs, Dispatcher).
    __module__ = "asyncore"
    __doc__ = _core.dispatcher.__doc__


def _sock_map_init(setup, qualname):
    """A plain function calling a Rust set-up method, to serve as ``__init__``.

    ``inspect.signature()`` (and so ``help()``) then shows CPython's
    ``(self, sock=None, map=None)`` on every Python version: a #[pymethods]
    ``__init__`` is a slot wrapper that shows ``(*args, **kwargs)``, and from 3.13
    ``inspect.signature(cls)`` raises TypeError when a Rust method is assigned as
    ``__init__`` (it binds ``__init__`` to the class itself).
    """

    def __init__(self, sock=None, map=None):
        setup(self, sock, map)

    __init__.__qualname__ = qualname
    __init__.__module__ = "asyncore"
    return __init__


dispatcher.__init__ = _sock_map_init(dispatcher._init, "dispatcher.__init__")


class dispatcher_with_send(dispatcher):
    """adds simple buffered output capability, useful for simple clients.
    [for more sophisticated usage use asynchat.async_chat]"""

    __init__ = _sock_map_init(dispatcher._ws_init, "dispatcher_with_send.__init__")
    out_buffer = dispatcher._rs_out_buffer
    initiate_send = dispatcher._ws_initiate_send
    handle_write = dispatcher._ws_handle_write
    writable = dispatcher._ws_writable
    send = dispatcher._ws_send


compact_traceback = _core.compact_traceback


def close_all(map=None, ignore_all=False):
    return _core.close_all(map, ignore_all)


def _attach_traceback(exc):
    # Exceptions raised in Rust have no traceback; CPython's always do (they
    # are raised in asyncore.py's frames). compact_traceback() needs one.
    try:
        raise exc
    except BaseException as caught:
        return caught


# Asynchronous File I/O: useful for pipes, and stdin/stdout.
if os.name == "posix":

    class file_wrapper:
        # Here we override just enough to make a file
        # look like a socket for the purposes of asyncore.
        # The passed fd is automatically os.dup()'d

        def __init__(self, fd):
            self.fd = os.dup(fd)

        def __del__(self):
            if self.fd >= 0:
                warnings.warn(f"unclosed file {self!r}", ResourceWarning, source=self)  # noqa: B028
            self.close()

        def recv(self, *args):
            return os.read(self.fd, *args)

        def send(self, *args):
            return os.write(self.fd, *args)

        def getsockopt(self, level, optname, buflen=None):
            if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and not buflen:
                return 0
            raise NotImplementedError("Only asyncore specific behaviour implemented.")

        read = recv
        write = send

        def close(self):
            if self.fd < 0:
                return
            fd = self.fd
            self.fd = -1
            os.close(fd)

        def fileno(self):
            return self.fd

    class file_dispatcher(dispatcher):
        def __init__(self, fd, map=None):
            dispatcher.__init__(self, None, map)
            self.connected = True
            try:
                fd = fd.fileno()
            except AttributeError:
                pass
            self.set_file(fd)
            # set it to non-blocking mode
            os.set_blocking(fd, False)

        def set_file(self, fd):
            self.socket = file_wrapper(fd)
            self._fileno = self.socket.fileno()
            self.add_channel()


for _cls in (dispatcher_with_send, ExitNow, SocketMap) + (
    (file_wrapper, file_dispatcher) if os.name == "posix" else ()
):
    _cls.__module__ = "asyncore"
for _fn in (poll, poll2, loop, close_all, _attach_traceback):
    _fn.__module__ = "asyncore"
del _cls, _fn

_core._bind_asyncore(globals())

# Names CPython's module has that are only used above.
_ = (select, sys, time)
del _
