"""How programs get our modules by their stdlib names.

(a) On 3.12+, where the stdlib has no asyncore/asynchat, ``asyncore-rs.pth`` puts the finder in
    ``_asyncore_rs_hook`` first on ``sys.meta_path``: ``import asyncore`` gives
    ``asyncore_rs.asyncore`` itself. On 3.11 the same is checked with the stdlib copies hidden
    from the import system and the finder installed by hand (the .pth leaves 3.11 alone: the
    stdlib wins there, also checked), and on any other 3.12+ interpreter found on this machine
    that has asyncore_rs installed. tests/test_coexistence.py covers the backports.
(b) ``asyncore_rs.install()``: returns None, puts ours in sys.modules, is idempotent, warns
    (RuntimeWarning) when the stdlib modules were already imported, and code imported after it
    (the stdlib's smtpd where it exists, a user module) uses ours.

All scenarios run in fresh interpreters; they only make sense for ours (IMPL == "rs").
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest
from _dropin import check_ok, run_raw
from _impl import IMPL

pytestmark = pytest.mark.skipif(IMPL != "rs", reason="checks how ours is found and installed")

STDLIB_HAS_ASYNCORE = os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "asyncore.py"))
needs_stdlib_asyncore = pytest.mark.skipif(
    not STDLIB_HAS_ASYNCORE, reason="this Python's stdlib has no asyncore (3.12+)"
)

# Makes `import asyncore` / `import asynchat` look everywhere on sys.path except the stdlib
# directories, as on 3.12+ where the stdlib has none.
HIDE_STDLIB = """\
import importlib.machinery, os, sys, sysconfig

_STDLIB = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}


class HideStdlibAsyncore:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in ("asyncore", "asynchat"):
            return None
        entries = [p for p in sys.path if os.path.realpath(p or os.getcwd()) not in _STDLIB]
        spec = importlib.machinery.PathFinder.find_spec(name, entries)
        if spec is None:
            raise ModuleNotFoundError("no %s outside the stdlib" % name, name=name)
        return spec


sys.meta_path.insert(0, HideStdlibAsyncore)
"""

# what the .pth does on 3.12+; on 3.11 it does nothing, so the check does it by hand
INSTALL_HOOK = """\
import _asyncore_rs_hook

_asyncore_rs_hook.install()
"""

# argv[1]: which name to import first
TOPLEVEL_CHECK = """\
import importlib.util, os, sys, warnings

warnings.simplefilter("error", DeprecationWarning)  # ours does not warn on import
first = sys.argv[1]
if first == "asynchat":
    import asynchat
    import asyncore
else:
    import asyncore
    import asynchat
import asyncore_rs
import _asyncore_rs_hook

assert asyncore is asyncore_rs.asyncore, (asyncore, asyncore_rs.asyncore)
assert asynchat is asyncore_rs.asynchat, (asynchat, asyncore_rs.asynchat)
assert sys.modules["asyncore"] is asyncore_rs.asyncore
assert sys.modules["asynchat"] is asyncore_rs.asynchat
# the finder is first in line (the .pth's stub on 3.12+, the hook's own class on 3.11)
assert getattr(sys.meta_path[0], "__name__", None) == "AsyncoreRsFinder", sys.meta_path
assert sum(getattr(f, "__name__", None) == "AsyncoreRsFinder" for f in sys.meta_path) == 1

# the modules found are the ones in the asyncore_rs package beside the hook, and the wheel
# ships no top-level asyncore/asynchat package of its own
pkg = os.path.dirname(os.path.realpath(asyncore_rs.__file__))
site = os.path.dirname(pkg)
assert os.path.dirname(os.path.realpath(_asyncore_rs_hook.__file__)) == site
for name in ("asyncore", "asynchat"):
    saved = sys.modules.pop(name)
    try:
        spec = importlib.util.find_spec(name)
    finally:
        sys.modules[name] = saved
    assert spec is not None and spec.origin, (name, spec)
    assert isinstance(spec.loader, _asyncore_rs_hook._AliasLoader), spec
    assert os.path.realpath(spec.origin) == os.path.join(pkg, name + ".py"), (spec.origin, pkg)

from importlib.metadata import files

shipped = {str(f) for f in files("asyncore-rs")}
assert "asyncore-rs.pth" in shipped and "_asyncore_rs_hook.py" in shipped, sorted(shipped)
assert not [f for f in shipped if f.split("/")[0] in ("asyncore", "asynchat")], sorted(shipped)

# and they work as the modules programs expect
from asyncore import dispatcher, dispatcher_with_send, loop, socket_map
from asynchat import async_chat, simple_producer

assert dispatcher is asyncore_rs.asyncore.dispatcher
assert async_chat is asyncore_rs.asynchat.async_chat
assert issubclass(async_chat, dispatcher)
assert socket_map is asyncore_rs.asyncore.socket_map


class Chat(async_chat):
    pass


chat = Chat()
assert isinstance(chat, asyncore_rs.asyncore.dispatcher)
assert repr(chat).startswith("<")
loop(timeout=0.01, count=1)
print("OK")
"""


def test_toplevel_packages_are_ours_with_the_stdlib_hidden():
    """What `import asyncore` gives on 3.12+, checked on this interpreter (stdlib hidden)."""
    prefix = HIDE_STDLIB + INSTALL_HOOK if STDLIB_HAS_ASYNCORE else ""
    for first in ("asyncore", "asynchat"):
        check_ok(run_raw(prefix + TOPLEVEL_CHECK, first))


STDLIB_WINS_ON_311 = """\
import os, sys, sysconfig, warnings

import asyncore_rs

pth = os.path.join(os.path.dirname(os.path.dirname(asyncore_rs.__file__)), "asyncore-rs.pth")
if not os.path.exists(pth):
    print("SKIP no asyncore-rs.pth beside asyncore_rs (not installed from a wheel)")
    raise SystemExit(0)
# the .pth ran at start-up and did not even import the hook
assert "_asyncore_rs_hook" not in sys.modules, sys.modules["_asyncore_rs_hook"]
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asynchat
    import asyncore
stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
for mod in (asyncore, asynchat):
    assert os.path.dirname(os.path.realpath(mod.__file__)) == stdlib, mod
print("OK")
"""


@needs_stdlib_asyncore
def test_stdlib_wins_on_311_without_install():
    """The .pth leaves 3.11 alone: no hook imported, the stdlib modules are found."""
    proc = run_raw(STDLIB_WINS_ON_311)
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip())
    check_ok(proc)


def test_hidden_stdlib_really_is_hidden():
    """The finder used above works: without our packages, nothing is found."""
    if not STDLIB_HAS_ASYNCORE:
        pytest.skip("nothing to hide")
    code = HIDE_STDLIB + textwrap.dedent(
        """\
        # nothing but the stdlib left to find it in
        sys.path[:] = [
            p
            for p in sys.path
            if os.path.realpath(p or ".") in _STDLIB or os.path.basename(p) == "lib-dynload"
        ]
        try:
            import asyncore
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("found %r" % asyncore)
        # control: without the finder, the stdlib one is found there
        sys.meta_path.remove(HideStdlibAsyncore)
        import asyncore

        assert os.path.realpath(os.path.dirname(asyncore.__file__)) in _STDLIB
        print("OK")
        """
    )
    check_ok(run_raw(code))


def _other_interpreters():
    """Python 3.12+ executables on this machine other than the running one."""
    seen = {os.path.realpath(sys.executable)}
    found = []
    candidates = []
    for minor in range(12, 20):
        candidates.append(shutil.which("python3.%d" % minor))
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(
        glob.glob(os.path.join(pyenv_root, "versions", "3.1[2-9]*", "bin", "python3"))
    )
    for exe in candidates:
        if not exe or os.path.realpath(exe) in seen:
            continue
        try:
            proc = subprocess.run(
                [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = proc.stdout.strip()
        if proc.returncode != 0 or tuple(map(int, version.split("."))) < (3, 12):
            continue
        seen.add(os.path.realpath(exe))
        found.append((version, exe))
    return found


# probing other interpreters costs subprocesses: only where these tests run
OTHER_INTERPRETERS = _other_interpreters() if IMPL == "rs" else []


@pytest.mark.parametrize(
    "exe",
    [exe for _, exe in OTHER_INTERPRETERS] or [None],
    ids=[v for v, _ in OTHER_INTERPRETERS] or ["none"],
)
def test_toplevel_packages_are_ours_on_other_interpreters(exe):
    """On a real 3.12+ interpreter that has asyncore_rs installed: plain `import asyncore`."""
    if exe is None:
        pytest.skip("no other Python 3.12+ on this machine")
    probe = run_raw("import asyncore_rs", python=exe)
    if probe.returncode != 0:
        pytest.skip("asyncore_rs is not installed for %s" % exe)
    for first in ("asyncore", "asynchat"):
        check_ok(run_raw(TOPLEVEL_CHECK, first, python=exe))


INSTALL_FIRST = """\
import os, sys, sysconfig, warnings

warnings.simplefilter("error", RuntimeWarning)  # nothing to replace: no warning
warnings.simplefilter("error", DeprecationWarning)
import asyncore_rs

assert asyncore_rs.install() is None
assert sys.modules["asyncore"] is asyncore_rs.asyncore
assert sys.modules["asynchat"] is asyncore_rs.asynchat
import asyncore
import asynchat

assert asyncore is asyncore_rs.asyncore
assert asynchat is asyncore_rs.asynchat

# idempotent
assert asyncore_rs.install() is None
assert asyncore_rs.install() is None
assert sys.modules["asyncore"] is asyncore_rs.asyncore
assert sys.modules["asynchat"] is asyncore_rs.asynchat
from asynchat import async_chat
from asyncore import dispatcher

assert dispatcher is asyncore_rs.asyncore.dispatcher
assert async_chat is asyncore_rs.asynchat.async_chat

# the stdlib copies were never imported
stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
for mod in list(sys.modules.values()):
    path = getattr(mod, "__file__", None) or ""
    assert not (
        os.path.dirname(os.path.realpath(path)) == stdlib
        and os.path.basename(path) in ("asyncore.py", "asynchat.py")
    ), mod
print("OK")
"""


def test_install_before_any_import_is_silent_and_idempotent():
    check_ok(run_raw(INSTALL_FIRST))


INSTALL_AFTER_STDLIB = """\
import sys, warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for name in sys.argv[1].split(","):
        __import__(name)
imported = [n for n in ("asyncore", "asynchat") if n in sys.modules]
old = {n: sys.modules[n] for n in imported}
assert imported

import asyncore_rs

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert asyncore_rs.install() is None
runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert runtime, [str(w.message) for w in caught]
for name in imported:
    assert any(name in msg for msg in runtime), (name, runtime)

assert sys.modules["asyncore"] is asyncore_rs.asyncore
assert sys.modules["asynchat"] is asyncore_rs.asynchat
for name, mod in old.items():
    assert mod is not sys.modules[name]  # existing references keep the stdlib module
import asyncore
import asynchat

assert asyncore is asyncore_rs.asyncore
assert asynchat is asyncore_rs.asynchat

# nothing left to replace: a second call does not warn again
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert asyncore_rs.install() is None
assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == [], caught
assert sys.modules["asyncore"] is asyncore_rs.asyncore
print("OK")
"""


@needs_stdlib_asyncore
@pytest.mark.parametrize("first", ["asyncore", "asynchat", "asyncore,asynchat"])
def test_install_after_the_stdlib_modules_warns_and_replaces_them(first):
    # (importing the stdlib asynchat imports the stdlib asyncore too)
    check_ok(run_raw(INSTALL_AFTER_STDLIB, first))


LATER_IMPORTS = """\
import importlib.util, os, sys, warnings
import asyncore_rs

asyncore_rs.install()

# a program's own module, importing by the stdlib names
moddir = sys.argv[1]
with open(os.path.join(moddir, "usermod.py"), "w") as f:
    f.write(
        "import asyncore, asynchat\\n"
        "from asyncore import dispatcher\\n"
        "class Chat(asynchat.async_chat):\\n"
        "    pass\\n"
    )
sys.path.insert(0, moddir)
import usermod

assert usermod.asyncore is asyncore_rs.asyncore
assert usermod.asynchat is asyncore_rs.asynchat
assert usermod.dispatcher is asyncore_rs.asyncore.dispatcher
assert issubclass(usermod.Chat, asyncore_rs.asynchat.async_chat)

# the stdlib's own users of asyncore/asynchat (smtpd, up to 3.11)
if importlib.util.find_spec("smtpd") is not None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import smtpd
    assert smtpd.asyncore is asyncore_rs.asyncore
    assert smtpd.asynchat is asyncore_rs.asynchat
    assert issubclass(smtpd.SMTPChannel, asyncore_rs.asynchat.async_chat)
    assert issubclass(smtpd.SMTPServer, asyncore_rs.asyncore.dispatcher)
print("OK")
"""


def test_code_imported_after_install_uses_ours(tmp_path):
    check_ok(run_raw(LATER_IMPORTS, str(tmp_path)))
