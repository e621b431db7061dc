"""Our own asynchat tests: what CPython's suite does not cover of Lib/asynchat.py.

The first part is differential: random input streams, chunkings, buffer sizes and
terminators (changed at random inside found_terminator), and random push/producer/send
sequences, are fed through fake sockets into an async_chat subclass of the module under
test and into the same subclass of a pure-Python reference (CPython 3.11's asynchat,
vendored in _reference/ so that the test is the same on every Python version). The calls
they make and the state they end in must be the same.

The rest are unit tests of the documented API: fifo, producer_fifo, simple_producer,
push, push_with_producer, close_when_done, discard_buffers, initiate_send, buffer-size and
encoding overrides, terminators, recv overrides and ac_in_buffer access from Python.
Tests of `fifo` only run against ours (IMPL == "rs"): Python 3's asynchat has none.
"""

import errno
import socket
import sys

import pytest
from _impl import IMPL, asynchat, asyncore
from _reference import _ref_asynchat as ref_asynchat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WAIT = 10.0
RUNAWAY = 20000  # more handler calls than any scenario can make: a loop that never ends

only_ours = pytest.mark.skipif(IMPL != "rs", reason="asynchat.fifo is part of asyncore_rs only")

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------
# fake sockets
# ---------------------------------------------------------------------------


class FakeRecvSocket:
    """recv() returns the chunks in turn (at most the size asked for, keeping the rest),
    then raises BlockingIOError, or returns b'' (end of stream) if eof."""

    def __init__(self, chunks, eof=False):
        self.chunks = list(chunks)
        self.eof = eof
        self.sizes = []
        self.closed = False

    def recv(self, n):
        self.sizes.append(n)
        if not self.chunks:
            if self.eof:
                return b""
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        chunk = self.chunks.pop(0)
        if len(chunk) > n:
            self.chunks.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk

    def close(self):
        self.closed = True


class FakeSendSocket:
    """send() follows a script: an int k sends at most k bytes, "block" raises
    BlockingIOError, "pipe" raises BrokenPipeError; once the script is done, all is sent."""

    def __init__(self, script=(), fd=1000):
        self.script = list(script)
        self.sent = []
        self.fd = fd
        self.closed = False

    def setblocking(self, flag):
        pass

    def fileno(self):
        return self.fd

    def getpeername(self):
        return ("fake", 1)

    def send(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("a bytes-like object is required, not %r" % type(data).__name__)
        step = self.script.pop(0) if self.script else None
        if step == "block":
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        if step == "pipe":
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        n = len(data) if step is None else min(step, len(data))
        self.sent.append(bytes(data[:n]))
        return n

    def close(self):
        self.closed = True


# ---------------------------------------------------------------------------
# input: the differential property
# ---------------------------------------------------------------------------

ALPHABET = [bytes([c]) for c in b"ab\r\n."]


def alphabet_bytes(min_size, max_size):
    return st.lists(st.sampled_from(ALPHABET), min_size=min_size, max_size=max_size).map(b"".join)


# prefix-rich terminators (b"aab" after b"aaab", b"\r\n" split across reads, ...)
TERMINATORS = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"aab", b"aaab", b"abab", b"\r\n.\r", b"ab", b"a", b"."]),
    alphabet_bytes(1, 4),
    st.integers(0, 12),
    st.none(),
)

PIECES = st.one_of(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"aa", b"aab", b"ab", b"b", b".", b"\r\n.\r"]),
    st.binary(max_size=6),
)

BUFFER_OPS = st.one_of(
    st.none(),
    st.tuples(st.just("prepend"), alphabet_bytes(0, 6)),
    st.tuples(st.just("replace"), alphabet_bytes(0, 6)),
    st.just(("clear",)),
    st.just(("read",)),
)

# what found_terminator does, once per call while the script lasts
ACTIONS = st.tuples(st.sampled_from(["keep", "set", "assign"]), TERMINATORS, BUFFER_OPS)


@st.composite
def input_scenarios(draw):
    stream = draw(st.lists(PIECES, max_size=40).map(b"".join))
    chunks = []
    i = 0
    while i < len(stream):
        n = draw(st.one_of(st.integers(1, 4), st.integers(1, 24)))
        chunks.append(stream[i : i + n])
        i += n
    return {
        "terminator": draw(TERMINATORS),
        "chunks": chunks,
        "in_size": draw(st.one_of(st.none(), st.integers(1, 20))),
        "in_size_on_class": draw(st.booleans()),
        "actions": draw(st.lists(ACTIONS, max_size=8)),
        "eof": draw(st.booleans()),
        # get_terminator() overridden: an int terminator capped at this value
        "cap": draw(st.one_of(st.none(), st.integers(1, 5))),
    }


def make_input_chat_class(module):
    base = module.async_chat

    class InputChat(base):
        def __init__(self, actions):
            base.__init__(self)
            self.log = []
            self.actions = list(actions)

        def capped_get_terminator(self):
            t = self.terminator
            return min(t, self.cap) if isinstance(t, int) and t > 0 else t

        def _check_runaway(self):
            if len(self.log) > RUNAWAY:
                raise RuntimeError("runaway handle_read")

        def collect_incoming_data(self, data):
            self._check_runaway()
            self.log.append(("collect", type(data).__name__, bytes(data), self.terminator))

        def found_terminator(self):
            self._check_runaway()
            self.log.append(("found", self.get_terminator(), bytes(self.ac_in_buffer)))
            if not self.actions:
                return
            how, term, buffer_op = self.actions.pop(0)
            if how == "set":
                self.set_terminator(term)
            elif how == "assign":
                self.terminator = term
            if buffer_op is None:
                return
            if buffer_op[0] == "prepend":
                self.ac_in_buffer = buffer_op[1] + self.ac_in_buffer
            elif buffer_op[0] == "replace":
                self.ac_in_buffer = buffer_op[1]
            elif buffer_op[0] == "clear":
                self.ac_in_buffer = b""
            else:
                self.log.append(("buffer", type(self.ac_in_buffer).__name__, self.ac_in_buffer))

        def handle_close(self):
            self.log.append(("close",))

    return InputChat


OURS_INPUT = make_input_chat_class(asynchat)
REF_INPUT = make_input_chat_class(ref_asynchat)


def run_input(cls, scenario):
    if scenario["in_size"] is not None and scenario["in_size_on_class"]:
        cls = type("Sized", (cls,), {"ac_in_buffer_size": scenario["in_size"]})
    chat = cls(scenario["actions"])
    if scenario["cap"] is not None:
        chat.cap = scenario["cap"]
        chat.get_terminator = chat.capped_get_terminator
    if scenario["in_size"] is not None and not scenario["in_size_on_class"]:
        chat.ac_in_buffer_size = scenario["in_size"]
    chat.set_terminator(scenario["terminator"])
    sock = FakeRecvSocket(scenario["chunks"], eof=scenario["eof"])
    chat.socket = sock
    outcome = None
    try:
        for _ in range(len(scenario["chunks"]) * 30 + 1):  # bounded
            if not sock.chunks:
                break
            chat.handle_read()
        chat.handle_read()  # BlockingIOError (ignored), or end of stream
    except Exception as e:
        outcome = (type(e).__name__, str(e))
    return {
        "log": chat.log,
        "outcome": outcome,
        "recv_sizes": sock.sizes,
        "ac_in_buffer": (type(chat.ac_in_buffer).__name__, bytes(chat.ac_in_buffer)),
        "terminator": chat.terminator,
        "get_terminator": chat.get_terminator(),
    }


@PROPERTY_SETTINGS
@given(input_scenarios())
def test_handle_read_matches_reference(scenario):
    expected = run_input(REF_INPUT, scenario)
    assert expected["outcome"] is None  # the scenarios are all valid for CPython
    assert run_input(OURS_INPUT, scenario) == expected


def test_handle_read_reference_sanity():
    # the property above compares something: a known scenario, checked by hand
    scenario = {
        "terminator": b"\r\n",
        "chunks": [b"ab\r", b"\ncd\r\n\r", b"\nx"],
        "in_size": None,
        "in_size_on_class": False,
        "actions": [("set", 3, None), ("keep", None, ("read",))],
        "eof": False,
        "cap": None,
    }
    result = run_input(REF_INPUT, scenario)
    assert result["log"] == [
        ("collect", "bytes", b"ab", b"\r\n"),
        ("found", b"\r\n", b"cd\r\n\r"),
        ("collect", "bytes", b"cd\r", 3),
        ("found", 0, b"\n\r"),
        ("buffer", "bytes", b"\n\r"),
        ("collect", "bytes", b"\n\r", 0),
        ("collect", "bytes", b"\nx", 0),
    ]
    assert result["recv_sizes"] == [65536] * 4
    assert result["ac_in_buffer"] == ("bytes", b"")
    assert run_input(OURS_INPUT, scenario) == result


@PROPERTY_SETTINGS
@given(
    st.one_of(
        st.tuples(st.binary(max_size=12), st.binary(max_size=5)),
        st.tuples(st.text("ab\r\n", max_size=12), st.text("ab\r\n", max_size=5)),
        st.tuples(alphabet_bytes(0, 12), alphabet_bytes(0, 5)),
    )
)
def test_find_prefix_at_end_matches_reference(args):
    haystack, needle = args
    assert asynchat.find_prefix_at_end(haystack, needle) == ref_asynchat.find_prefix_at_end(
        haystack, needle
    )


# ---------------------------------------------------------------------------
# output: the differential property
# ---------------------------------------------------------------------------


class ListProducer:
    """A producer whose more() returns the given chunks in turn, then b''."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.calls = 0

    def more(self):
        self.calls += 1
        return self.chunks.pop(0) if self.chunks else b""


BYTES = st.binary(max_size=40)

OUTPUT_OPS = st.one_of(
    st.tuples(st.just("push"), st.sampled_from(["bytes", "bytearray", "memoryview"]), BYTES),
    st.tuples(st.just("producer"), st.lists(st.binary(min_size=0, max_size=12), max_size=5)),
    st.tuples(st.just("simple"), BYTES, st.integers(1, 16)),
    st.tuples(st.just("string_producer"), BYTES),
    st.tuples(st.just("text_producer"), st.text("aé\r\n", max_size=12)),
    st.just(("close_when_done",)),
    st.just(("initiate_send",)),
    st.just(("handle_write",)),
    st.just(("discard_buffers",)),
)


@st.composite
def output_scenarios(draw):
    return {
        "out_size": draw(st.one_of(st.none(), st.integers(1, 16))),
        "out_size_on_class": draw(st.booleans()),
        "use_encoding": draw(st.booleans()),
        "send_script": draw(
            st.lists(st.one_of(st.integers(0, 20), st.sampled_from(["block", "pipe"])), max_size=30)
        ),
        "ops": draw(st.lists(OUTPUT_OPS, max_size=25)),
    }


def make_output_chat_class(module):
    base = module.async_chat

    class OutputChat(base):
        def __init__(self, sock, map):
            base.__init__(self, sock, map)
            self.log = []

        def handle_close(self):
            self.log.append(("close",))
            self.close()

        def handle_error(self):
            raise

    return OutputChat


OURS_OUTPUT = make_output_chat_class(asynchat)
REF_OUTPUT = make_output_chat_class(ref_asynchat)


def describe(item):
    if item is None:
        return None
    if isinstance(item, (bytes, bytearray, memoryview)):
        return (type(item).__name__, bytes(item))
    if isinstance(item, str):
        return ("str", item)
    if isinstance(item, ListProducer):
        return ("ListProducer", list(item.chunks))
    return (type(item).__name__, bytes(item.data), item.buffer_size)


def run_output(cls, module, scenario):
    if scenario["out_size"] is not None and scenario["out_size_on_class"]:
        cls = type("Sized", (cls,), {"ac_out_buffer_size": scenario["out_size"]})
    sock = FakeSendSocket(scenario["send_script"])
    chan_map = {}
    chat = cls(sock, chan_map)
    if scenario["out_size"] is not None and not scenario["out_size_on_class"]:
        chat.ac_out_buffer_size = scenario["out_size"]
    chat.use_encoding = scenario["use_encoding"]
    trace = []
    for op in scenario["ops"]:
        try:
            kind = op[0]
            if kind == "push":
                data = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[op[1]](
                    op[2]
                )
                chat.push(data)
            elif kind == "producer":
                chat.push_with_producer(ListProducer(op[1]))
            elif kind == "simple":
                chat.push_with_producer(module.simple_producer(op[1], buffer_size=op[2]))
            elif kind == "string_producer":
                chat.push_with_producer(op[1])
            elif kind == "text_producer":
                chat.push_with_producer(op[1])
            elif kind == "close_when_done":
                chat.close_when_done()
            elif kind == "initiate_send":
                chat.initiate_send()
            elif kind == "handle_write":
                chat.handle_write()
            elif kind == "discard_buffers":
                chat.discard_buffers()
            outcome = None
        except Exception as e:
            outcome = (type(e).__name__, str(e))
        trace.append(
            (
                op[0],
                outcome,
                list(sock.sent),
                [describe(x) for x in chat.producer_fifo],
                bool(chat.connected),
                bool(chat.writable()),
                list(chat.log),
                sorted(chan_map),
            )
        )
    return trace, sock.closed


@PROPERTY_SETTINGS
@given(output_scenarios())
def test_push_and_send_match_reference(scenario):
    expected = run_output(REF_OUTPUT, ref_asynchat, scenario)
    assert run_output(OURS_OUTPUT, asynchat, scenario) == expected


# ---------------------------------------------------------------------------
# fifo (the Python 2 API, documented) -- ours only
# ---------------------------------------------------------------------------


@only_ours
def test_fifo_api():
    f = asynchat.fifo()
    assert len(f) == 0
    assert f.is_empty()
    assert f.pop() == (0, None)
    f.push(b"one")
    f.push(b"two")
    assert len(f) == 2
    assert not f.is_empty()
    assert f.first() == b"one"
    assert f.pop() == (1, b"one")
    assert f.first() == b"two"
    assert f.pop() == (1, b"two")
    assert f.pop() == (0, None)
    assert f.is_empty() and len(f) == 0


@only_ours
def test_fifo_from_a_list_copies_it():
    items = [b"a", None, b"c"]
    f = asynchat.fifo(items)
    items.append(b"d")
    assert len(f) == 3
    assert [f.pop(), f.pop(), f.pop(), f.pop()] == [(1, b"a"), (1, None), (1, b"c"), (0, None)]
    g = asynchat.fifo(list=[b"x"])
    assert g.first() == b"x"
    assert len(asynchat.fifo(None)) == 0
    assert len(asynchat.fifo([])) == 0


@only_ours
def test_fifo_first_of_empty_raises_indexerror():
    with pytest.raises(IndexError):
        asynchat.fifo().first()


@only_ours
def test_fifo_holds_producers_and_none():
    p = asynchat.simple_producer(b"data")
    f = asynchat.fifo()
    f.push(p)
    f.push(None)
    assert f.first() is p
    assert f.pop() == (1, p)
    assert f.pop() == (1, None)


@only_ours
def test_fifo_deque_style_operations():
    f = asynchat.fifo([b"b"])
    f.append(b"c")
    f.appendleft(b"a")
    assert len(f) == 3 and bool(f)
    assert list(f) == [b"a", b"b", b"c"]
    assert f[0] == b"a"
    f[0] = b"A"
    assert f.first() == b"A"
    del f[0]
    assert list(f) == [b"b", b"c"]
    assert f.popleft() == b"b"
    f.clear()
    assert not f and len(f) == 0
    with pytest.raises(IndexError):
        f.popleft()
    assert asynchat.fifo.__module__ == "asynchat"


@only_ours
def test_producer_fifo_is_a_fifo():
    c = asynchat.async_chat()
    assert isinstance(c.producer_fifo, asynchat.fifo)
    assert c.producer_fifo.is_empty()
    c.push(b"queued")  # not connected: stays queued
    assert c.producer_fifo.first() == b"queued"
    assert len(c.producer_fifo) == 1
    assert c.producer_fifo.pop() == (1, b"queued")
    assert c.producer_fifo.pop() == (0, None)
    c.producer_fifo.push(b"pushed")
    assert list(c.producer_fifo) == [b"pushed"]
    assert c.writable()


# ---------------------------------------------------------------------------
# producer_fifo as a deque (what Python 3 code does with it)
# ---------------------------------------------------------------------------


def test_producer_fifo_deque_style_operations():
    c = asynchat.async_chat()  # not connected: nothing is sent
    fifo = c.producer_fifo
    assert not fifo and len(fifo) == 0
    fifo.append(b"b")
    fifo.appendleft(b"a")
    fifo.append(b"c")
    assert len(fifo) == 3 and bool(fifo)
    assert list(fifo) == [b"a", b"b", b"c"]
    assert fifo[0] == b"a"
    fifo[0] = b"A"
    assert fifo[0] == b"A"
    del fifo[0]
    assert list(fifo) == [b"b", b"c"]
    assert fifo.popleft() == b"b"
    assert c.producer_fifo is fifo
    fifo.clear()
    assert not c.producer_fifo and len(c.producer_fifo) == 0
    # code also replaces it
    from collections import deque

    c.producer_fifo = deque([b"x"])
    assert list(c.producer_fifo) == [b"x"]


# ---------------------------------------------------------------------------
# simple_producer
# ---------------------------------------------------------------------------


def test_simple_producer_default_buffer_size():
    data = bytes(range(256)) * 5  # 1280 bytes
    p = asynchat.simple_producer(data)
    assert p.buffer_size == 512 and p.data == data
    chunks = [p.more(), p.more(), p.more()]
    assert [len(x) for x in chunks] == [512, 512, 256]
    assert b"".join(chunks) == data
    assert p.more() == b"" and p.more() == b""
    assert p.data == b""


@pytest.mark.parametrize("size", [1, 3, 10, 11, 100])
def test_simple_producer_buffer_sizes(size):
    data = b"0123456789"
    p = asynchat.simple_producer(data, buffer_size=size)
    out = []
    for _ in range(20):
        chunk = p.more()
        if not chunk:
            break
        assert len(chunk) <= size
        out.append(chunk)
    assert b"".join(out) == data
    assert len(out) == -(-len(data) // size)
    assert p.more() == b""


def test_simple_producer_empty_and_module():
    assert asynchat.simple_producer(b"").more() == b""
    assert asynchat.simple_producer.__module__ == "asynchat"
    assert asynchat.async_chat.__module__ == "asynchat"
    assert issubclass(asynchat.async_chat, asyncore.dispatcher)


# ---------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["text", 10, None, [b"x"], 1.5])
def test_push_type_error(bad):
    c = asynchat.async_chat()
    with pytest.raises(TypeError) as info:
        c.push(bad)
    assert type(info.value) is TypeError
    # 3.11 passes the format and the type as two arguments, unformatted
    assert info.value.args == ("data argument must be byte-ish (%r)", type(bad))
    assert len(c.producer_fifo) == 0


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_push_splits_by_ac_out_buffer_size(kind):
    c = asynchat.async_chat()  # not connected: push only queues
    c.ac_out_buffer_size = 4
    c.push(kind(b"0123456789"))
    assert [bytes(x) for x in c.producer_fifo] == [b"0123", b"4567", b"89"]
    assert {type(x) for x in c.producer_fifo} == {kind}
    c.push(kind(b"abcd"))  # exactly the size: one item, not split
    c.push(kind(b""))
    assert [bytes(x) for x in c.producer_fifo][3:] == [b"abcd", b""]


def test_push_default_buffer_size():
    assert asynchat.async_chat.ac_out_buffer_size == 65536
    assert asynchat.async_chat.ac_in_buffer_size == 65536
    c = asynchat.async_chat()
    c.push(b"x" * 65537)
    assert [len(x) for x in c.producer_fifo] == [65536, 1]


# ---------------------------------------------------------------------------
# initiate_send and friends, through a fake socket
# ---------------------------------------------------------------------------


def connected_chat(script=(), cls=None, map=None):
    sock = FakeSendSocket(script)
    chat = (cls or asynchat.async_chat)(sock, {} if map is None else map)
    assert chat.connected
    return chat, sock


def test_initiate_send_makes_one_send_attempt_per_call():
    c, sock = connected_chat(script=[0])
    c.push(b"first")  # push calls initiate_send: one attempt, which sends nothing
    assert sock.sent == [b""]
    assert [bytes(x) for x in c.producer_fifo] == [b"first"]
    c.producer_fifo.append(b"second")
    c.producer_fifo.append(b"third")
    c.initiate_send()
    assert sock.sent[-1] == b"first"
    c.initiate_send()
    assert sock.sent[-1] == b"second"
    assert [bytes(x) for x in c.producer_fifo] == [b"third"]
    c.handle_write()
    assert sock.sent[-1] == b"third"
    assert len(c.producer_fifo) == 0
    n = len(sock.sent)
    c.initiate_send()  # nothing queued: no attempt
    assert len(sock.sent) == n


def test_initiate_send_partial_sends_keep_the_rest():
    c, sock = connected_chat(script=[3, 2, "block", 100])
    c.push(b"abcdefgh")
    assert sock.sent == [b"abc"]
    assert [bytes(x) for x in c.producer_fifo] == [b"defgh"]
    c.initiate_send()
    assert sock.sent == [b"abc", b"de"]
    c.initiate_send()  # EAGAIN: send() returns 0, the data stays
    assert [bytes(x) for x in c.producer_fifo] == [b"fgh"]
    c.initiate_send()
    assert sock.sent == [b"abc", b"de", b"fgh"]
    assert len(c.producer_fifo) == 0


def test_initiate_send_slices_long_items_by_ac_out_buffer_size():
    c, sock = connected_chat()
    c.ac_out_buffer_size = 3
    c.push_with_producer(b"abcdefg")  # a bytes "producer" is sliced, not split
    assert sock.sent == [b"abc"]
    assert [bytes(x) for x in c.producer_fifo] == [b"defg"]
    c.initiate_send()
    c.initiate_send()
    assert sock.sent == [b"abc", b"def", b"g"]


def test_initiate_send_with_producers():
    c, sock = connected_chat(script=["block"])
    p = ListProducer([b"one", b"two"])
    empty = ListProducer([])
    c.push_with_producer(empty)  # exhausted at once: removed, then nothing to send
    assert empty.calls == 1 and len(c.producer_fifo) == 0
    c.push_with_producer(p)  # more() once, then one (blocked) send attempt
    assert p.calls == 1 and sock.sent == []
    assert [describe(x) for x in c.producer_fifo] == [
        ("bytes", b"one"),
        ("ListProducer", [b"two"]),
    ]
    c.initiate_send()
    assert sock.sent == [b"one"]
    c.initiate_send()
    assert sock.sent == [b"one", b"two"] and p.calls == 2
    c.initiate_send()  # more() returns b'': the producer goes
    assert p.calls == 3 and len(c.producer_fifo) == 0
    assert sock.sent == [b"one", b"two"]


def test_initiate_send_error_calls_handle_error():
    class Chat(asynchat.async_chat):
        def handle_error(self):
            self.errors.append(sys.exc_info()[1])

    c, sock = connected_chat(cls=Chat)
    c.errors = []

    def failing_send(data):
        raise OSError(errno.EIO, "io")

    sock.send = failing_send
    c.push(b"data")
    assert len(c.errors) == 1 and c.errors[0].errno == errno.EIO
    assert [bytes(x) for x in c.producer_fifo] == [b"data"]


def test_initiate_send_does_nothing_unconnected():
    c = asynchat.async_chat()
    c.push(b"data")
    c.initiate_send()
    assert [bytes(x) for x in c.producer_fifo] == [b"data"]
    assert c.writable()  # not connected: writable, to see the connection complete


def test_close_when_done_closes_after_the_data():
    closed = []

    class Chat(asynchat.async_chat):
        def handle_close(self):
            closed.append(list(sock.sent))
            self.close()

    chan_map = {}
    c, sock = connected_chat(script=["block"], cls=Chat, map=chan_map)
    c.push(b"last words")
    c.close_when_done()
    assert list(c.producer_fifo)[-1] is None
    assert closed == [] and len(chan_map) == 1
    c.initiate_send()
    assert sock.sent == [b"last words"] and closed == []
    c.initiate_send()
    assert closed == [[b"last words"]]
    assert chan_map == {} and sock.closed and not c.connected


def test_discard_buffers():
    c = asynchat.async_chat()
    c.ac_in_buffer = b"partial"
    c._collect_incoming_data(b"collected")
    c.push(b"queued")
    c.push_with_producer(ListProducer([b"x"]))
    c.discard_buffers()
    assert c.ac_in_buffer == b""
    assert c.incoming == []
    assert len(c.producer_fifo) == 0


def test_collect_and_get_data_sample_implementation():
    c = asynchat.async_chat()
    assert c.incoming == []
    c._collect_incoming_data(b"ab")
    c._collect_incoming_data(b"cd")
    assert c.incoming == [b"ab", b"cd"]
    assert c._get_data() == b"abcd"
    assert c.incoming == [] and c._get_data() == b""


def test_abstract_methods_raise():
    c = asynchat.async_chat()
    with pytest.raises(NotImplementedError):
        c.collect_incoming_data(b"x")
    with pytest.raises(NotImplementedError):
        c.found_terminator()


def test_readable_writable_predicates():
    c = asynchat.async_chat()
    assert c.readable()
    assert c.writable()  # not connected
    d, _ = connected_chat(script=["block"])
    assert not d.writable()  # connected, nothing queued
    d.push(b"x")
    assert d.writable()


# ---------------------------------------------------------------------------
# buffer sizes and encoding: class-level and per-instance overrides
# ---------------------------------------------------------------------------


class Collector(asynchat.async_chat):
    def __init__(self, sock=None, map=None):
        asynchat.async_chat.__init__(self, sock, map)
        self.data = []
        self.found = []

    def collect_incoming_data(self, data):
        self.data.append(data)

    def found_terminator(self):
        self.found.append((b"".join(self.data), self.terminator))
        self.data = []


class SmallIn(Collector):
    ac_in_buffer_size = 7


class SmallOut(Collector):
    ac_out_buffer_size = 5


class Encoding(Collector):
    use_encoding = 1


def feed(chat, *chunks):
    sock = FakeRecvSocket(chunks)
    chat.socket = sock
    for _ in range(len(b"".join(chunks)) + 2):
        if not sock.chunks:
            break
        chat.handle_read()
    chat.handle_read()
    return sock


def test_ac_in_buffer_size_class_and_instance():
    c = SmallIn()
    c.set_terminator(None)
    sock = feed(c, b"0123456789")
    assert sock.sizes == [7, 7, 7]
    assert c.data == [b"0123456", b"789"]
    c.ac_in_buffer_size = 3  # per instance
    sock = feed(c, b"abcd")
    assert sock.sizes == [3, 3, 3]
    d = Collector()
    d.set_terminator(None)
    assert feed(d, b"x").sizes == [65536, 65536]


def test_ac_out_buffer_size_class_and_instance():
    c = SmallOut()
    c.push(b"0123456789ab")
    assert [bytes(x) for x in c.producer_fifo] == [b"01234", b"56789", b"ab"]
    c.producer_fifo.clear()
    c.ac_out_buffer_size = 2
    c.push(b"abcde")
    assert [bytes(x) for x in c.producer_fifo] == [b"ab", b"cd", b"e"]


def test_use_encoding_str_terminator():
    c = Encoding()
    c.set_terminator("\r\n")
    assert c.terminator == b"\r\n" and c.get_terminator() == b"\r\n"
    feed(c, b"line one\r\nline two\r\n")
    assert c.found == [(b"line one", b"\r\n"), (b"line two", b"\r\n")]
    # per instance, with another encoding
    d = Collector()
    d.set_terminator("é")
    assert d.terminator == "é"  # use_encoding is 0: kept as is
    d.use_encoding = 1
    d.encoding = "utf-8"
    d.set_terminator("é")
    assert d.terminator == "é".encode()
    feed(d, "aébé".encode())
    assert d.found == [(b"a", "é".encode()), (b"b", "é".encode())]
    assert asynchat.async_chat.use_encoding == 0
    assert asynchat.async_chat.encoding == "latin-1"


def test_use_encoding_str_producer():
    class Chat(asynchat.async_chat):
        use_encoding = 1

    c, sock = connected_chat(cls=Chat)
    c.push_with_producer("héllo")
    assert sock.sent == ["héllo".encode("latin-1")]
    c.encoding = "utf-8"
    c.push_with_producer(ListProducer(["wörld"]))
    assert sock.sent[-1] == "wörld".encode()


# ---------------------------------------------------------------------------
# terminators
# ---------------------------------------------------------------------------


def test_int_terminator_counts_down():
    c = Collector()
    c.set_terminator(10)
    feed(c, b"abcd")
    assert c.terminator == 6 and c.get_terminator() == 6
    assert c.data == [b"abcd"]
    feed(c, b"efg")
    assert c.terminator == 3
    feed(c, b"hijXY")
    assert c.found == [(b"abcdefghij", 0)]
    # terminator 0 is falsy: what follows is collected as with None
    assert c.data == [b"XY"]
    assert c.terminator == 0


def test_int_terminator_exact_and_several_per_read():
    class Lengths(Collector):
        def found_terminator(self):
            Collector.found_terminator(self)
            self.set_terminator(3)

    c = Lengths()
    c.set_terminator(3)
    feed(c, b"abcdefghi")
    assert [x for x, _ in c.found] == [b"abc", b"def", b"ghi"]
    assert c.terminator == 3 and c.ac_in_buffer == b""


def test_set_terminator_values():
    c = asynchat.async_chat()
    with pytest.raises(ValueError):
        c.set_terminator(-1)
    for term in (0, 5, None, b"", b"\n", "text"):
        c.set_terminator(term)
        assert c.terminator == term and c.get_terminator() == term


def test_terminator_prefix_kept_at_end_of_buffer():
    c = Collector()
    c.set_terminator(b"\r\n.\r\n")
    feed(c, b"body\r\n.")
    assert c.data == [b"body"]
    assert c.ac_in_buffer == b"\r\n."
    feed(c, b"\r\nrest")
    assert c.found == [(b"body", b"\r\n.\r\n")]
    assert c.data == [b"rest"] and c.ac_in_buffer == b""


def test_get_terminator_override():
    class Fixed(Collector):
        def get_terminator(self):
            return b"|"

    c = Fixed()
    c.set_terminator(b"\n")
    feed(c, b"a\nb|c")
    assert c.found == [(b"a\nb", b"\n")]
    assert c.data == [b"c"]

    class Counting(Collector):
        # an int from get_terminator(): CPython counts self.terminator down
        def get_terminator(self):
            return 3

    d = Counting()
    d.set_terminator(10)
    feed(d, b"ab")
    assert d.terminator == 8 and d.data == [b"ab"]
    feed(d, b"cdef")
    assert d.found == [(b"abcde", 0)]
    assert d.ac_in_buffer == b""
    assert d.data == [b"f"]


def test_terminator_changed_in_found_terminator():
    class Headers(Collector):
        def found_terminator(self):
            Collector.found_terminator(self)
            if self.terminator == b"\r\n\r\n":
                self.set_terminator(4)
            else:
                self.set_terminator(None)

    c = Headers()
    c.set_terminator(b"\r\n\r\n")
    feed(c, b"GET / HTTP/1.0\r\n\r\nbodyextra")
    assert c.found == [(b"GET / HTTP/1.0", b"\r\n\r\n"), (b"body", 0)]
    assert c.data == [b"extra"] and c.terminator is None


def test_bytearray_terminator_changed_in_place():
    # CPython searches for the terminator's current contents at every message,
    # so a bytearray changed in place takes effect at the next one.
    term = bytearray(b"\n")

    class InPlace(Collector):
        def found_terminator(self):
            Collector.found_terminator(self)
            term[:] = b";"

    c = InPlace()
    c.set_terminator(term)
    feed(c, b"x\ny;z\n;")
    assert [x for x, _ in c.found] == [b"x", b"y", b"z\n"]


# ---------------------------------------------------------------------------
# ac_in_buffer from Python, and recv overrides
# ---------------------------------------------------------------------------


def test_ac_in_buffer_read_and_written_in_found_terminator():
    class Peeks(Collector):
        def found_terminator(self):
            Collector.found_terminator(self)
            self.seen.append(self.ac_in_buffer)
            if self.ac_in_buffer.startswith(b"drop"):
                self.ac_in_buffer = b""
            elif self.ac_in_buffer.startswith(b"inject"):
                self.ac_in_buffer = b"injected\n" + self.ac_in_buffer[6:]

    c = Peeks()
    c.seen = []
    c.set_terminator(b"\n")
    feed(c, b"one\ninject-rest\n")
    assert [x for x, _ in c.found] == [b"one", b"injected", b"-rest"]
    assert c.seen == [b"inject-rest\n", b"-rest\n", b""]
    assert type(c.seen[0]) is bytes
    feed(c, b"two\ndrop this\nand this\n")
    assert [x for x, _ in c.found][3:] == [b"two"]
    assert c.ac_in_buffer == b""


def test_ac_in_buffer_set_before_reading():
    c = Collector()
    c.set_terminator(b"\n")
    c.ac_in_buffer = b"pre"
    feed(c, b"fix\n")
    assert c.found == [(b"prefix", b"\n")]


def test_recv_override_like_a_tls_layer():
    class Tls(Collector):
        def recv(self, buffer_size):
            self.asked.append(buffer_size)
            data = asynchat.async_chat.recv(self, buffer_size)
            if data == b"want-read":
                return b""  # a record not complete yet: nothing for the application
            return data.upper()

    c = Tls()
    c.asked = []
    c.set_terminator(b"\n")
    feed(c, b"hello\nwor", b"want-read", b"ld\n")
    assert c.found == [(b"HELLO", b"\n"), (b"WORLD", b"\n")]
    assert c.asked == [65536] * 4

    class Failing(Collector):
        def recv(self, buffer_size):
            raise self.exc

        def handle_error(self):
            self.errors.append(self.exc)

    f = Failing()
    f.errors = []
    f.exc = BlockingIOError(errno.EAGAIN, "again")
    f.handle_read()
    assert f.errors == []
    f.exc = OSError(errno.EIO, "io")
    f.handle_read()
    assert f.errors == [f.exc]


def test_send_override_like_a_tls_layer():
    class Tls(asynchat.async_chat):
        def send(self, data):
            self.sent.append(bytes(data))
            return len(data)

    c = Tls()
    c.sent = []
    c.connected = True
    c.push(b"abc")
    c.push_with_producer(ListProducer([b"de", b"f"]))
    c.initiate_send()
    c.initiate_send()
    assert c.sent == [b"abc", b"de", b"f"]


def test_blocking_io_error_in_handle_read_is_ignored():
    c = Collector()
    c.set_terminator(b"\n")
    sock = feed(c)
    assert c.data == [] and c.found == [] and sock.sizes == [65536]


def test_end_of_stream_calls_handle_close():
    chan_map = {}
    a, b = socket.socketpair()
    try:
        c = Collector(a, chan_map)
        c.set_terminator(b"\n")
        b.sendall(b"last\npartial")
        b.close()
        for _ in range(50):
            if not chan_map:
                break
            asyncore.loop(timeout=0.05, map=chan_map, count=1)
        assert chan_map == {}
        assert c.found == [(b"last", b"\n")]
        assert c.data == [b"partial"]
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# through real sockets and loop()
# ---------------------------------------------------------------------------


class LineEcho(asynchat.async_chat):
    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock, map)
        self.set_terminator(b"\n")
        self.lines = []

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        line = self._get_data()
        self.lines.append(line)
        if line == b"quit":
            self.push(b"bye\n")
            self.close_when_done()
        else:
            # (more() returning b'' ends a producer: no empty chunks)
            self.push_with_producer(ListProducer([x for x in (line[:3], line[3:], b"\n") if x]))


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_line_echo_with_producers_over_socketpair(use_poll):
    chan_map = {}
    a, b = socket.socketpair()
    b.settimeout(WAIT)
    try:
        c = LineEcho(a, chan_map)
        c.ac_out_buffer_size = 1000  # one send per pass: 70+ passes for the long line
        lines = [b"x" * n for n in (0, 1, 5, 100, 70000)]
        b.sendall(b"\n".join(lines) + b"\nquit\n")
        received = bytearray()
        for _ in range(2000):
            if not chan_map:
                break
            asyncore.loop(timeout=0.05, use_poll=use_poll, map=chan_map, count=1)
            b.setblocking(False)
            try:
                while True:
                    chunk = b.recv(1 << 20)
                    if not chunk:
                        break
                    received += chunk
            except BlockingIOError:
                pass
            b.settimeout(WAIT)
        assert chan_map == {}
        while True:
            chunk = b.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        assert c.lines == lines + [b"quit"]
        assert bytes(received) == b"".join(x + b"\n" for x in lines) + b"bye\n"
    finally:
        a.close()
        b.close()


def test_subclass_with_own_init_and_mixin():
    class Greeting:
        def __init__(self, *args, **kwargs):
            self.greeted = True
            super().__init__(*args, **kwargs)

    class Chat(Greeting, asynchat.async_chat):
        ac_in_buffer_size = 16

        def __init__(self, name, sock=None, map=None):
            self.name = name  # before the base __init__
            super().__init__(sock, map)
            self.set_terminator(b";")

        def collect_incoming_data(self, data):
            self.got = getattr(self, "got", b"") + data

        def found_terminator(self):
            self.done = True

    c = Chat("n")
    assert c.name == "n" and c.greeted and c.ac_in_buffer == b"" and c.incoming == []
    assert len(c.producer_fifo) == 0
    assert repr(c) == "<%s.%s at %#x>" % (__name__, Chat.__qualname__, id(c))
    sock = feed(c, b"abc;")
    assert c.got == b"abc" and c.done and sock.sizes[0] == 16
    r = asynchat.async_chat()
    assert repr(r) == "<asynchat.async_chat at %#x>" % id(r)


def test_receive_larger_than_the_buffers_spare_capacity():
    """A read that only partly fits the input buffer's kept capacity arrives whole,
    in order, and a partial message behind it is kept."""
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    chan_map = {}
    got = []

    class Chat(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock, map=chan_map)
            self.set_terminator(b"\r\n")
            self.parts = []

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            got.append(b"".join(self.parts))
            self.parts = []

    c = Chat(a)
    noline = bytes(b for b in range(256) if b not in b"\r\n")
    first = noline * 40  # no terminator: collected, buffer drained
    b.sendall(first)
    for _ in range(50):
        if sum(map(len, c.parts)) == len(first):
            break
        asyncore.loop(timeout=WAIT, map=chan_map, count=1)
    second = noline * 200  # 50800 bytes, larger than what is kept
    b.sendall(second + b"\r\ntail\r")
    deadline = 50
    while c.ac_in_buffer != b"\r" and deadline:
        asyncore.loop(timeout=WAIT, map=chan_map, count=1)
        deadline -= 1
    assert got == [first + second]
    assert c.parts == [b"tail"] and c.ac_in_buffer == b"\r"
    c.close()
    b.close()
