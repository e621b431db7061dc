"""asyncore-rs's output batching (`async_chat.ac_batch_output`).

- `"pipelined"` (the default): replies to messages with more received input
  buffered behind them (the peer pipelined) are queued and go out together when
  the scan reaches the last message, or when handle_read's scan ends.
- `True`: the pushes of one handler are sent together when it returns.
- `False`: every push() is sent at once, as in CPython.

Anything that could observe the difference sends the queue first. These tests pin
all three.
"""

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
