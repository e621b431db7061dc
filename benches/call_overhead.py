"""Instructions per call of a few of our methods from Python, under callgrind.

Measures what a build's calling convention costs (version-specific build against
the ``abi3`` feature build, issue 14 item 3): each case runs N1 and then N2 calls in
a fresh interpreter under valgrind's callgrind and prints
(Ir(N2) - Ir(N1)) / (N2 - N1), so start-up cancels out. The loop's own bytecode is
counted too; the ``pass`` case (a Python no-op function) shows what that is.

    python benches/call_overhead.py
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _callgrind

CASES = {
    # the loop alone, then a Python function: what the figures below include
    "(loop only)": ("", "pass"),
    "python_noop()": ("def f(): pass", "f()"),
    "readable()": ("d = asyncore.dispatcher()", "d.readable()"),
    "writable() [dispatcher_with_send]": (
        "d = asyncore.dispatcher_with_send(); d.connected = False",
        "d.writable()",
    ),
    "getattr connected": ("d = asyncore.dispatcher()", "d.connected"),
    "set_terminator(t) [async_chat]": (
        "d = asynchat.async_chat(); t = b'\\n'",
        "d.set_terminator(t)",
    ),
}

SCRIPT = """
from asyncore_rs import asynchat, asyncore
{setup}
def run(n):
    for _ in range(n):
        {stmt}
run({n})
"""


def count(setup: str, stmt: str, n: int, workdir: Path) -> int:
    out = workdir / f"cg.{n}"
    subprocess.run(
        _callgrind.command(SCRIPT.format(setup=setup, stmt=stmt, n=n), out),
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return _callgrind.total(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="20000,120000", help="N1,N2")
    args = parser.parse_args(argv)
    if not _callgrind.have_valgrind():
        return 2
    n1, n2 = _callgrind.pair(args.calls)
    from asyncore_rs import _core

    print(f"{_core.__file__}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (setup, stmt) in CASES.items():
            a = count(setup, stmt, n1, Path(tmp))
            b = count(setup, stmt, n2, Path(tmp))
            print(f"{name:<36} {_callgrind.per_unit(a, b, n1, n2):8.0f} instructions per call")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
