"""Mutation check of the memory layout's guards (tests/test_memory_layout.py).

Removes each guard in turn, rebuilds the extension in the current environment
(`maturin develop`, a debug build), runs tests/test_memory_layout.py, and puts
the source back. Every mutation must make a test fail. Not run by the test
command (one build per mutation); run it after changing these guards:

    python tools/mutate_layout.py

It prints one line per mutation: CAUGHT (with the failing tests) or NOT CAUGHT,
and rebuilds the unmutated extension at the end. Exit status 1 if any
mutation was not caught.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, text that must occur exactly once, replacement)
MUTATIONS = {
    "same fifo set again keeps its owner": (
        "src/channel.rs",
        "if let (false, Ok(f)) = (old.is(value), old.bind(value.py()).cast::<Fifo>())",
        "if let (_, Ok(f)) = (old.is(value), old.bind(value.py()).cast::<Fifo>())",
    ),
    "disown only by the owner": (
        "src/fifo.rs",
        "if owner.as_ref().is_some_and(|o| o.id == id) {",
        "if owner.is_some() {",
    ),
    "dict released only if nothing else holds it": (
        "src/channel.rs",
        "            && pyo3::ffi::Py_REFCNT(dict) == 1\n",
        "",
    ),
    "dict released only if empty": (
        "src/channel.rs",
        "            && pyo3::ffi::PyDict_Size(dict) == 0\n",
        "",
    ),
}


def build():
    subprocess.run(["maturin", "develop", "-q"], cwd=ROOT, check=True, capture_output=True)


def main():
    missed = 0
    for name, (path, old, new) in MUTATIONS.items():
        src = ROOT / path
        text = src.read_text()
        if text.count(old) != 1:
            sys.exit(f"{name}: the text to mutate is not in {path} exactly once")
        src.write_text(text.replace(old, new))
        try:
            build()
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:randomly",
                    "-rf",
                    "tests/test_memory_layout.py",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            src.write_text(text)
        failed = [ln.split()[1] for ln in run.stdout.splitlines() if ln.startswith("FAILED")]
        if run.returncode and failed:
            print(f"CAUGHT      {name}: {', '.join(failed)}")
        else:
            missed += 1
            print(f"NOT CAUGHT  {name}")
    build()
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
