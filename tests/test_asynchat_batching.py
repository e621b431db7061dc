"""asyncore-rs's output batching (`async_chat.ac_batch_output`).

CPython's initiate_send() makes one send() per call; in a batch window ours runs
the same initiate_send() and only its send() is virtual: the data is queued and
counted as sent (src/output_batch.rs). The window is:
- `"pipelined"` (the default): a found_terminator() with more received input
  buffered behind its message; the queue goes out with the next real send or
  when handle_read's scan ends.
- `True`: any event the loop dispatches; the queue goes out when it returns.
- `False`: never, as in CPython.

Every other way to the socket sends the queue first. The tests below pin each of
those flush points and each guard of the virtual send, one test per point (each
fails when its flush or guard is removed); test_asynchat_output_differential.py
compares random programs with CPython.
"""

import os
import socket

import pytest
from _common import pump
from _impl import IMPL, asynchat, asyncore

pytestmark = pytest.mark.skipif(IMPL != "rs", reason="an asyncore-rs extension")


def make_chat(cls, chan_map):
    ours, peer = socket.socketpair()
    peer.settimeout(2.0)
    return cls(ours, map=chan_map), peer


def recv_until(peer, n):
    data = b""
    while len(data) < n:
        chunk = peer.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class Lines(asynchat.async_chat):
    ac_batch_output = True

    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock, map=map)
        self.set_terminator(b"\n")
        self.buf = []
        self.seen_in_handler = []

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        line = b"".join(self.buf)
        self.buf = []
        self.on_line(line)

    def on_line(self, line):
        self.push(line + b"\n")


def test_pipelined_is_the_default():
    assert asynchat.async_chat.ac_batch_output == "pipelined"


@pytest.mark.parametrize("mode", [False, "pipelined"])
def test_a_lone_message_is_answered_before_the_handler_returns(mode, chan_map):
    peer_got = []

    class Plain(Lines):
        ac_batch_output = mode

        def on_line(self, line):
            self.push(line + b"\n")
            # the peer can read it while this handler still runs (CPython's behaviour)
            peer_got.append(recv_until(peer, len(line) + 1))

    chat, peer = make_chat(Plain, chan_map)
    peer.sendall(b"hello\n")
    assert pump(chan_map, lambda: peer_got)
    assert peer_got == [b"hello\n"]
    peer.close()


def test_batched_pushes_arrive_whole_and_in_order(chan_map):
    chat, peer = make_chat(Lines, chan_map)
    lines = [b"%05d" % i + b"x" * 58 for i in range(300)]
    payload = b"".join(line + b"\n" for line in lines)
    peer.sendall(payload)
    got = b""
    for _ in range(400):
        asyncore.loop(timeout=0.01, map=chan_map, count=1)
        peer.setblocking(False)
        try:
            got += peer.recv(1 << 20)
        except BlockingIOError:
            pass
        if len(got) >= len(payload):
            break
    assert got == payload
    assert len(chat.producer_fifo) == 0
    peer.close()


def test_batched_push_is_delayed_until_the_handler_returns(chan_map):
    waited = []

    class Probe(Lines):
        def on_line(self, line):
            self.push(line + b"\n")
            peer.settimeout(0.05)
            try:
                waited.append(peer.recv(100))
            except TimeoutError:
                waited.append(None)

    chat, peer = make_chat(Probe, chan_map)
    peer.sendall(b"one\n")
    assert pump(chan_map, lambda: waited)
    assert waited == [None]  # not sent yet inside the handler
    peer.settimeout(2.0)
    assert recv_until(peer, 4) == b"one\n"  # sent when it returned
    peer.close()


@pytest.mark.parametrize("how", ["close", "socket_send", "producer_fifo", "writable"])
def test_observing_the_channel_sends_the_batch_first(how, chan_map):
    seen = []

    class Observer(Lines):
        def on_line(self, line):
            self.push(b"A")
            if how == "close":
                self.close()
            elif how == "socket_send":
                self.socket.send(b"B")
            elif how == "producer_fifo":
                seen.append(len(self.producer_fifo))
            else:
                seen.append(bool(self.writable()))

    chat, peer = make_chat(Observer, chan_map)
    peer.sendall(b"go\n")
    assert pump(chan_map, lambda: how == "close" and not chan_map or seen or how == "socket_send")
    for _ in range(5):
        asyncore.loop(timeout=0.01, map=chan_map, count=1)
    expected = {"close": b"A", "socket_send": b"AB", "producer_fifo": b"A", "writable": b"A"}
    assert recv_until(peer, len(expected[how])) == expected[how]
    if how in ("producer_fifo", "writable"):
        assert seen == [0] if how == "producer_fifo" else seen == [False]
    peer.close()


def test_close_when_done_after_batched_pushes(chan_map):
    class Closer(Lines):
        def on_line(self, line):
            self.push(line + b"\n")
            self.push(b"bye\n")
            self.close_when_done()

    chat, peer = make_chat(Closer, chan_map)
    peer.sendall(b"hi\n")
    assert pump(chan_map, lambda: not chan_map)
    assert recv_until(peer, 100) == b"hi\nbye\n"
    assert peer.recv(10) == b""  # closed after the data
    peer.close()


class Pipelined(Lines):
    ac_batch_output = "pipelined"


def probe_inside_handler(peer, timeout=0.05):
    """What the peer can read right now (None if nothing arrives in time)."""
    peer.settimeout(timeout)
    try:
        return peer.recv(1000)
    except TimeoutError:
        return None
    finally:
        peer.settimeout(2.0)


def test_replies_to_pipelined_lines_go_out_with_the_last_one(chan_map):
    seen = []

    class Probe(Pipelined):
        def on_line(self, line):
            self.push(line + b"\n")
            seen.append((line, probe_inside_handler(peer)))

    chat, peer = make_chat(Probe, chan_map)
    peer.sendall(b"a\nb\nc\n")  # one write: b and c are buffered behind a
    assert pump(chan_map, lambda: len(seen) == 3)
    # a and b are queued (more input was buffered); c's push sends all three.
    assert seen == [(b"a", None), (b"b", None), (b"c", b"a\nb\nc\n")]
    peer.close()


def test_a_trailing_partial_message_does_not_hold_replies_back(chan_map):
    chat, peer = make_chat(Pipelined, chan_map)
    peer.sendall(b"a\nb\npart")
    asyncore.loop(timeout=0.5, map=chan_map, count=1)
    # One pass: the queued replies went out when the scan ended.
    peer.setblocking(False)
    assert peer.recv(100) == b"a\nb\n"
    assert chat.buf == [b"part"]  # collected, as CPython does with a partial line
    peer.close()


@pytest.mark.parametrize("what", ["producer_fifo", "connected", "socket"])
def test_assigning_channel_state_sends_the_batch_first(what, chan_map):
    other, other_peer = socket.socketpair()

    class Swapper(Pipelined):
        def on_line(self, line):
            if line == b"x":
                self.push(b"A")  # queued: y is buffered behind x
                if what == "producer_fifo":
                    self.producer_fifo = asynchat.fifo()
                elif what == "connected":
                    self.connected = True
                else:
                    self.socket = other
                    self.del_channel()
                    self.set_socket(other, map=chan_map)
            else:
                self.push(b"B")
                done.append(line)

    done = []
    chat, peer = make_chat(Swapper, chan_map)
    peer.sendall(b"x\ny\n")
    assert pump(chan_map, lambda: done)
    if what == "socket":
        # "A" went out on the socket it was pushed on; "B" on the new one.
        assert recv_until(peer, 1) == b"A"
        other_peer.settimeout(2.0)
        assert recv_until(other_peer, 1) == b"B"
    else:
        assert recv_until(peer, 2) == b"AB"
    peer.close()
    other_peer.close()


def test_an_error_in_a_pipelined_handler_sends_what_it_pushed(chan_map):
    class Failing(Pipelined):
        def on_line(self, line):
            self.push(b"A")
            raise ValueError("boom")

        def handle_error(self):
            self.handle_close()

    chat, peer = make_chat(Failing, chan_map)
    peer.sendall(b"x\ny\n")  # y is buffered: x's push is queued
    assert pump(chan_map, lambda: not chan_map)
    assert recv_until(peer, 10) == b"A"  # sent before the channel closed
    assert peer.recv(10) == b""
    peer.close()


def pipelined_pair(on_x, chan_map, cls=None, after=None):
    """A pipelined channel that runs `on_x(self)` for line x (y is buffered
    behind it) and pushes "Z" for y; returns what the peer received."""
    done = []

    class Chat(cls or Pipelined):
        def on_line(self, line):
            if line == b"x":
                on_x(self)
            else:
                self.push(b"Z")
                done.append(line)

    chat, peer = make_chat(Chat, chan_map)
    peer.sendall(b"x\ny\n")
    assert pump(chan_map, lambda: done or not chan_map)
    if after:
        after(chat)
    got = b""
    peer.setblocking(False)
    for _ in range(50):
        asyncore.loop(timeout=0.01, map=chan_map, count=1)
        try:
            data = peer.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            break
        got += data
    peer.close()
    return got


def test_dispatcher_send_goes_after_the_queue(chan_map):
    # CPython: push(A) sent A, then send(B): the peer reads AB.
    def on_x(self):
        self.push(b"A")
        self.send(b"B")

    assert pipelined_pair(on_x, chan_map) == b"ABZ"


def test_the_last_messages_real_send_goes_after_the_queue(chan_map):
    # x's push is virtual (y is buffered); y's is real and shares the sendmsg.
    assert pipelined_pair(lambda self: self.push(b"A"), chan_map) == b"AZ"


def test_a_python_send_set_on_the_instance_goes_after_the_queue(chan_map):
    def on_x(self):
        self.push(b"A")
        self.send = lambda data: os.write(self._fileno, data)
        self.push(b"B")

    assert pipelined_pair(on_x, chan_map) == b"ABZ"


def test_a_socket_cached_elsewhere_turns_the_virtual_send_off(chan_map):
    class Caching(Pipelined):
        def __init__(self, sock, map):
            super().__init__(sock, map)
            self.cached = sock  # a second reference: it may be written behind the queue

    def on_x(self):
        self.push(b"A")
        self.cached.send(b"B")

    assert pipelined_pair(on_x, chan_map, cls=Caching) == b"ABZ"


def test_a_socket_closed_through_a_reference_since_dropped_is_not_batched(chan_map):
    """The socket is handed out (the getter forgets that it was seen open),
    closed, and the reference dropped: the channel holds the only reference
    again, but the next push is sent for real, as CPython's, and meets the
    closed socket at once (EBADF: handle_close inside push), not after the
    window. Guards both the getter's forgetting and the open check."""
    events = []

    class Closing(Pipelined):
        def handle_close(self):
            events.append("handle_close")
            self.close()

    def on_x(self):
        self.push(b"A")  # virtual: the socket is now seen open
        sock = self.socket  # sends A, and forgets the check
        sock.close()
        del sock
        events.append("push")
        self.push(b"B")
        events.append("pushed")

    pipelined_pair(on_x, chan_map, cls=Closing)
    assert events[:3] == ["push", "handle_close", "pushed"]


def test_a_window_of_more_than_1024_pushes_is_sent_whole(chan_map):
    def on_x(self):
        for i in range(3000):
            self.push(b"%d," % i)

    want = b"".join(b"%d," % i for i in range(3000)) + b"Z"
    assert pipelined_pair(on_x, chan_map) == want


def test_a_window_of_more_than_256_kib_is_sent_whole(chan_map):
    def on_x(self):
        for i in range(40):
            self.push(bytes([65 + i % 26]) * 10000)

    want = b"".join(bytes([65 + i % 26]) * 10000 for i in range(40)) + b"Z"
    assert pipelined_pair(on_x, chan_map) == want


def test_a_pushed_bytearray_is_sent_as_it_was_at_the_push(chan_map):
    def on_x(self):
        buf = bytearray(b"AAA")
        self.push(buf)
        buf[:] = b"XXX"

    assert pipelined_pair(on_x, chan_map) == b"AAAZ"


def test_true_mode_sends_a_write_events_queue_when_it_returns(chan_map):
    chat, peer = make_chat(Lines, chan_map)  # ac_batch_output = True
    chat.ac_out_buffer_size = 10
    data = bytes(range(256)) * 40
    # Outside the loop the first chunk is sent for real; the write events that
    # send the rest run in batch windows.
    chat.push_with_producer(asynchat.simple_producer(data, buffer_size=1000))
    got = b""
    peer.setblocking(False)
    for _ in range(3000):
        asyncore.loop(timeout=0.01, map=chan_map, count=1)
        try:
            got += peer.recv(1 << 20)
        except BlockingIOError:
            pass
        if len(got) >= len(data):
            break
    assert got == data
    peer.close()


def fill_kernel_then(chan_map, then):
    """Back-pressure: a window queues far more than the kernel takes (tiny
    buffers, a peer that reads only later); `then(self)` runs after the pushes.
    Returns all the peer eventually reads, until EOF or 5 s."""
    import time

    class Big(Pipelined):
        def on_line(self, line):
            if line == b"x":
                for i in range(200):
                    self.push(b"%04d" % i + b"." * 996)
                then(self)

    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    Big(ours, map=chan_map)
    del ours
    peer.sendall(b"x\ny")  # x has input behind it: its pushes are virtual
    asyncore.loop(timeout=0, map=chan_map, count=1)
    got = b""
    peer.setblocking(False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        asyncore.loop(timeout=0.001, map=chan_map, count=1)
        try:
            data = peer.recv(1 << 16)
        except BlockingIOError:
            continue
        if not data:
            got += b"<EOF>"
            break
        got += data
    peer.close()
    return got


BIG = b"".join(b"%04d" % i + b"." * 996 for i in range(200))


def test_back_pressure_keeps_every_byte_in_order(chan_map):
    assert fill_kernel_then(chan_map, lambda self: None) == BIG


def test_back_pressure_close_when_done_closes_after_the_data(chan_map):
    # The queue's unsent tail goes back ahead of the None: CPython closes only
    # after sending it.
    def then(self):
        self.close_when_done()
        self.push(b"")  # an initiate_send that reaches the None

    assert fill_kernel_then(chan_map, then) == BIG + b"<EOF>"
