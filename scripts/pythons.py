#!/usr/bin/env python3
"""Real CPython 3.12-3.15 for the test command and the release build.

    python scripts/pythons.py list   # find or create the interpreters, say which
    python scripts/pythons.py test   # for each: build the wheel as a release does,
                                     # install it in a fresh venv, run tests/ against it

Where each interpreter comes from, in order of preference:

* this machine: ``~/.pyenv/versions/3.X.*`` (``$PYENV_ROOT``), then ``python3.X`` on PATH;
* a Debian sid root (debootstrap, ``--variant=minbase``) kept in
  ``$ASYNCORE_RS_SID`` (default ``/var/cache/asyncore-rs/sid``), created on first use
  and reused afterwards. Creating and entering it needs root, ``debootstrap`` (installed
  with apt-get when missing) and the Debian archive.

Whatever cannot be had is reported on one line and skipped; the rest still runs.
``ASYNCORE_RS_PYTHONS=3.12,3.14`` limits the versions, ``ASYNCORE_RS_PYTHONS=none``
skips the step.

Network notes (they shape the code below): pip under 3.13+ rejects a TLS interception
CA that older pips accept, so the test dependencies are downloaded by the pip running
this script (``pip download --python-version ...``) into a cache, and installed in the
target venvs with ``--no-index``. sid's Release file may be past its Valid-Until date,
so apt in the root is told not to check it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("3.12", "3.13", "3.14", "3.15")
CACHE = Path(os.environ.get("ASYNCORE_RS_CACHE", "/var/cache/asyncore-rs"))
SID = Path(os.environ.get("ASYNCORE_RS_SID", str(CACHE / "sid")))
MIRROR = os.environ.get("ASYNCORE_RS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# the sid versions worth installing (3.12 has left sid)
SID_VERSIONS = ("3.13", "3.14", "3.15")
# what the tests need besides the wheel (uvloop only where a wheel exists); pyftpdlib
# needs pyasyncore and pyasynchat on 3.12+, which our finder must (and does) outrank
TEST_DEPS = ("pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "pyasyncore", "pyasynchat")
OPTIONAL_TEST_DEPS = ("uvloop",)
# pure-Python packages published as sdists only: the host's pip builds their wheel once
PURE_SDIST_DEPS = ("pyftpdlib>=2.0,<3",)
TEST_REQUIREMENTS = (*TEST_DEPS, *PURE_SDIST_DEPS)
WORK = ROOT / "target" / "pythons"
# where things appear inside the sid root while it is in use
IN_SID_SRC = "/src"
IN_SID_WHEELS = "/mnt/asyncore-rs-wheels"
IN_SID_ZIG = "/opt/ziglang"
IN_SID_CA = "/etc/asyncore-rs-ca.crt"


def say(msg: str) -> None:
    print("[pythons] " + msg, flush=True)


def run(cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=check, **kw)


# --------------------------------------------------------------------------- interpreters


@dataclass
class Interp:
    version: str  # "3.14"
    where: str  # "host" or "sid"
    exe: str  # path, as seen where it runs

    @property
    def tag(self) -> str:
        return "cp" + self.version.replace(".", "")

    def __str__(self) -> str:
        return "%s (%s: %s)" % (self.version, self.where, self.exe)


def _probe(cmd_prefix: list[str], exe: str, version: str) -> bool:
    """exe runs, is CPython `version` and has venv (ensurepip)."""
    code = (
        "import sys, platform, ensurepip, venv; "
        "print('%d.%d' % sys.version_info[:2], platform.python_implementation())"
    )
    try:
        proc = run([*cmd_prefix, exe, "-c", code], check=False, capture_output=True, text=True)
    except OSError:
        return False
    return proc.returncode == 0 and proc.stdout.split() == [version, "CPython"]


def find_host(version: str) -> Interp | None:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(
        glob.glob(str(pyenv / "versions" / (version + ".*") / "bin" / ("python" + version))),
        key=lambda p: [int(x) for x in re.findall(r"\d+", Path(p).parts[-3])],
        reverse=True,
    )
    for d in ("/usr/local/bin", "/usr/bin"):
        candidates.append(os.path.join(d, "python" + version))
    which = shutil.which("python" + version)
    if which and "/shims/" not in which:
        candidates.append(which)
    for exe in candidates:
        if os.path.exists(exe) and _probe([], exe, version):
            return Interp(version, "host", exe)
    return None


# --------------------------------------------------------------------------- the sid root


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4]
            if mnt.startswith(prefix):
                found.append(mnt)
    return sorted(found, key=len, reverse=True)


def _umount_all(path: Path) -> None:
    for mnt in _mounts_under(path):
        run(["umount", "-l", mnt], check=False)


@contextlib.contextmanager
def sid_lock():
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(str(SID) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def sid_mounts(extra: dict[str, str] | None = None):
    """proc, /dev and the given host dirs bound into the root while it is in use.

    Unmounted on the way out, always: a bind-mounted /dev must never be under an rm -rf.
    """
    binds = {"/dev": "/dev", **(extra or {})}
    done: list[Path] = []
    try:
        target = SID / "proc"
        target.mkdir(exist_ok=True)
        run(["mount", "-t", "proc", "proc", target])
        done.append(target)
        for host, inside in binds.items():
            target = SID / inside.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", host, target])
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            run(["umount", "-l", target], check=False)


def _sid_chroot(args, check=True, env=None, **kw) -> subprocess.CompletedProcess:
    base_env = {
        "ASYNCORE_RS_IN_SID": "1",
        "ASYNCORE_RS_IN_PYTHONS": "1",
        "PATH": "/root/.cargo/bin:%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" % IN_SID_ZIG,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "SSL_CERT_FILE": IN_SID_CA,
        "CARGO_HTTP_CAINFO": IN_SID_CA,
    }
    base_env.update(env or {})
    return run(
        ["chroot", SID, "/usr/bin/env", "-i", *("%s=%s" % kv for kv in base_env.items()), *args],
        check=check,
        **kw,
    )


def _available_sid_packages(versions) -> list[str]:
    names = []
    for v in versions:
        pkgs = ["python%s" % v, "python%s-venv" % v]
        proc = _sid_chroot(["apt-cache", "show", *pkgs], check=False, capture_output=True)
        if proc.returncode == 0:
            names += pkgs
        else:
            say("sid has no python%s package: skipped" % v)
    return names


def _quiet(args) -> bool:
    """Run args in the root, printing its output only if it fails; True on failure."""
    proc = _sid_chroot(args, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc.returncode != 0


def ensure_sid() -> str | None:
    """Create or reuse the sid root; return None when ready, else why it is not."""
    if os.geteuid() != 0:
        return "not root (debootstrap and chroot need root)"
    stamp = SID / ".asyncore-rs-ready"
    if stamp.exists():
        return None
    if shutil.which("debootstrap") is None:
        say("installing debootstrap with apt-get")
        ok = (
            run(["apt-get", "update", "-qq"], check=False).returncode == 0
            and run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=False).returncode == 0
        )
        if not ok or shutil.which("debootstrap") is None:
            return "no debootstrap (apt-get install debootstrap failed)"
    t0 = time.monotonic()
    if not (SID / "usr" / "bin" / "apt-get").exists() or not (SID / "etc" / "os-release").exists():
        _umount_all(SID)
        if SID.exists():
            if _mounts_under(SID):
                return "%s has mounts left that would not go away" % SID
            shutil.rmtree(SID)
        say("debootstrap sid into %s (about a minute)" % SID)
        proc = run(
            ["debootstrap", "--variant=minbase", "sid", SID, MIRROR],
            check=False,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return "debootstrap failed (no network?): %s" % " | ".join(tail)
    # apt in the root: the sid Release file may be past Valid-Until; DNS and CA from the host
    (SID / "etc/apt/apt.conf.d/99asyncore-rs").write_text('Acquire::Check-Valid-Until "false";\n')
    with contextlib.suppress(OSError):
        shutil.copy("/etc/resolv.conf", SID / "etc/resolv.conf")
    ca = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(ca):
        shutil.copy(ca, SID / IN_SID_CA.lstrip("/"))
    with sid_mounts():
        if _quiet(["apt-get", "update", "-qq"]):
            return "apt-get update in the sid root failed (no network?)"
        pkgs = _available_sid_packages(SID_VERSIONS)
        # gcc and libc6-dev: cargo links the build scripts of the crates with the system cc
        cmd = [
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            *pkgs,
            "gcc",
            "libc6-dev",
        ]
        say("apt-get install %s gcc libc6-dev (in the sid root)" % " ".join(pkgs))
        if _quiet(cmd):
            return "apt-get install in the sid root failed"
        _sid_chroot(["apt-get", "clean"], check=False)
    stamp.write_text(" ".join(pkgs) + "\n")
    say("sid root ready in %.0f s" % (time.monotonic() - t0))
    return None


def find_sid(version: str) -> Interp | None:
    exe = "/usr/bin/python" + version
    if not (SID / exe.lstrip("/")).exists():
        return None
    # (no mounts needed to run it: another user of the root may hold its lock meanwhile)
    ok = _probe(["chroot", str(SID)], exe, version)
    return Interp(version, "sid", exe) if ok else None


def find_all(versions=VERSIONS) -> list[Interp]:
    found: list[Interp] = []
    missing = []
    for v in versions:
        interp = find_host(v)
        if interp:
            found.append(interp)
        else:
            missing.append(v)
    if missing:
        if any(v in SID_VERSIONS for v in missing):
            if (SID / ".asyncore-rs-ready").exists():
                why = ensure_sid()  # ready: nothing to do, no need to wait for the lock
            else:
                with sid_lock():
                    why = ensure_sid()
            if why:
                say("no Debian sid root: %s" % why)
            else:
                for v in list(missing):
                    interp = find_sid(v) if v in SID_VERSIONS else None
                    if interp:
                        found.append(interp)
                        missing.remove(v)
        for v in missing:
            say(
                "SKIP Python %s: not on this machine%s"
                % (v, " nor in the sid root" if v in SID_VERSIONS else " (pyenv or PATH)")
            )
    found.sort(key=lambda i: [int(x) for x in i.version.split(".")])
    return found


def selected_versions() -> tuple[str, ...]:
    want = os.environ.get("ASYNCORE_RS_PYTHONS", "").strip()
    if not want:
        return VERSIONS
    if want == "none":
        return ()
    return tuple(v.strip() for v in want.split(",") if v.strip())


# --------------------------------------------------------------------------- building


def maturin_cmd() -> list[str]:
    exe = shutil.which("maturin", path=os.path.dirname(sys.executable)) or shutil.which("maturin")
    if exe is None:
        raise SystemExit("maturin is not installed (pip install maturin)")
    return [exe]


def zig_dir() -> str | None:
    """The ziglang package's directory (it holds the `zig` binary), if installed."""
    try:
        import ziglang  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return os.path.dirname(ziglang.__file__)


def release_build_args(require_zig: bool = False) -> list[str]:
    """How release wheels are built: fat LTO, zig linking against glibc 2.17 (manylinux2014)."""
    if zig_dir():
        return ["--release", "--zig", "--compatibility", "manylinux2014"]
    if require_zig:
        raise SystemExit("manylinux2014 wheels need zig: pip install ziglang")
    say("no ziglang here (pip install ziglang): wheels are linked against this glibc")
    return ["--release"]


def build_wheel(interp: Interp, out: Path, extra: list[str] | None = None) -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    args = release_build_args() + (extra or [])
    t0 = time.monotonic()
    if interp.where == "host":
        env = dict(os.environ)
        zd = zig_dir()
        if zd:
            env["PATH"] = zd + os.pathsep + env.get("PATH", "")
        run([*maturin_cmd(), "build", "-q", *args, "-i", interp.exe, "-o", out], cwd=ROOT, env=env)
    else:
        rel = out.resolve().relative_to(ROOT)
        with sid_session():
            _sid_chroot(
                [
                    "sh",
                    "-c",
                    'cd %s && exec /usr/local/bin/maturin "$@"' % IN_SID_SRC,
                    "maturin",
                    "build",
                    "-q",
                    *args,
                    "-i",
                    interp.exe,
                    "-o",
                    "%s/%s" % (IN_SID_SRC, rel),
                ],
                env={"CARGO_TARGET_DIR": IN_SID_SRC + "/target/sid"},
            )
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError("expected one wheel in %s, found %s" % (out, wheels))
    say("built %s in %.0f s" % (wheels[0].name, time.monotonic() - t0))
    return wheels[0]


_SESSION_DEPTH = 0


@contextlib.contextmanager
def sid_session():
    """The sid root with the repo, the Rust toolchain, zig, maturin and the wheel cache in it."""
    global _SESSION_DEPTH
    if _SESSION_DEPTH:
        yield
        return
    cargo_home = os.environ.get("CARGO_HOME", str(Path.home() / ".cargo"))
    rustup_home = os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup"))
    binds = {str(ROOT): IN_SID_SRC, cargo_home: "/root/.cargo", rustup_home: "/root/.rustup"}
    (CACHE / "wheels").mkdir(parents=True, exist_ok=True)
    binds[str(CACHE / "wheels")] = IN_SID_WHEELS
    zd = zig_dir()
    if zd:
        binds[zd] = IN_SID_ZIG
    with sid_lock(), sid_mounts(binds):
        # maturin's binary is static: it runs in the root as it is. Copied under
        # the lock and renamed into place, so a maturin still running from the
        # root (another run that just ended) never makes it "text file busy".
        (SID / "usr/local/bin").mkdir(parents=True, exist_ok=True)
        tmp = SID / "usr/local/bin/.maturin.new"
        shutil.copy(maturin_cmd()[0], tmp)
        os.replace(tmp, SID / "usr/local/bin/maturin")
        _SESSION_DEPTH += 1
        try:
            yield
        finally:
            _SESSION_DEPTH -= 1


# --------------------------------------------------------------------------- testing


def download_wheels(interp: Interp, name: str, reqs, optional=(), pure_sdists=()) -> Path:
    """Wheels of reqs for interp, fetched by this (host) pip into CACHE/wheels/name, cached.

    Raises CalledProcessError when the index cannot be reached (and nothing is cached).
    """
    dest = CACHE / "wheels" / name
    stamp = dest / ".complete"
    if stamp.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    # fmt: off
    base = [
        sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
        "-d", dest, "--only-binary=:all:", "--python-version", interp.version,
        "--implementation", "cp", "--abi", interp.tag, "--abi", "abi3", "--abi", "none",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
        "--platform", "any",
    ]
    # fmt: on
    run([*base, *reqs])
    for req in pure_sdists:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "-w",
                dest,
                req,
            ]
        )
    for dep in optional:
        if run([*base, dep], check=False, capture_output=True).returncode != 0:
            say("no %s wheel for %s: tests that need it will skip" % (dep, interp.version))
    stamp.write_text("")
    return dest


def download_test_deps(interp: Interp) -> Path:
    return download_wheels(interp, interp.tag, TEST_DEPS, OPTIONAL_TEST_DEPS, PURE_SDIST_DEPS)


def seen_from(interp: Interp, host_path: Path) -> str:
    """host_path as interp sees it (inside the sid root: through the bind mounts)."""
    host_path = Path(host_path).resolve()
    if interp.where == "host":
        return str(host_path)
    for host_dir, inside in ((CACHE / "wheels", IN_SID_WHEELS), (ROOT, IN_SID_SRC)):
        with contextlib.suppress(ValueError):
            return "%s/%s" % (inside, host_path.relative_to(host_dir.resolve()))
    raise ValueError("%s is not visible in the sid root" % host_path)


def new_venv(interp: Interp, name: str) -> str:
    """A fresh venv of interp; returns its directory as interp sees it."""
    if interp.where == "host":
        venv = str(WORK / name)
        shutil.rmtree(venv, ignore_errors=True)
        run([interp.exe, "-m", "venv", venv])
        return venv
    venv = "/opt/asyncore-rs-" + name
    _sid_chroot(["rm", "-rf", venv])
    _sid_chroot([interp.exe, "-m", "venv", venv])
    return venv


def in_venv(interp: Interp, venv: str, args: list, **kw) -> subprocess.CompletedProcess:
    """Run the venv's python with args (from the repo's root directory)."""
    py = venv + "/bin/python"
    if interp.where == "host":
        kw.setdefault("cwd", ROOT)
        return run([py, *args], **kw)
    return _sid_chroot(["sh", "-c", 'cd %s && exec "$@"' % IN_SID_SRC, "sh", py, *args], **kw)


CHECK_INSTALLED = """\
import os, sys, sysconfig
import asyncore_rs, asyncore_rs._core
site = os.path.realpath(sysconfig.get_paths()["purelib"])
for mod in (asyncore_rs, asyncore_rs._core):
    where = os.path.realpath(mod.__file__)
    assert where.startswith(site + os.sep), "%s comes from %s, not %s" % (mod, where, site)
print("asyncore_rs", asyncore_rs.__version__, "from", os.path.dirname(asyncore_rs.__file__))
"""


def test_one(interp: Interp, pytest_args: list[str]) -> tuple[bool, str]:
    t0 = time.monotonic()
    deps = download_test_deps(interp)
    wheel = build_wheel(interp, WORK / ("wheel-" + interp.tag))
    t_build = time.monotonic() - t0
    with sid_session() if interp.where == "sid" else contextlib.nullcontext():
        venv = new_venv(interp, "venv-" + interp.tag)
        find_links = [seen_from(interp, deps), seen_from(interp, wheel.parent)]
        pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index"]
        for fl in find_links:
            pip += ["--find-links", fl]
        wanted = ["asyncore-rs", *TEST_REQUIREMENTS]
        have_optional = [d for d in OPTIONAL_TEST_DEPS if any(deps.glob(d + "-*.whl"))]
        in_venv(interp, venv, [*pip, *wanted, *have_optional])
        # the tests must see the installed wheel, never the source tree's python/
        in_venv(interp, venv, ["-P", "-c", CHECK_INSTALLED])
        # (tests/test_coexistence.py runs once, from the main test run, not in each of these)
        env = {"ASYNCORE_RS_IN_PYTHONS": "1"}
        if interp.where == "host":
            env = {**os.environ, **env}
        proc = in_venv(
            interp,
            venv,
            ["-P", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *pytest_args],
            env=env,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    sys.stdout.write(proc.stdout)
    summary = [ln for ln in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    line = summary[-1].strip("= ") if summary else "no pytest summary (exit %d)" % proc.returncode
    elapsed = time.monotonic() - t0
    return proc.returncode == 0, "%s: %s [build %.0f s, total %.0f s]" % (
        interp,
        line,
        t_build,
        elapsed,
    )


def cmd_list() -> int:
    for interp in find_all(selected_versions()):
        print(interp)
    return 0


def cmd_test(pytest_args: list[str]) -> int:
    versions = selected_versions()
    if not versions:
        say("ASYNCORE_RS_PYTHONS=none: skipped")
        return 0
    t0 = time.monotonic()
    interps = find_all(versions)
    results = []
    for interp in interps:
        say("=== Python %s: build the wheel, install it in a fresh venv, run tests/" % interp)
        try:
            results.append(test_one(interp, pytest_args))
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            results.append((False, "%s: FAILED before the tests: %s" % (interp, exc)))
    say("summary (%.0f s in all):" % (time.monotonic() - t0))
    for ok, line in results:
        say(("  ok    " if ok else "  FAIL  ") + line)
    for v in versions:
        if v not in {i.version for i in interps}:
            say("  skip  %s: not available here" % v)
    return 0 if all(ok for ok, _ in results) else 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("list", "test"):
        print(__doc__)
        return 2
    if argv[0] == "list":
        return cmd_list()
    return cmd_test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
