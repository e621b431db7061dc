#!/usr/bin/env bash
# Every check the project has, in the order a failure is cheapest to find.
# The README's test command runs it after installing the package and the
# test dependencies; CI (.ci/run) runs that command verbatim.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "src/ layering (every crate:: reference points down; tools/check_layers.py)"
python tools/check_layers.py

step "Rust: format, lints (clippy pedantic), unit tests"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --quiet

step "Rust: clippy for macOS, FreeBSD and Windows (compiled, not run: the portable poller)"
# pyo3 needs the target's Python version to cross-check (no interpreter or
# libpython of the target is needed for `cargo clippy`).
cross_py=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
for target in x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd x86_64-pc-windows-msvc; do
    if ! command -v rustup >/dev/null; then
        echo "SKIPPED: clippy --target $target (no rustup to add the target with)"
        continue
    fi
    if ! rustup target list --installed | grep -qx "$target" \
        && ! rustup target add "$target" >/dev/null 2>&1; then
        echo "SKIPPED: clippy --target $target (rustup target add $target failed: offline?)"
        continue
    fi
    echo "clippy --target $target"
    PYO3_CROSS_PYTHON_VERSION="$cross_py" cargo clippy --quiet --target "$target" --all-targets -- -D warnings
done

step "Rust: clippy for CPython 3.14 (compiled, not run: the cfg(Py_3_12) branches the host's 3.11 skips)"
# src/dict_watch.rs watches instance dicts on 3.12+ only; the suite runs it on the
# real interpreters (.ci/run), this lints it wherever the host Python is older.
CARGO_TARGET_DIR=target/py314 PYO3_CONFIG_FILE="$PWD/tools/pyo3-3.14.cfg" \
    cargo clippy --quiet -- -D warnings

step "Rust: clippy for a free-threaded CPython 3.14t (compiled, not run: the cfg(Py_GIL_DISABLED) branches)"
# Not supported (docs/install.rst), but src/gil_cell.rs and src/type_cache.rs have a
# branch for it that no other build compiles; pyo3 reads the interpreter from the file.
CARGO_TARGET_DIR=target/free-threaded PYO3_CONFIG_FILE="$PWD/tools/pyo3-free-threaded.cfg" \
    cargo clippy --quiet -- -D warnings

step "Python: ruff"
ruff check .
ruff format --check .

step "Stubs against the runtime (mypy.stubtest)"
python -m mypy.stubtest asyncore_rs --allowlist tools/stubtest-allowlist.txt

step "Docs (Sphinx, warnings are errors)"
python -m sphinx -W -q -b html docs docs/_build/html

step "pytest (ported CPython suites, our own tests, fuzz, benchmark smoke run)"
python -m pytest

if [ "$(uname -s)" = Linux ]; then
    # The portable poller (the polling crate's public API: kqueue on macOS and
    # the BSDs, IOCP on Windows) is the only one there; on Linux it is chosen
    # with ASYNCORE_RS_POLLER, so it runs the whole suite here too.
    step "pytest again, on the portable poller (ASYNCORE_RS_POLLER=portable)"
    ASYNCORE_RS_POLLER=portable python -c \
        'from asyncore_rs import _core; n = _core._poller_name(); assert n == "portable", n'
    ASYNCORE_RS_POLLER=portable python -m pytest
fi

step "valgrind memcheck on a representative subset (tools/memcheck.py, about 4 minutes)"
python tools/memcheck.py

step "Real CPython 3.12-3.15: the release-built wheel installed in a fresh venv of each, pytest"
# Finds or creates the interpreters (pyenv, PATH, a cached Debian sid root) and says what
# it skips; ASYNCORE_RS_PYTHONS=none skips this step, =3.14 limits it.
python scripts/pythons.py test
