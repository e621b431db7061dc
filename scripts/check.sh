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

step "Load generator crate (benches/loadgen)"
cargo fmt --check --manifest-path benches/loadgen/Cargo.toml
cargo clippy --quiet --all-targets --manifest-path benches/loadgen/Cargo.toml -- -D warnings
cargo test --quiet --manifest-path benches/loadgen/Cargo.toml

step "Python: ruff"
ruff check .
ruff format --check .

step "Stubs against the runtime (mypy.stubtest)"
python -m mypy.stubtest asyncore_rs --allowlist tests/stubtest-allowlist.txt

step "Docs (Sphinx, warnings are errors)"
python -m sphinx -W -q -b html docs docs/_build/html

step "pytest (ported CPython suites, our own tests, fuzz, benchmark smoke run)"
python -m pytest

step "valgrind memcheck on a representative subset (tools/memcheck.py, about 4 minutes)"
python tools/memcheck.py
