"""What a channel holds, and that holding less changes nothing a handler sees.

A channel keeps its link to the loop inside its own state, an async_chat's fifo
reaches its channel through a weak reference, and the empty instance ``__dict__``
CPython 3.11 and 3.12 make for every new object is dropped until something is
stored in it (docs/internals.rst, "Memory per connection"). Each test but the
last passes on CPython 3.11's modules too (ASYNCORE_RS_TEST_IMPL=stdlib).
"""

import collections
import gc
import select
import socket
import weakref

import pytest
from _common import WAIT, pump
from _impl import IMPL, asynchat, asyncore


def readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


class Chat(asynchat.async_chat):
    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock, map=map)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        pass

    def found_terminator(self):
        pass


def polled_chat(chan_map):
    """An async_chat on one end of a socketpair, polled once (so linked to the
    loop), and the other end."""
    a, b = socket.socketpair()
    b.settimeout(WAIT)
    c = Chat(a, chan_map)
    asyncore.loop(timeout=0, map=chan_map, count=1)
    return c, b


# --------------------------------------------------------------------------- fifo owner


def test_fifo_set_again_still_wakes_its_channel(chan_map):
    """`chan.producer_fifo = chan.producer_fifo` keeps the fifo's owner: data
    appended to it afterwards is sent by the next passes."""
    c, b = polled_chat(chan_map)
    c.producer_fifo = c.producer_fifo
    asyncore.loop(timeout=0, map=chan_map, count=1)
    c.producer_fifo.append(b"ping\n")
    assert pump(chan_map, lambda: readable(b))
    assert b.recv(100) == b"ping\n"
    b.close()


def test_fifo_handed_to_another_channel_wakes_the_new_owner(chan_map):
    """A fifo moved to a second channel, then replaced on the first: the first
    letting go of it does not silence the second."""
    c1, b1 = polled_chat(chan_map)
    c2, b2 = polled_chat(chan_map)
    shared = c1.producer_fifo
    c2.producer_fifo = shared
    c1.producer_fifo = collections.deque()
    asyncore.loop(timeout=0, map=chan_map, count=1)
    shared.append(b"to c2\n")
    assert pump(chan_map, lambda: readable(b2))
    assert b2.recv(100) == b"to c2\n"
    assert not readable(b1)
    b1.close()
    b2.close()


def test_fifo_outliving_its_channel_still_works(chan_map):
    """The channel is gone (closed, dropped, collected); its fifo is a plain
    fifo again."""
    c, b = polled_chat(chan_map)
    fifo = c.producer_fifo
    ref = weakref.ref(c)
    c.close()
    del c
    gc.collect()
    assert ref() is None
    fifo.append(b"late")
    assert len(fifo) == 1 and fifo[0] == b"late"
    fifo.popleft()
    assert not fifo
    b.close()


def test_dropped_channel_with_fifo_is_freed_without_the_collector(chan_map):
    """The fifo's reference to its channel is weak: a closed async_chat is
    freed by reference counting alone, as CPython's (whose deque holds no
    reference back)."""
    c, b = polled_chat(chan_map)
    ref = weakref.ref(c)
    c.close()
    gc.disable()
    try:
        del c
        assert ref() is None
    finally:
        gc.enable()
    b.close()


# --------------------------------------------------------------------------- instance dict


def test_attribute_set_before_init_survives_init(chan_map):
    class D(asyncore.dispatcher):
        def __init__(self, sock, map):
            self.before = 1
            asyncore.dispatcher.__init__(self, sock, map=map)

    a, b = socket.socketpair()
    d = D(a, chan_map)
    assert d.before == 1 and d.__dict__["before"] == 1
    b.close()


def test_dict_taken_before_init_stays_the_instance_dict(chan_map):
    a, b = socket.socketpair()
    d = asyncore.dispatcher.__new__(asyncore.dispatcher)
    early = d.__dict__
    asyncore.dispatcher.__init__(d, a, map=chan_map)
    early["x"] = 1
    assert d.x == 1 and d.__dict__ is early
    b.close()


def test_attributes_after_init_go_to_the_instance_dict(chan_map):
    a, b = socket.socketpair()
    d = asyncore.dispatcher(a, map=chan_map)
    with pytest.raises(AttributeError):
        d.later  # noqa: B018
    d.later = 2
    assert d.later == 2 and vars(d)["later"] == 2
    del d.later
    with pytest.raises(AttributeError):
        d.later  # noqa: B018
    b.close()


@pytest.mark.skipif(IMPL != "rs", reason="asyncore-rs's layout")
def test_a_channel_with_no_attributes_of_its_own_has_no_dict(chan_map):
    a, b = socket.socketpair()
    d = asyncore.dispatcher_with_send(a, map=chan_map)
    asyncore.loop(timeout=0, map=chan_map, count=1)
    assert not [x for x in gc.get_referents(d) if type(x) is dict and x is not chan_map]
    b.close()


@pytest.mark.skipif(IMPL != "rs", reason="asyncore-rs's fifo link (docs/migration.rst)")
def test_an_async_chat_has_one_weak_reference_from_its_fifo(chan_map):
    c, b = polled_chat(chan_map)
    assert weakref.getweakrefcount(c) == 1
    c.producer_fifo = collections.deque()
    assert weakref.getweakrefcount(c) == 0
    b.close()
