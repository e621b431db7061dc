"""Runs a representative subset of the tests under valgrind's memcheck.

The subset exercises every part of the extension that handles memory by hand or holds
references for the garbage collector: the collector's traverse and clear of every class
(test_reliability_gc.py, its soak run shortened), handler errors and the exception state
(test_reliability_handler_errors.py), map changes during a pass and fd reuse
(test_reliability_map_mutation.py), the dispatcher/loop basics with direct syscalls
(test_asyncore_own.py), and the instance dict a channel drops and the weak link from a
fifo to its channel (test_memory_layout.py).

The interpreter runs with PYTHONMALLOC=malloc (memcheck then sees every allocation) and compiles
every module from source (an empty PYTHONPYCACHEPREFIX): CPython 3.11 reads .pyc headers with
int.from_bytes, whose zero ints carry an uninitialised digit that memcheck reports.
``valgrind-python.supp`` (tests/ or tools/) silences CPython's own reports of that kind
(see docs/reliability.rst).

The run fails (exit status 1) on any error that is not suppressed and either involves the
extension (a frame in ``_core*.so``, in the error's stack or in the stacks of the block it
names: where it was allocated or freed) or is of a kind CPython itself never produces here
(invalid read/write/free, mismatched free, overlapping copy, bad syscall argument). Other
unsuppressed reports (CPython's own uninitialised-value reports outside the extension) are
listed but do not fail the run. Without valgrind the script says so and exits 0, unless
ASYNCORE_RS_MEMCHECK=required.

    python tools/memcheck.py                 # the subset (about 3 minutes on 2 CPUs)
    python tools/memcheck.py tests/test_x.py # other tests; pytest arguments pass through
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = [
    "tests/test_reliability_gc.py",
    "tests/test_reliability_handler_errors.py",
    "tests/test_reliability_map_mutation.py",
    "tests/test_asyncore_own.py",
    "tests/test_memory_layout.py",
]
ALWAYS_FATAL = (
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "Source and destination overlap",
    "Syscall param",
    "Argument 'size' of function",
)


def suppressions():
    for d in ("tools", "tests"):
        p = ROOT / d / "valgrind-python.supp"
        if p.exists():
            return p
    raise SystemExit("memcheck: no valgrind-python.supp in tools/ or tests/")


def errors(log_text):
    """The error records of a valgrind log: lists of lines without the ==pid== prefix."""
    records, cur = [], []
    for line in log_text.splitlines():
        line = re.sub(r"^==\d+== ?", "", line)
        if not line.strip():
            if cur:
                records.append(cur)
            cur = []
        else:
            cur.append(line)
    if cur:
        records.append(cur)
    # Error records start with a description line, then "   at 0x..." frames.
    return [r for r in records if len(r) > 1 and r[1].lstrip().startswith("at 0x")]


def is_ours(record):
    return any(re.search(r"_core[.\w-]*\.so|asyncore_rs", line) for line in record)


def main(argv):
    if shutil.which("valgrind") is None:
        msg = "memcheck: valgrind is not installed"
        if os.environ.get("ASYNCORE_RS_MEMCHECK") == "required":
            raise SystemExit(msg)
        print(msg + "; skipped (ASYNCORE_RS_MEMCHECK=required makes this an error)")
        return 0
    tests = argv or SUBSET
    with tempfile.TemporaryDirectory(prefix="memcheck-") as tmp:
        log = Path(tmp) / "memcheck.log"
        env = dict(
            os.environ,
            PYTHONMALLOC="malloc",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"),
            ASYNCORE_RS_SOAK=os.environ.get("ASYNCORE_RS_SOAK", "600"),
            ASYNCORE_RS_UNDER_VALGRIND="1",
        )
        cmd = [
            "valgrind",
            "--tool=memcheck",
            "--leak-check=no",
            "--num-callers=40",
            "--suppressions=%s" % suppressions(),
            "--log-file=%s" % log,
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "--timeout=1800",
            *tests,
        ]
        print("memcheck:", " ".join(cmd), flush=True)
        t0 = time.monotonic()
        tests_rc = subprocess.call(cmd, cwd=ROOT, env=env)
        secs = time.monotonic() - t0
        text = log.read_text()
    found = errors(text)
    fatal = [r for r in found if is_ours(r) or r[0].startswith(ALWAYS_FATAL)]
    summary = re.findall(
        r"ERROR SUMMARY: (\d+) errors from (\d+) contexts \(suppressed: (\d+)", text
    )
    for r in fatal:
        print("\n".join(["memcheck: error in or through the extension:", *r]) + "\n")
    others = len(found) - len(fatal)
    print(
        "memcheck: %.0f s, tests exit status %d; %d error contexts, %d in or through the "
        "extension, %d others (CPython's own); valgrind summary (errors, contexts, "
        "suppressed): %s" % (secs, tests_rc, len(found), len(fatal), others, summary[-1:])
    )
    for r in [r for r in found if r not in fatal][:5]:
        print("memcheck: (not failing) " + " | ".join(x.strip() for x in r[:6]))
    return 1 if fatal or tests_rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
