"""asyncore-rs beside the pure-Python backports, with real pip, on a real CPython 3.14.

pyasyncore/pyasynchat and standard-asyncore/standard-asynchat install top-level
``asyncore/__init__.py`` and ``asynchat/__init__.py``. asyncore-rs ships no such files: its
``asyncore-rs.pth`` installs a meta path finder (``_asyncore_rs_hook``). Each sequence below
runs in a throw-away venv of a real 3.14 (scripts/pythons.py finds or creates it: pyenv, PATH,
or the Debian sid root) and checks after every pip step, in a fresh interpreter, what a plain
``import asyncore, asynchat`` gives, without and with ASYNCORE_RS_PREFER_BACKPORT=1:

* while asyncore-rs is installed: ours (with the variable: theirs where installed);
* after either package is uninstalled: the other one, working;
* never a broken import: with neither installed, a clean ModuleNotFoundError.

The wheel under test is built for that 3.14 the way releases are (scripts/pythons.py); the
backports come from PyPI, downloaded by this machine's pip (pip under 3.13+ may reject the
network's CA) and installed with ``--no-index``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _impl import IMPL

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
VERSION = "3.14"
BACKPORTS = {
    "pyasyncore": ("pyasyncore", "pyasynchat"),
    "standard": ("standard-asyncore", "standard-asynchat"),
}

pytestmark = [
    pytest.mark.skipif(IMPL != "rs", reason="checks how ours is installed"),
    pytest.mark.skipif(
        not (SCRIPTS / "pythons.py").exists(), reason="scripts/ is not here (not a source checkout)"
    ),
    pytest.mark.skipif(
        os.environ.get("ASYNCORE_RS_IN_PYTHONS") == "1",
        reason="runs once, from the main test run (scripts/pythons.py runs the others)",
    ),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scripts/pythons.py is Linux"),
]

# What `import asyncore, asynchat` gives, as JSON; and a line through async_chat over the loop.
CHECK = r"""
import json, socket, sys

out = {}
for name in ("asyncore", "asynchat"):
    try:
        mod = __import__(name)
    except ModuleNotFoundError as exc:
        out[name] = "missing" if exc.name == name else "broken: %r" % exc
        continue
    except Exception as exc:
        out[name] = "broken: %r" % exc
        continue
    if sys.modules.get("asyncore_rs." + name) is mod:
        out[name] = "rs"
    elif (getattr(mod, "__file__", "") or "").endswith(name + "/__init__.py"):
        out[name] = "backport"
    else:
        out[name] = "other: %r" % getattr(mod, "__file__", None)
if out["asyncore"] == out["asynchat"] and out["asyncore"] in ("rs", "backport"):
    import asynchat, asyncore

    a, b = socket.socketpair()

    class Line(asynchat.async_chat):
        got = None

        def collect_incoming_data(self, data):
            self.buf = getattr(self, "buf", b"") + data

        def found_terminator(self):
            self.got = self.buf

    chan = Line(a)
    chan.set_terminator(b"\n")
    b.sendall(b"hello\n")
    for _ in range(100):
        asyncore.loop(timeout=0.05, count=1)
        if chan.got is not None:
            break
    out["works"] = chan.got == b"hello" and isinstance(chan, asyncore.dispatcher)
    chan.close()
    b.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def env314():
    """(pythons module, 3.14 Interp, our wheel dir, backport wheels dir), inside a sid session."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import pythons
    finally:
        sys.path.remove(str(SCRIPTS))
    found = pythons.find_all((VERSION,))
    if not found:
        pytest.skip("no real CPython %s here (see the [pythons] lines above)" % VERSION)
    interp = found[0]
    try:
        backports = pythons.download_wheels(
            interp, "coexist-" + interp.tag, [p for pair in BACKPORTS.values() for p in pair]
        )
    except subprocess.CalledProcessError as exc:
        pytest.skip("the backports could not be downloaded from PyPI: %s" % exc)
    wheel = pythons.build_wheel(interp, pythons.WORK / ("wheel-coexist-" + interp.tag))
    with pythons.sid_session() if interp.where == "sid" else _null():
        yield pythons, interp, wheel.parent, backports


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Venv:
    def __init__(self, env, name):
        self.pythons, self.interp, ours, theirs = env
        self.dir = self.pythons.new_venv(self.interp, name)
        self.links = []
        for d in (ours, theirs):
            self.links += ["--find-links", self.pythons.seen_from(self.interp, d)]
        self.log = []

    def py(self, *args, env=None):
        extra = {"PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        if self.interp.where == "host":
            extra = {**os.environ, **extra}  # (in the sid root: added to a clean environment)
        return self.pythons.in_venv(
            self.interp,
            self.dir,
            list(args),
            capture_output=True,
            text=True,
            check=False,
            env=extra,
        )

    def pip(self, *args):
        cmd = ["-m", "pip", *args[:1], "-q", "--disable-pip-version-check", *args[1:]]
        if args[0] == "install":
            cmd += ["--no-index", *self.links]
        else:
            cmd += ["-y"]
        proc = self.py(*cmd)
        self.log.append("pip " + " ".join(args))
        assert proc.returncode == 0, "pip %s failed:\n%s\n%s" % (args, proc.stdout, proc.stderr)

    def state(self, prefer_backport=False):
        env = {"ASYNCORE_RS_PREFER_BACKPORT": "1"} if prefer_backport else {}
        proc = self.py("-P", "-W", "ignore::DeprecationWarning", "-c", CHECK, env=env)
        assert proc.returncode == 0, "check failed after %s:\n%s\n%s" % (
            self.log,
            proc.stdout,
            proc.stderr,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def expect(self, normal, preferring=None):
        """normal / preferring: 'rs', 'backport' or 'missing' for both names."""
        for prefer, want in ((False, normal), (True, preferring or normal)):
            got = self.state(prefer)
            expected = {"asyncore": want, "asynchat": want}
            if want != "missing":
                expected["works"] = True
            assert got == expected, "after %s, ASYNCORE_RS_PREFER_BACKPORT=%d: %s, want %s" % (
                self.log,
                prefer,
                got,
                expected,
            )


OURS = "asyncore-rs"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("which", sorted(BACKPORTS))
def test_ours_first_then_the_backport(env314, which):
    theirs = BACKPORTS[which]
    v = Venv(env314, "coexist-a-" + which)
    v.expect("missing")  # 3.14: no stdlib asyncore
    v.pip("install", OURS)
    v.expect("rs")  # preferring a backport that is not there: still ours
    v.pip("install", *theirs)
    v.expect("rs", "backport")
    v.pip("install", "--force-reinstall", "--no-deps", *theirs)
    v.expect("rs", "backport")
    v.pip("uninstall", *theirs)
    v.expect("rs")
    v.pip("install", *theirs)
    v.pip("uninstall", OURS)
    v.expect("backport")
    v.pip("uninstall", *theirs)
    v.expect("missing")


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("which", sorted(BACKPORTS))
def test_backport_first_then_ours(env314, which):
    theirs = BACKPORTS[which]
    v = Venv(env314, "coexist-b-" + which)
    v.pip("install", *theirs)
    v.expect("backport")
    v.pip("install", OURS)
    v.expect("rs", "backport")
    v.pip("install", "--force-reinstall", "--no-deps", OURS)
    v.expect("rs", "backport")
    v.pip("install", "--force-reinstall", "--no-deps", *theirs)
    v.expect("rs", "backport")
    v.pip("uninstall", OURS)
    v.expect("backport")
    v.pip("install", OURS)
    v.pip("uninstall", *theirs)
    v.expect("rs")
    v.pip("uninstall", OURS)
    v.expect("missing")


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("which", sorted(BACKPORTS))
def test_both_in_one_command(env314, which):
    theirs = BACKPORTS[which]
    v = Venv(env314, "coexist-c-" + which)
    v.pip("install", *theirs, OURS)
    v.expect("rs", "backport")
    # both backport flavours at once, then one of them removed: still ours
    other = BACKPORTS["standard" if which == "pyasyncore" else "pyasyncore"]
    v.pip("install", *other)
    v.expect("rs", "backport")
    v.pip("uninstall", *theirs)
    v.expect("rs")
