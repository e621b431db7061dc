r"""A class supporting chat-style (command/response) protocols.

CPython 3.11's ``asynchat``, with ``async_chat``'s input scanning and output
queue in Rust (asyncore-rs). ``handle_read()`` looks at the input stream for
the current terminator (a bytes string, a byte count, or None) and calls
``found_terminator()`` on its receipt, after ``collect_incoming_data()`` with
the data before it.
"""

from collections import deque  # noqa: F401  (CPython's asynchat exports it)

from asyncore_rs import _core
from asyncore_rs import asyncore as asyncore

_d = asyncore.dispatcher


class async_chat(asyncore.dispatcher):
    """This is an abstract class.  You must derive from this class, and add
    the two methods collect_incoming_data() and found_terminator()"""

    # these are overridable defaults

    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536

    # we don't want to enable the use of encoding by default, because that is a
    # sign of an application bug that we don't want to pass silently

    use_encoding = 0
    encoding = "latin-1"

    # asyncore-rs extension: when initiate_send's send() may be queued (counted
    # as sent) so that replies share one sendmsg(); everything else stays
    # CPython's. "pipelined": inside a found_terminator() with more input
    # buffered behind it; True: inside any event the loop dispatches; False:
    # never, one send per initiate_send as CPython. See docs/migration.rst.
    ac_batch_output = "pipelined"

    ac_in_buffer = _d._rs_ac_in_buffer
    producer_fifo = _d._rs_producer_fifo

    __init__ = asyncore._sock_map_init(_d._ac_init, "async_chat.__init__")
    collect_incoming_data = _d._ac_collect_incoming_data
    _collect_incoming_data = _d._ac__collect_incoming_data
    _get_data = _d._ac__get_data
    found_terminator = _d._ac_found_terminator
    set_terminator = _d._ac_set_terminator
    get_terminator = _d._ac_get_terminator
    handle_read = _d._ac_handle_read
    handle_write = _d._ac_handle_write
    handle_close = _d._ac_handle_close
    push = _d._ac_push
    push_with_producer = _d._ac_push_with_producer
    readable = _d._ac_readable
    writable = _d._ac_writable
    close_when_done = _d._ac_close_when_done
    initiate_send = _d._ac_initiate_send
    discard_buffers = _d._ac_discard_buffers


async_chat.__module__ = "asynchat"
del _d

simple_producer = _core.simple_producer


def _producer_init(setup):
    """``simple_producer.__init__`` as a plain function, for CPython's signature
    (see asyncore._sock_map_init)."""

    def __init__(self, data, buffer_size=512):
        setup(self, data, buffer_size)

    __init__.__qualname__ = "simple_producer.__init__"
    __init__.__module__ = "asynchat"
    return __init__


simple_producer.__init__ = _producer_init(simple_producer._init)
fifo = _core.fifo
find_prefix_at_end = _core.find_prefix_at_end
