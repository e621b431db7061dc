"""Differential fuzzer for async_chat's terminator scanner and input state machine.

Each generated *program* is a stream cut into chunks, an ac_in_buffer_size, an initial
terminator, and actions that the callbacks perform (set_terminator / assign self.terminator /
discard_buffers / raise) while the stream is being read. It runs on the modules under test
(tests/_impl.py: ours by default, ASYNCORE_RS_TEST_IMPL=stdlib for CPython's) and on the
vendored pure-Python reference (tests/_reference: CPython 3.11's asynchat), and the two call
sequences must be the same: every collect_incoming_data (data, its type, the terminator seen),
every found_terminator, the terminator and ac_in_buffer after each read, handle_close,
handle_error, and any exception that escapes.

Four drivers feed the same program:
  direct       recv() overridden to hand out the chunks (no socket at all)
  handle_read  a socketpair; the test writes each chunk and calls handle_read() until drained
  loop         the same, but asyncore.loop(count=1) does the reading (select mode)
  loop_poll    the same with use_poll=True

find_prefix_at_end() is also compared on random haystack/needle pairs.

Usage:
  python tools/fuzz_scanner.py --seconds 20             # bounded run (atheris if installed)
  python tools/fuzz_scanner.py --engine random --seed 1 --seconds 5
  python tools/fuzz_scanner.py --engine atheris --seconds 60 [corpus_dir]
  python tools/fuzz_scanner.py --replay findings.txt    # re-run saved programs
Exit status: 0 when no difference was found, 1 otherwise (each difference is printed, shrunk,
as a program literal that --replay accepts).
"""

import argparse
import ast
import os
import random
import select
import socket
import sys
import time

# The modules under test and the reference come from the test suite's helpers.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)

from _impl import IMPL  # noqa: E402
from _impl import asynchat as impl_chat  # noqa: E402
from _impl import asyncore as impl_core  # noqa: E402

_reference = None  # set in main(): imported under atheris' instrumentation when it is used

ALPHABET = b"ab\r\n."
TERMINATORS = [
    b"\n",
    b"\r\n",
    b"\r\n.\r\n",
    b"a",
    b"aa",
    b"aba",
    b"abab",
    b"ab.",
    b"..",
    b"\n\n",
    b"",
    None,
    0,
    1,
    2,
    3,
    7,
    50,
    True,
    2**64,
    "\r\n",
    bytearray(b"\r\n"),
]
BUFSIZES = [1, 2, 3, 5, 16, 100, 4096, 65536]
MODES = ["direct", "handle_read", "loop", "loop_poll"]
ACTIONS = ["none", "none", "none", "set", "set", "assign", "discard", "raise"]


class FuzzError(Exception):
    """Raised by a callback when the program says so."""


# ---------------------------------------------------------------------------------------------
# program generation


class RandomSource:
    def __init__(self, rng):
        self.rng = rng

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def bytes(self, n):
        return bytes(self.rng.choice(ALPHABET) for _ in range(n))


class AtherisSource:
    def __init__(self, fdp):
        self.fdp = fdp

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def pick(self, seq):
        return seq[self.fdp.ConsumeIntInRange(0, len(seq) - 1)]

    def bytes(self, n):
        raw = self.fdp.ConsumeBytes(n)
        return bytes(ALPHABET[b % len(ALPHABET)] for b in raw)


def term_from(src):
    if src.int(0, 4) == 0:
        return src.bytes(src.int(1, 4))
    return src.pick(TERMINATORS)


def make_program(src):
    nchunks = src.int(1, 12)
    chunks = [
        src.bytes(src.int(0, 40) if src.int(0, 5) else src.int(0, 600)) for _ in range(nchunks)
    ]
    found = []
    for _ in range(src.int(0, 6)):
        kind = src.pick(ACTIONS)
        found.append((kind, term_from(src)) if kind in ("set", "assign") else (kind,))
    collect = []
    for _ in range(src.int(0, 3)):
        kind = src.pick(["none", "none", "set", "assign", "raise"])
        collect.append((kind, term_from(src)) if kind in ("set", "assign") else (kind,))
    return {
        "mode": src.pick(MODES),
        "bufsize": src.pick(BUFSIZES),
        "bufsize_on": src.pick(["class", "instance"]),
        "use_encoding": src.int(0, 1),
        "initial": term_from(src),
        "chunks": chunks,
        "found": found,
        "collect": collect,
        "eof": bool(src.int(0, 1)),
    }


# ---------------------------------------------------------------------------------------------
# running a program


def _r(v):
    return repr(bytes(v)) if isinstance(v, (bytearray, memoryview)) else repr(v)


def make_chat_class(chat_mod, prog, events):
    base = chat_mod.async_chat

    class Chat(base):
        def __init__(self, sock=None, map=None):
            self.n_found = 0
            self.n_collect = 0
            base.__init__(self, sock, map)

        def _act(self, actions, n):
            if not actions:
                return
            action = actions[n % len(actions)]
            if action[0] == "set":
                self.set_terminator(action[1])
            elif action[0] == "assign":
                self.terminator = action[1]
            elif action[0] == "discard":
                self.discard_buffers()
            elif action[0] == "raise":
                raise FuzzError("raised by the program")

        def collect_incoming_data(self, data):
            events.append(("collect", type(data).__name__, bytes(data), _r(self.get_terminator())))
            self.n_collect += 1
            self._act(prog["collect"], self.n_collect - 1)

        def found_terminator(self):
            events.append(("found", _r(self.get_terminator())))
            self.n_found += 1
            self._act(prog["found"], self.n_found - 1)

        def handle_close(self):
            events.append(("close",))
            self.close()

        def handle_error(self):
            events.append(("error", sys.exc_info()[0].__name__))

    if prog["bufsize_on"] == "class":
        Chat.ac_in_buffer_size = prog["bufsize"]
    Chat.use_encoding = prog["use_encoding"]
    return Chat


def run_program(core_mod, chat_mod, prog):
    events = []
    Chat = make_chat_class(chat_mod, prog, events)

    def state(ch):
        events.append(("state", _r(getattr(ch, "terminator", "<unset>")), bytes(ch.ac_in_buffer)))

    def guarded(fn, ch):
        try:
            fn()
        except Exception as e:
            events.append(("raise", type(e).__name__))
            state(ch)
            return False
        return True

    mode = prog["mode"]
    if mode == "direct":

        class Direct(Chat):
            pending = b""
            eof = False

            def recv(self, n):
                events.append(("recv", n))
                data, self.pending = self.pending[:n], self.pending[n:]
                if not data:
                    self.handle_close()
                return data

        ch = Direct()
        if prog["bufsize_on"] == "instance":
            ch.ac_in_buffer_size = prog["bufsize"]
        ch.set_terminator(prog["initial"])
        for chunk in prog["chunks"]:
            ch.pending += chunk
            while ch.pending:
                if not guarded(ch.handle_read, ch):
                    return events
                state(ch)
        if prog["eof"]:
            if guarded(ch.handle_read, ch):
                state(ch)
        return events

    a, b = socket.socketpair()
    map = {}
    try:
        ch = Chat(a, map)
        if prog["bufsize_on"] == "instance":
            ch.ac_in_buffer_size = prog["bufsize"]
        ch.set_terminator(prog["initial"])
        use_poll = mode == "loop_poll"

        def step():
            if mode == "handle_read":
                ch.handle_read()
            else:
                core_mod.loop(timeout=0, use_poll=use_poll, map=map, count=1)

        for chunk in prog["chunks"]:
            if not chunk:
                continue
            b.sendall(chunk)
            for _ in range(len(chunk) + 2):
                if not select.select([a], [], [], 0)[0]:
                    break
                if not guarded(step, ch):
                    return events
                state(ch)
            else:
                events.append(("stuck",))
                return events
        if prog["eof"]:
            b.close()
            for _ in range(3):
                if not map or a.fileno() < 0:
                    break
                if not guarded(step, ch):
                    return events
                state(ch)
        return events
    finally:
        b.close()
        for obj in list(map.values()):
            obj.close()
        a.close()


def compare(prog):
    """Returns None when both sides agree, else a description of the first difference."""
    want = run_program(_reference[0], _reference[1], prog)
    got = run_program(impl_core, impl_chat, prog)
    if got == want:
        return None
    i = 0
    while i < min(len(got), len(want)) and got[i] == want[i]:
        i += 1
    negative = any(
        ev[0] in ("collect", "found", "state")
        and _negative_int(ev[-1] if ev[0] != "state" else ev[1])
        for ev in want[: i + 1]
    )
    return {
        "index": i,
        "negative_int_terminator": negative,
        "reference": want[i : i + 3],
        "ours": got[i : i + 3],
        "kind": (
            want[i][0] if i < len(want) else "<end>",
            got[i][0] if i < len(got) else "<end>",
        ),
    }


def _negative_int(text):
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return isinstance(v, int) and v < 0


def compare_fpae(src):
    hay = src.bytes(src.int(0, 12))
    needle = src.bytes(src.int(0, 6))
    want = _reference[1].find_prefix_at_end(hay, needle)
    got = impl_chat.find_prefix_at_end(hay, needle)
    if want != got:
        return {"haystack": hay, "needle": needle, "reference": want, "ours": got}
    return None


# ---------------------------------------------------------------------------------------------
# shrinking and reporting


def shrink(prog, budget=400):
    """Greedy: drop chunks, actions, bytes, while the programs still disagree."""
    best = prog
    tries = 0

    def still_differs(p):
        nonlocal tries
        tries += 1
        try:
            return compare(p) is not None
        except Exception:
            return False

    changed = True
    while changed and tries < budget:
        changed = False
        for key in ("chunks", "found", "collect"):
            i = 0
            while i < len(best[key]) and tries < budget:
                cand = dict(best)
                cand[key] = best[key][:i] + best[key][i + 1 :]
                if still_differs(cand):
                    best, changed = cand, True
                else:
                    i += 1
        for i in range(len(best["chunks"])):
            chunk = best["chunks"][i]
            for cut in (len(chunk) // 2, 1):
                while len(chunk) > cut and tries < budget:
                    for cand_chunk in (chunk[cut:], chunk[:-cut]):
                        cand = dict(best)
                        cand["chunks"] = list(best["chunks"])
                        cand["chunks"][i] = cand_chunk
                        if still_differs(cand):
                            best, chunk, changed = cand, cand_chunk, True
                            break
                    else:
                        break
        for key, simple in (("bufsize", 65536), ("eof", False), ("bufsize_on", "class")):
            if best[key] != simple and tries < budget:
                cand = dict(best, **{key: simple})
                if still_differs(cand):
                    best, changed = cand, True
    return best


class Report:
    def __init__(self, out):
        self.out = out
        self.seen = {}
        self.programs = 0
        self.fpae = 0
        self.by_mode = dict.fromkeys(MODES, 0)

    def finding(self, prog, diff):
        sig = (prog["mode"], diff["kind"], diff["negative_int_terminator"])
        if sig in self.seen:
            self.seen[sig][0] += 1
            return
        small = shrink(prog)
        sdiff = compare(small) or diff
        self.seen[sig] = [1, small, sdiff]
        text = "DIFFERENCE %s\n  program: %r\n  first difference at event %d:\n" % (
            sig,
            small,
            sdiff["index"],
        )
        text += "    reference: %r\n    ours:      %r\n" % (sdiff["reference"], sdiff["ours"])
        print(text, flush=True)
        if self.out:
            with open(self.out, "a") as f:
                f.write(repr(small) + "\n")

    def summary(self, seconds):
        print(
            "fuzz_scanner: impl=%s, %d programs (%s), %d find_prefix_at_end pairs in %.1f s; "
            "%d distinct difference(s)"
            % (
                IMPL,
                self.programs,
                ", ".join("%s %d" % kv for kv in self.by_mode.items()),
                self.fpae,
                seconds,
                len(self.seen),
            )
        )
        for sig, (count, _small, _diff) in self.seen.items():
            print("  %s: %d program(s)" % (sig, count))


def one_input(src, report):
    prog = make_program(src)
    report.programs += 1
    report.by_mode[prog["mode"]] += 1
    diff = compare(prog)
    if diff is not None:
        report.finding(prog, diff)
    fd = compare_fpae(src)
    report.fpae += 1
    if fd is not None:
        key = ("find_prefix_at_end",)
        if key not in report.seen:
            print("DIFFERENCE find_prefix_at_end: %r" % (fd,), flush=True)
            report.seen[key] = [0, None, fd]
        report.seen[key][0] += 1


def run_random(seconds, seed, report, max_programs=None):
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if max_programs is not None and report.programs >= max_programs:
            break
        one_input(RandomSource(rng), report)


def run_atheris(seconds, report, extra_args):
    import atheris

    start = time.monotonic()

    def finish():
        report.summary(time.monotonic() - start)
        sys.stdout.flush()
        # libFuzzer would end the process with exit() without running Python's clean-up
        os._exit(1 if report.seen else 0)

    def test_one(data):
        if time.monotonic() - start > seconds:
            finish()
        one_input(AtherisSource(atheris.FuzzedDataProvider(data)), report)

    atheris.Setup([sys.argv[0], "-max_total_time=%d" % (seconds + 30), *extra_args], test_one)
    atheris.Fuzz()
    finish()


def load_reference(instrument):
    global _reference
    if instrument:
        import atheris

        with atheris.instrument_imports():
            from _reference import _ref_asynchat, _ref_asyncore
    else:
        from _reference import _ref_asynchat, _ref_asyncore
    _reference = (_ref_asyncore, _ref_asynchat)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-programs", type=int, default=None)
    p.add_argument("--out", default=None, help="append shrunk differing programs to this file")
    p.add_argument("--replay", default=None, help="file with one program literal per line")
    args, extra = p.parse_known_args(argv)

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    load_reference(engine == "atheris" and not args.replay)
    report = Report(args.out)

    if args.replay:
        with open(args.replay) as f:
            for line in f:
                if line.strip():
                    prog = ast.literal_eval(line)
                    diff = compare(prog)
                    print("%s -> %s" % (line.strip()[:200], "same" if diff is None else diff))
                    if diff is not None:
                        sig = (prog["mode"], diff["kind"], diff["negative_int_terminator"])
                        report.seen[sig] = [1, prog, diff]
        return 1 if report.seen else 0

    start = time.monotonic()
    if engine == "atheris":
        run_atheris(int(max(1, args.seconds)), report, extra)
    else:
        seed = args.seed if args.seed is not None else random.randrange(2**32)
        print("fuzz_scanner: engine=random seed=%d" % seed, flush=True)
        run_random(args.seconds, seed, report, args.max_programs)
        report.summary(time.monotonic() - start)
    return 1 if report.seen else 0


if __name__ == "__main__":
    sys.exit(main())
