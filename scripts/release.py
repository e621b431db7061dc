#!/usr/bin/env python3
"""Build the release: an sdist and manylinux2014 (glibc 2.17) wheels into dist/.

    python scripts/release.py            # every supported version, x86_64 and aarch64
    python scripts/release.py --check    # and nothing else: auditwheel show on dist/*.whl

Wheels are version-specific (cp311 ... cp315; the extension uses CPython's non-limited
API), linked with zig against glibc 2.17 (``maturin build --release --zig --compatibility
manylinux2014``), so they install on RHEL/CentOS 7+, Debian 9+, Ubuntu 18.04+ and Amazon
Linux 2.

* x86_64: built with each real interpreter, found or created by scripts/pythons.py
  (3.11 and 3.12/3.13 from this machine, 3.13-3.15 from the Debian sid root);
* aarch64: cross-compiled on this machine by zig (``rustup target add
  aarch64-unknown-linux-gnu``); maturin knows each CPython's build configuration, so no
  aarch64 interpreter is needed.

Needs: maturin, ziglang and auditwheel (the ``test`` extra), rustup, and root for the sid
root (without it, the versions it provides are skipped and said so).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pythons  # noqa: E402 - the sibling script

ROOT = pythons.ROOT
DIST = ROOT / "dist"
VERSIONS = ("3.11", *pythons.VERSIONS)
AARCH64 = "aarch64-unknown-linux-gnu"


def say(msg: str) -> None:
    print("[release] " + msg, flush=True)


def interpreters() -> list[pythons.Interp]:
    found = []
    me = "%d.%d" % sys.version_info[:2]
    for v in VERSIONS:
        if v == me and sys.implementation.name == "cpython":
            found.append(pythons.Interp(v, "host", sys.executable))
        elif v == "3.11":
            interp = pythons.find_host(v)
            if interp:
                found.append(interp)
            else:
                say("SKIP x86_64 cp311: no Python 3.11 on this machine")
    rest = [v for v in VERSIONS if v not in {i.version for i in found}]
    found += pythons.find_all(tuple(v for v in rest if v in pythons.VERSIONS))
    return found


def build_x86_64(interp: pythons.Interp) -> Path:
    out = pythons.WORK / ("release-" + interp.tag)
    wheel = pythons.build_wheel(interp, out)
    dest = DIST / wheel.name
    shutil.copy(wheel, dest)
    return dest


def build_aarch64(versions) -> list[Path]:
    if shutil.which("rustup"):
        subprocess.run(["rustup", "target", "add", AARCH64], check=True, capture_output=True)
    out = pythons.WORK / "release-aarch64"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    zd = pythons.zig_dir()
    if zd is None:
        raise SystemExit("cross-compiling for aarch64 needs zig: pip install ziglang")
    env["PATH"] = zd + os.pathsep + env["PATH"]
    built = []
    for v in versions:
        # one interpreter per call: a version maturin does not know fails alone
        cmd = [
            *pythons.maturin_cmd(),
            "build",
            "-q",
            *pythons.release_build_args(require_zig=True),
            "--target",
            AARCH64,
            "-i",
            "python" + v,
            "-o",
            str(out),
        ]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
        if proc.returncode != 0:
            say("FAILED aarch64 cp%s (exit %d)" % (v.replace(".", ""), proc.returncode))
            continue
        say("built aarch64 cp%s in %.0f s" % (v.replace(".", ""), time.monotonic() - t0))
    for wheel in sorted(out.glob("*.whl")):
        dest = DIST / wheel.name
        shutil.copy(wheel, dest)
        built.append(dest)
    return built


def sdist() -> Path:
    out = pythons.WORK / "release-sdist"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([*pythons.maturin_cmd(), "sdist", "-o", str(out)], cwd=ROOT, check=True)
    (path,) = out.glob("*.tar.gz")
    dest = DIST / path.name
    shutil.copy(path, dest)
    return dest


def audit(wheels) -> bool:
    """auditwheel show on each wheel: every one must be manylinux_2_17 (manylinux2014)."""
    ok = True
    for wheel in wheels:
        proc = subprocess.run(
            [sys.executable, "-m", "auditwheel", "show", str(wheel)],
            capture_output=True,
            text=True,
            check=False,
        )
        text = " ".join(proc.stdout.split())
        good = (
            proc.returncode == 0
            and 'consistent with the following platform tag: "manylinux_2_17_' in text
        )
        ok &= good
        say(("ok    " if good else "BAD   ") + wheel.name)
        print("      " + text)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only audit the wheels in dist/")
    parser.add_argument("--no-aarch64", action="store_true", help="x86_64 wheels only")
    args = parser.parse_args()
    if not args.check:
        t0 = time.monotonic()
        if DIST.exists():
            shutil.rmtree(DIST)
        DIST.mkdir()
        pythons.release_build_args(require_zig=True)  # fail early without zig
        made = [sdist()]
        interps = interpreters()
        failed = []
        for interp in interps:
            try:
                made.append(build_x86_64(interp))
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                failed.append(interp.version)
                say("FAILED x86_64 %s: %s" % (interp, exc))
        if not args.no_aarch64:
            made += build_aarch64(VERSIONS)
        say("built %d files in %.0f s" % (len(made), time.monotonic() - t0))
        missing = [v for v in VERSIONS if v not in {i.version for i in interps}]
        if missing:
            say("no x86_64 wheel for %s (no interpreter here)" % ", ".join(missing))
        if failed:
            return 1
    wheels = sorted(DIST.glob("*.whl"))
    for path in sorted(DIST.iterdir()):
        say("dist/%s (%d KiB)" % (path.name, path.stat().st_size // 1024))
    return 0 if wheels and audit(wheels) else 1


if __name__ == "__main__":
    sys.exit(main())
