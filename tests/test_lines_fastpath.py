"""The one-step push of async_chat (src/async_chat.rs `push`,
src/output_batch.rs `push_virtual`).

In a batch window, a push of bytes into an empty fifo is done in one step: the
data goes to the channel's send queue without entering the fifo, which is what
CPython's push + initiate_send leave behind when the kernel takes all of it.
Each test below breaks one condition of that shortcut from inside a pipelined
handler and checks that CPython's steps are taken instead: each fails when its
guard is removed (tools/mutate_flushes.py, "one-step push: ..." entries).
The expectations are CPython's: the tests pass with ASYNCORE_RS_TEST_IMPL=stdlib.
"""

import socket

from _common import pump
from _impl import asynchat


class Lines(asynchat.async_chat):
    """Answers each line; `on_line` is the test's probe."""

    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock, map)
        self.set_terminator(b"\n")
        self.buf = []
        self.seen = []

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        line = b"".join(self.buf)
        self.buf = []
        self.on_line(line)

    def on_line(self, line):
        self.push(line + b"\n")


def recording_send(chan, calls):
    """A `send` for `chan`'s instance dict that records what it is given."""
    plain_send = chan.send

    def send(data):
        calls.append(bytes(data))
        return plain_send(data)

    return send


def serve(cls, chan_map, payload, expect):
    """`cls` on one end of a socketpair; sends a first line, answered as
    usual, then `payload`, all in one piece (so that every message but the
    last is pipelined). Returns what comes back after the first answer, once
    `expect` bytes did, or after a bounded wait. The first answer reads the
    channel's batch mode (its first send does): the one-step push is taken
    only once it is known."""
    ours, peer = socket.socketpair()
    chat = cls(ours, map=chan_map)
    # Only the channel may hold its socket, or nothing is batched
    # (output_batch.rs: socket_is_exclusive).
    del ours
    peer.sendall(b"zero\n" + payload)
    peer.setblocking(False)
    got = bytearray()

    def done():
        try:
            got.extend(peer.recv(65536))
        except BlockingIOError:
            pass
        return len(got) >= 5 + expect

    pump(chan_map, done, passes=100, timeout=0.01)
    peer.close()
    assert got[:5] == b"zero\n"
    return chat, bytes(got[5:])


def test_the_one_step_push_is_taken_for_pipelined_lines(chan_map):
    # The case the guards below protect: answers go out whole and in order.
    class Probe(Lines):
        def on_line(self, line):
            self.push(line + b"\n")
            self.seen.append(len(self.producer_fifo))

    payload = b"".join(b"line %d\n" % i for i in range(20))
    chat, got = serve(Probe, chan_map, payload, len(payload))
    assert got == payload
    assert chat.seen == [0] * 21


def test_a_push_behind_items_already_in_the_fifo_keeps_their_order(chan_map):
    # CPython appends to the fifo and initiate_send sends its head only.
    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                self.producer_fifo.append(b"A\n")
                self.push(b"B\n")
                self.seen.append(list(self.producer_fifo))
            else:
                self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert chat.seen == [[b"B\n"]]
    assert got == b"A\nB\ntwo\nthree\n"


def test_a_push_while_not_connected_stays_in_the_fifo(chan_map):
    # CPython's initiate_send does nothing while `connected` is false.
    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                self.connected = False
                self.push(b"held\n")
                self.seen.append(list(self.producer_fifo))
                self.connected = True
            else:
                self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 15)
    assert chat.seen == [[b"held\n"]]
    assert got == b"held\ntwo\nthree\n"


def test_a_send_set_on_the_instance_between_lines_is_called(chan_map):
    calls = []

    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                self.send = recording_send(self, calls)
            self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert calls == [b"one\n", b"two\n", b"three\n"]
    assert got == b"one\ntwo\nthree\n"


def test_an_initiate_send_set_on_the_instance_between_lines_is_called(chan_map):
    calls = []

    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                self.initiate_send = lambda: calls.append(list(self.producer_fifo))
            self.push(line + b"\n")

    # Nothing is ever sent: the override does not send (the wait is bounded).
    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 1)
    assert calls[:3] == [[b"one\n"], [b"one\n", b"two\n"], [b"one\n", b"two\n", b"three\n"]]
    assert got == b""


def test_an_ac_out_buffer_size_set_on_the_instance_cuts_the_push(chan_map):
    # CPython: push() splits by ac_out_buffer_size and initiate_send sends the
    # first part only.
    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                self.ac_out_buffer_size = 4
                self.push(b"abcdefgh\n")
                self.seen.append(list(self.producer_fifo))
                self.ac_out_buffer_size = 65536
            else:
                self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 19)
    assert chat.seen == [[b"efgh", b"\n"]]
    assert got == b"abcdefgh\ntwo\nthree\n"


def test_a_class_initiate_send_is_called(chan_map):
    calls = []

    def initiate_send(self):
        calls.append(list(self.producer_fifo))
        asynchat.async_chat.initiate_send(self)

    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                Probe.initiate_send = initiate_send
            self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert calls[:3] == [[b"one\n"], [b"two\n"], [b"three\n"]]
    assert got == b"one\ntwo\nthree\n"


def test_a_class_send_is_called(chan_map):
    calls = []

    def send(self, data):
        calls.append(bytes(data))
        return asynchat.async_chat.send(self, data)

    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                Probe.send = send
            self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert calls == [b"one\n", b"two\n", b"three\n"]
    assert got == b"one\ntwo\nthree\n"


def test_a_class_ac_out_buffer_size_cuts_the_push(chan_map):
    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                Probe.ac_out_buffer_size = 4
            self.push(line + b"\n")
            self.seen.append(list(self.producer_fifo))

    chat, got = serve(Probe, chan_map, b"one\nthree\nfive\n", 15)
    assert chat.seen[:3] == [[], [], [b"e\n"]]
    assert got == b"one\nthree\nfive\n"


def test_a_large_instance_dict_still_sees_an_instance_send(chan_map):
    # More keys than the one-pass scan takes (calls.rs SCAN_KEYS): the names
    # are looked up one by one.
    calls = []

    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                for i in range(20):
                    setattr(self, f"attr{i}", i)
                self.send = recording_send(self, calls)
            self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert calls == [b"one\n", b"two\n", b"three\n"]
    assert got == b"one\ntwo\nthree\n"


def test_an_instance_send_under_a_key_that_is_not_interned_is_called(chan_map):
    calls = []

    class Probe(Lines):
        def on_line(self, line):
            if line == b"one":
                self.__dict__["".join(["se", "nd"])] = recording_send(self, calls)
            self.push(line + b"\n")

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert calls == [b"one\n", b"two\n", b"three\n"]
    assert got == b"one\ntwo\nthree\n"


def test_a_class_getattribute_sees_initiate_send_and_send(chan_map):
    calls = []

    class Probe(Lines):
        def __getattribute__(self, name):
            if name in ("initiate_send", "send"):
                calls.append(name)
            return super().__getattribute__(name)

    chat, got = serve(Probe, chan_map, b"one\ntwo\nthree\n", 14)
    assert calls[:2] == ["initiate_send", "send"]
    assert got == b"one\ntwo\nthree\n"
