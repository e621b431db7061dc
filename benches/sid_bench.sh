#!/usr/bin/env bash
# The benchmark suite on a real Debian CPython 3.X (default 3.14), for docs/benchmarks.rst.
#
#   sudo benches/sid_bench.sh [3.14] [bench options...]
#   sudo benches/sid_bench.sh 3.14 --idle-memory [idle_memory.py options...]
#
# Runs in the Debian sid root that scripts/pythons.py creates and keeps in
# /var/cache/asyncore-rs/sid ($ASYNCORE_RS_SID), holding its lock (sid.lock) the whole
# time, so that it never shares the root with another user of it:
#  1. builds the wheel for python3.X inside the root (maturin build --release -i python3.X:
#     a version-specific build where Cargo.toml asks for one), with the host's Rust
#     toolchain bind-mounted and cargo offline (Cargo.lock's crates must be cached);
#  2. installs it in a fresh venv there, with uvloop;
#  3. puts pyasyncore/pyasynchat in a directory of their own for --pure-dir (pip under
#     3.13+ may refuse this network's TLS CA, so the host's pip downloads the wheels);
#  4. runs `python -m asyncore_rs bench --write-docs`, which saves the report in
#     docs/bench-results/py3.X.json and rewrites docs/benchmarks.rst.
# The chart needs matplotlib, which the root does not have: afterwards, on the host,
#   python -m asyncore_rs bench --docs-only
# draws every chart from the saved reports and rewrites the page once more.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYV=${1:-3.14}
shift || true
SID=${ASYNCORE_RS_SID:-/var/cache/asyncore-rs/sid}
HOST_PY=${PYTHON:-python3}
[ -x "$SID/usr/bin/python$PYV" ] || { echo "no $SID/usr/bin/python$PYV (scripts/pythons.py list creates the root)" >&2; exit 2; }
MATURIN=$(command -v maturin) || { echo "maturin is not on PATH" >&2; exit 2; }

WHEELS=$(mktemp -d /tmp/asyncore-rs-sid-bench.XXXXXX)
trap 'rm -rf "$WHEELS"' EXIT
"$HOST_PY" -m pip download -q --disable-pip-version-check -d "$WHEELS" --only-binary=:all: \
    --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    pyasyncore pyasynchat
"$HOST_PY" -m pip download -q --disable-pip-version-check -d "$WHEELS" --only-binary=:all: \
    --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 uvloop \
    || echo "no uvloop wheel for $PYV: the run goes without it" >&2

exec 9>"$SID.lock"
flock 9
MOUNTS=()
mount_in() {  # mount_in SRC TARGET [mount options...]
    local src=$1 target=$SID$2
    shift 2
    mkdir -p "$target"
    mount "$@" "$src" "$target"
    MOUNTS=("$target" "${MOUNTS[@]}")
}
cleanup() {
    for m in "${MOUNTS[@]}"; do umount -l "$m" || true; done
    rm -rf "$WHEELS" "$SID"/tmp/bench-target "$SID"/tmp/bench-dist "$SID"/tmp/bench-venv \
        "$SID"/tmp/bench-pure "$SID"/opt/bench-bin
}
trap cleanup EXIT
mount_in proc /proc -t proc
mount_in /dev /dev --bind
mount_in "$ROOT" /bench-src --bind
mount_in "$WHEELS" /bench-wheels --bind
mount_in "${CARGO_HOME:-$HOME/.cargo}" /root/.cargo --bind
mount_in "${RUSTUP_HOME:-$HOME/.rustup}" /root/.rustup --bind
mkdir -p "$SID/opt/bench-bin"
cp "$MATURIN" "$SID/opt/bench-bin/maturin"

shown="sudo benches/sid_bench.sh $PYV${*:+ $*}"
chroot "$SID" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/opt/bench-bin:/usr/local/bin:/usr/bin:/bin \
    CARGO_NET_OFFLINE=true CARGO_TARGET_DIR=/tmp/bench-target \
    PYV="$PYV" SHOWN="$shown" /bin/bash -euo pipefail -c '
cd /bench-src
rm -rf /tmp/bench-dist /tmp/bench-venv /tmp/bench-pure
maturin build --release -i "python$PYV" -o /tmp/bench-dist
"python$PYV" -m venv /tmp/bench-venv
/tmp/bench-venv/bin/pip install -q --no-index --find-links /tmp/bench-dist asyncore-rs
/tmp/bench-venv/bin/pip install -q --no-index --find-links /bench-wheels uvloop || true
/tmp/bench-venv/bin/pip install -q --no-index --find-links /bench-wheels \
    --target /tmp/bench-pure pyasyncore pyasynchat
cd /tmp
if [ "${1:-}" = --idle-memory ]; then
    shift
    exec /tmp/bench-venv/bin/python /bench-src/benches/idle_memory.py --pure-dir /tmp/bench-pure "$@"
fi
/tmp/bench-venv/bin/python -m asyncore_rs bench --pure-dir /tmp/bench-pure --write-docs \
    --docs-file /bench-src/docs/benchmarks.rst --shown-command "$SHOWN" "$@"
' bench "$@"
