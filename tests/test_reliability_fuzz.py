"""Runs the differential scanner fuzzer (tools/fuzz_scanner.py) for about 5 seconds.

Seeded random search, so a failure reproduces with the seed printed in the output; the longer
runs (atheris, other seeds) are described in docs/reliability.rst.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZER = os.path.join(ROOT, "tools", "fuzz_scanner.py")


def test_scanner_fuzz_finds_no_difference(tmp_path):
    out = tmp_path / "findings.txt"
    proc = subprocess.run(
        [sys.executable, FUZZER, "--engine", "random", "--seed", "20240601", "--seconds", "5"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "0 distinct difference(s)" in proc.stdout
    assert " 0 programs" not in proc.stdout
