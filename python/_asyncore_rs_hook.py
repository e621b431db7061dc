"""``import asyncore`` / ``import asynchat`` give asyncore-rs on Python 3.12+.

asyncore-rs ships no top-level ``asyncore`` or ``asynchat`` package: the pure-Python
backports (pyasyncore/pyasynchat, standard-asyncore/standard-asynchat) install
``asyncore/__init__.py`` and ``asynchat/__init__.py``, and two wheels owning the same
files overwrite each other and, when either is uninstalled, delete the other's. Instead
``asyncore-rs.pth`` (site-packages) puts this finder first on ``sys.meta_path`` at
start-up, as setuptools does for ``distutils`` (``distutils-precedence.pth``):

* while asyncore-rs is installed, the two names are ours, whatever else is installed
  and in whichever order it was installed;
* ``ASYNCORE_RS_PREFER_BACKPORT=1`` hands them to another implementation when one is
  on ``sys.path`` (ours is still used when none is);
* on 3.11 the ``.pth`` installs nothing: the stdlib modules win unless the program calls
  ``asyncore_rs.install()``.

At start-up the ``.pth`` line only defines a stub finder (a one-line class) that
forwards to ``find_spec`` below when ``asyncore`` or ``asynchat`` is imported: this module,
asyncore_rs and its extension module load only then. For every other import the stub
costs one call and a tuple membership test.
"""

import os
import sys

ENV = "ASYNCORE_RS_PREFER_BACKPORT"
_TARGETS = {"asyncore": "asyncore_rs.asyncore", "asynchat": "asyncore_rs.asynchat"}


class _AliasLoader:
    """Loads ``asyncore`` as ``asyncore_rs.asyncore`` itself (same object, not a copy)."""

    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return None  # a placeholder module, replaced in sys.modules below

    def exec_module(self, module):
        import importlib

        # The import system returns whatever sys.modules holds under the name once the
        # module has run (importlib._bootstrap._load_unlocked), so the program gets
        # asyncore_rs.asyncore, with its own __spec__, not an alias module.
        sys.modules[module.__name__] = importlib.import_module(self.target)


class AsyncoreRsFinder:
    """Meta path finder for the two top-level names; returns None for every other one."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in _TARGETS or path is not None:
            return None
        from importlib.machinery import ModuleSpec, PathFinder

        if os.environ.get(ENV, "") not in ("", "0"):
            other = PathFinder.find_spec(fullname)
            # (a directory left without its __init__.py is a namespace package, not a backport)
            if other is not None and other.origin not in (None, "namespace"):
                return other
        # where asyncore_rs is, without importing it (or its extension module)
        ours = PathFinder.find_spec("asyncore_rs")
        if ours is None or not ours.origin:
            return None  # not installed any more: let the import system look elsewhere
        origin = os.path.join(os.path.dirname(ours.origin), fullname + ".py")
        return ModuleSpec(fullname, _AliasLoader(_TARGETS[fullname]), origin=origin)


def find_spec(fullname, path=None, target=None):
    """What the .pth's stub finder forwards to."""
    return AsyncoreRsFinder.find_spec(fullname, path, target)


def install():
    """Put the finder first on sys.meta_path (idempotent)."""
    if not any(getattr(f, "__name__", None) == AsyncoreRsFinder.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, AsyncoreRsFinder)
