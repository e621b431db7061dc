"""A class changed while its channels run is seen at the next lookup, as in CPython.

asyncore-rs answers "is this method still ours?" (``readable``, ``handle_read``,
``recv``, ``send``, ``initiate_send``...) and "may this push be sent in one step?"
(``initiate_send``, ``send`` and ``ac_out_buffer_size`` all the class's) from the
class, and caches the answers by CPython's type version tag (src/type_cache.rs),
which CPython resets on every change to the class or to one of its bases. Each
test warms that cache with the class as it is, changes the class (or a base, or
``__bases__``) between two loop passes, and checks that the very next event goes
where CPython sends it. Run with ASYNCORE_RS_TEST_IMPL=stdlib, they check CPython.
"""

import socket

from _common import pump
from _impl import asynchat, asyncore


def recv_all(sock, n):
    sock.settimeout(5.0)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def echo_classes():
    class Base(asyncore.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(8192)
            if data:
                self.send(data)

    class Echo(Base):
        pass

    return Base, Echo


def echo_pings(chan_map, peer):
    """Three echoed pings: the class's answers are cached after these."""
    for _ in range(3):
        peer.sendall(b"ping")
        pump(chan_map, lambda: False, passes=2, timeout=0.01)
        assert recv_all(peer, 4) == b"ping"


def test_base_class_recv_set_and_deleted_between_passes(chan_map):
    # (A late class-level readable/writable is a documented difference:
    # docs/migration.rst, it takes effect at the channel's next map change.)
    Base, Echo = echo_classes()
    a, b = socket.socketpair()
    with b:
        Echo(a, map=chan_map)
        echo_pings(chan_map, b)  # warm: recv is dispatcher's own
        Base.recv = lambda self, n: asyncore.dispatcher.recv(self, n).upper()
        b.sendall(b"late")
        pump(chan_map, lambda: False, passes=2, timeout=0.01)
        assert recv_all(b, 4) == b"LATE"
        del Base.recv
        b.sendall(b"back")
        pump(chan_map, lambda: False, passes=2, timeout=0.01)
        assert recv_all(b, 4) == b"back"


def test_handle_read_replaced_through_bases_assignment(chan_map):
    Base, Echo = echo_classes()
    seen = []

    class Other(asyncore.dispatcher_with_send):
        def handle_read(self):
            seen.append(self.recv(8192))

    a, b = socket.socketpair()
    with b:
        Echo(a, map=chan_map)
        echo_pings(chan_map, b)
        Echo.__bases__ = (Other,)
        b.sendall(b"moved")
        assert pump(chan_map, lambda: seen)
        assert seen == [b"moved"]


def test_class_send_override_added_late_is_called(chan_map):
    Base, Echo = echo_classes()
    sent = []
    a, b = socket.socketpair()
    with b:
        Echo(a, map=chan_map)
        echo_pings(chan_map, b)

        def send(self, data):
            sent.append(bytes(data))
            return len(data)

        Base.send = send
        b.sendall(b"pong")
        assert pump(chan_map, lambda: sent)
        assert sent == [b"pong"]


class LineChat(asynchat.async_chat):
    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock=sock, map=map)
        self.ibuffer = []
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self.ibuffer.append(data)

    def found_terminator(self):
        line = b"".join(self.ibuffer)
        self.ibuffer = []
        self.push(line + b"\n")


def lines(n, tag):
    return b"".join(b"%s%d\n" % (tag, i) for i in range(n))


def chat_round(chan_map, peer, data):
    peer.sendall(data)
    got = b""
    for _ in range(50):
        pump(chan_map, lambda: False, passes=1, timeout=0.01)
        peer.setblocking(False)
        try:
            got += peer.recv(65536)
        except BlockingIOError:
            pass
        if len(got) >= len(data):
            break
    return got


def test_late_class_ac_out_buffer_size_cuts_the_next_pushes(chan_map):
    after_push = []

    class Chat(LineChat):
        def found_terminator(self):
            LineChat.found_terminator(self)
            after_push.append([bytes(p) for p in self.producer_fifo])

    a, b = socket.socketpair()
    with b:
        Chat(a, chan_map)
        # Only the channel may hold its socket, or nothing is batched
        # (output_batch.rs socket_is_exclusive), and no push is one step.
        del a
        # Warm: two lines a read, so the first one's push has input behind it.
        for _ in range(3):
            assert chat_round(chan_map, b, b"wx\nyz\n") == b"wx\nyz\n"
        assert after_push[-2] == []  # sent (or queued as sent) in one step
        after_push.clear()
        Chat.ac_out_buffer_size = 2
        assert chat_round(chan_map, b, b"abcd\nef\n") == b"abcd\nef\n"
        # CPython's push cuts the data in ac_out_buffer_size pieces, and its
        # initiate_send sends the first: the rest waits in the fifo.
        assert after_push[0] == [b"cd", b"\n"]


def test_late_class_initiate_send_override_takes_every_push(chan_map):
    calls = []
    a, b = socket.socketpair()

    class Chat(LineChat):
        pass

    with b:
        chat = Chat(a, chan_map)
        del a  # as above: the channel's alone, so pushes may take one step
        assert chat_round(chan_map, b, lines(20, b"x")) == lines(20, b"x")

        def initiate_send(self):
            calls.append(len(self.producer_fifo))

        Chat.initiate_send = initiate_send
        b.sendall(lines(3, b"y"))
        assert pump(chan_map, lambda: len(calls) == 3)
        assert len(chat.producer_fifo) == 3  # nothing sent: the override sends nothing
        del Chat.initiate_send
        chat.initiate_send()
        pump(chan_map, lambda: not chat.producer_fifo, passes=20, timeout=0.01)
        assert recv_all(b, len(lines(3, b"y"))) == lines(3, b"y")
