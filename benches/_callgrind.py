"""Instruction counts under valgrind's callgrind, for the scripts beside this one.

``call_overhead.py`` and ``instructions.py`` both run a Python snippet under
callgrind twice, doing N1 and then N2 units of work, and divide the difference of
the totals by N2 - N1, so that start-up and import costs cancel out.
"""

import shutil
import sys
from pathlib import Path


def have_valgrind() -> bool:
    """Whether valgrind is on PATH; says so on stderr when it is not."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return False
    return True


def pair(text: str) -> tuple[int, int]:
    """``"N1,N2"`` as two numbers."""
    n1, n2 = (int(n) for n in text.split(","))
    return n1, n2


def command(script: str, out: Path) -> list[str]:
    """This interpreter running `script` under callgrind, its totals written to `out`."""
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        script,
    ]


def total(out: Path) -> int:
    """The instruction total (Ir) callgrind wrote to `out`."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def per_unit(a: int, b: int, n1: int, n2: int) -> float:
    """Instructions per unit of work from the totals of N1 and N2 units."""
    return (b - a) / (n2 - n1)
