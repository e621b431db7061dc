"""async_chat's output path against CPython's, over random handler programs.

Each program is a table: the k-th message a channel receives runs a list of
actions (push, push of a mutable buffer, push_with_producer of simple_producer
or of a logging producer that may raise or return str, self.send,
self.socket.send/sendall, initiate_send, discard_buffers, close_when_done,
a None appended directly, close, len(producer_fifo), writable(), terminator
changes, an exception between pushes). The input is fed in random chunks, one
loop pass per chunk and a few more after it, and the peer drains its socket
after every pass. The same program runs on CPython's asynchat (the stdlib
module where present, else the reference copy in tests/_reference) and on ours
under every `ac_batch_output`, and must give the same bytes at the peer after
every step, the same close, and the same log of handler calls (found_terminator,
more(), errors, closes) in the same order.

ASYNCORE_RS_DIFF_PROGRAMS and ASYNCORE_RS_DIFF_SEED change the count and seed;
a failure prints the seed that reproduces it.
"""

import os
import random
import socket
import sys
import warnings

import pytest
from _impl import IMPL, asynchat, asyncore

pytestmark = pytest.mark.skipif(IMPL != "rs", reason="compares asyncore-rs with CPython")

PROGRAMS = int(os.environ.get("ASYNCORE_RS_DIFF_PROGRAMS", "3000"))
SEED = int(os.environ.get("ASYNCORE_RS_DIFF_SEED", "20261201"))
MODES = [False, True, "pipelined"]


def cpython_modules():
    if sys.version_info < (3, 12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asynchat as std_asynchat
            import asyncore as std_asyncore
        if not getattr(std_asyncore, "__file__", "").endswith("asyncore.py"):
            raise RuntimeError("the stdlib asyncore is shadowed")
        return std_asyncore, std_asynchat
    from _reference import _ref_asynchat, _ref_asyncore

    return _ref_asyncore, _ref_asynchat


REF_ASYNCORE, REF_ASYNCHAT = cpython_modules()

# ------------------------------------------------------------------ programs

ACTIONS = [
    "push",
    "push",
    "push",
    "push_empty",
    "push_bytearray",
    "push_memoryview",
    "simple_producer",
    "log_producer",
    "send",
    "socket_send",
    "sendall",
    "initiate_send",
    "discard",
    "close_when_done",
    "append_none",
    "fifo_len",
    "writable",
    "raise",
    "term_int",
    "term_crlf",
    "term_nl",
    "close",
]


def random_action(rng):
    kind = rng.choice(ACTIONS)
    if kind in ("close", "close_when_done", "append_none", "discard") and rng.random() < 0.6:
        kind = "push"  # keep most channels alive for a while
    size = rng.choice([1, 3, 10, 40, 100, 300])
    if kind == "simple_producer":
        return (kind, size, rng.choice([1, 4, 16, 512]))
    if kind == "log_producer":
        chunks = rng.randint(0, 4)
        return (kind, chunks, rng.choice([None, None, rng.randint(0, 4)]), rng.choice([None, 1]))
    if kind == "term_int":
        return (kind, rng.randint(1, 12))
    return (kind, size)


def random_program(rng):
    return {
        "table": [[random_action(rng) for _ in range(rng.randint(0, 4))] for _ in range(6)],
        "out_size": rng.choice([4, 16, 65536]),
        "in_size": rng.choice([7, 65536]),
        "use_encoding": rng.random() < 0.3,
        "close_on_error": rng.random() < 0.2,
    }


def random_input(rng):
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append(bytes(rng.choice(b"abcxyz") for _ in range(rng.randint(0, 8))))
        parts.append(rng.choice([b"\n", b"\n", b"\r\n", b""]))
    data = b"".join(parts)
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randint(0, 5))))
    chunks, last = [], 0
    for c in cuts + [len(data)]:
        if c > last:
            chunks.append(data[last:c])
        last = c
    return chunks


# ------------------------------------------------------------------ runner


def payload(tag, size):
    head = tag.encode()
    return (head * (size // len(head) + 1))[:size]


class LogProducer:
    def __init__(self, log, name, chunks, fail_at, str_at):
        self.log, self.name = log, name
        self.chunks, self.fail_at, self.str_at = chunks, fail_at, str_at
        self.calls = 0

    def more(self):
        k = self.calls
        self.calls += 1
        self.log.append(("more", self.name, k))
        if k == self.fail_at:
            raise ValueError("producer failed")
        if k >= self.chunks:
            return b""
        data = "%s.%d;" % (self.name, k)
        return data if k == self.str_at else data.encode()


def handler_class(core, chat, program, log):
    table = program["table"]

    class Handler(chat.async_chat):
        ac_out_buffer_size = program["out_size"]
        ac_in_buffer_size = program["in_size"]
        use_encoding = program["use_encoding"]

        def __init__(self, sock, map):
            chat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\n")
            self.buf = []
            self.count = 0

        def collect_incoming_data(self, data):
            self.buf.append(data)

        def found_terminator(self):
            msg = b"".join(self.buf)
            self.buf = []
            k = self.count
            self.count += 1
            log.append(("msg", k, msg))
            for i, action in enumerate(table[k % len(table)]):
                self.act(action, "%d.%d" % (k, i))
            if not self.get_terminator():
                self.set_terminator(b"\n")  # an int terminator ran out

        def act(self, action, tag):
            kind = action[0]
            if kind == "push":
                self.push(payload("<%s>" % tag, action[1]))
            elif kind == "push_empty":
                self.push(b"")
            elif kind == "push_bytearray":
                buf = bytearray(payload("[%s]" % tag, action[1]))
                self.push(buf)
                buf[:] = b"#" * len(buf)  # what was pushed must not change
            elif kind == "push_memoryview":
                buf = bytearray(payload("{%s}" % tag, action[1]))
                self.push(memoryview(buf))
                buf[:] = b"%" * len(buf)
            elif kind == "simple_producer":
                self.push_with_producer(
                    chat.simple_producer(payload("(%s)" % tag, action[1]), action[2])
                )
            elif kind == "log_producer":
                self.push_with_producer(LogProducer(log, tag, *action[1:]))
            elif kind == "send":
                log.append(("send", self.send(payload("s%s;" % tag, action[1]))))
            elif kind == "socket_send":
                log.append(("socket.send", self.socket.send(payload("S%s;" % tag, action[1]))))
            elif kind == "sendall":
                self.socket.sendall(payload("A%s;" % tag, action[1]))
            elif kind == "initiate_send":
                self.initiate_send()
            elif kind == "discard":
                self.discard_buffers()
            elif kind == "close_when_done":
                self.close_when_done()
            elif kind == "append_none":
                self.producer_fifo.append(None)
            elif kind == "fifo_len":
                log.append(("fifo_len", len(self.producer_fifo)))
            elif kind == "writable":
                log.append(("writable", bool(self.writable())))
            elif kind == "raise":
                raise KeyError(tag)
            elif kind == "term_int":
                self.set_terminator(action[1])
            elif kind == "term_crlf":
                self.set_terminator(b"\r\n")
            elif kind == "term_nl":
                self.set_terminator(b"\n")
            elif kind == "close":
                self.close()

        def handle_error(self):
            log.append(("error", sys.exc_info()[0].__name__))
            if program["close_on_error"]:
                self.close()

        def handle_close(self):
            log.append(("handle_close",))
            self.close()

    return Handler


def drain(peer):
    got = []
    while True:
        try:
            data = peer.recv(1 << 16)
        except BlockingIOError:
            break
        except ConnectionResetError:  # closed with input it had not read
            got.append(b"<RST>")
            break
        if not data:
            got.append(b"<EOF>")
            break
        got.append(data)
    return b"".join(got)


def run(core, chat, program, chunks, mode):
    """One program on one implementation: the log and the peer's bytes per step."""
    log, steps = [], []
    cls = handler_class(core, chat, program, log)
    if mode is not None:
        cls.ac_batch_output = mode
    chan_map = {}
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    fd = ours.fileno()
    cls(ours, chan_map)
    del ours  # the channel holds the only reference, as after accept()
    try:
        for chunk in chunks + [b""] * 2:
            if chunk:
                try:
                    peer.sendall(chunk)
                except OSError as e:  # the channel closed its end
                    steps.append(type(e).__name__)
            for _ in range(3):
                core.loop(timeout=0, map=chan_map, count=1)
                steps.append(drain(peer))
        # Whether the channel is still in its map (its fd number depends on
        # what else the process has open: another test's sockets that the
        # collector has not freed yet).
        return log, steps, [k == fd for k in chan_map]
    finally:
        core.close_all(chan_map, ignore_all=True)
        peer.close()


def check_program(seed):
    rng = random.Random(seed)
    program = random_program(rng)
    chunks = random_input(rng)
    want = run(REF_ASYNCORE, REF_ASYNCHAT, program, chunks, None)
    for mode in MODES:
        got = run(asyncore, asynchat, program, chunks, mode)
        if got != want:
            pytest.fail(
                "seed %d, ac_batch_output=%r differs from CPython\nprogram=%r\nchunks=%r\n"
                "CPython: %r\nours:    %r" % (seed, mode, program, chunks, want, got)
            )


@pytest.mark.parametrize("block", range(10))
def test_random_programs_match_cpython(block):
    per_block = PROGRAMS // 10
    for i in range(per_block):
        check_program(SEED + block * per_block + i)
