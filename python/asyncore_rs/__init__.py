"""asyncore-rs: CPython 3.11's asyncore and asynchat, faster, in Rust.

``from asyncore_rs import asyncore, asynchat`` works on every Python version;
on 3.12+ the top-level ``asyncore`` and ``asynchat`` names are ours too (the
finder that ``asyncore-rs.pth`` installs, see ``_asyncore_rs_hook``).
``install()`` makes those two names ours where the stdlib still has them (3.11).
"""

import sys
import warnings

__all__ = ["install"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("asyncore-rs")
except Exception:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

_NAMES = ("asyncore", "asynchat")


def install():
    """Make ``import asyncore`` and ``import asynchat`` give asyncore-rs.

    Idempotent. If the standard library's modules were imported before, their
    ``sys.modules`` entries are replaced and a RuntimeWarning says so: code
    that already holds the old modules keeps them.
    """
    from asyncore_rs import asynchat, asyncore

    ours = {"asyncore": asyncore, "asynchat": asynchat}
    replaced = [
        name
        for name in _NAMES
        if sys.modules.get(name) is not None and sys.modules[name] is not ours[name]
    ]
    for name in _NAMES:
        sys.modules[name] = ours[name]
    if replaced:
        warnings.warn(
            "asyncore_rs.install() replaced the already imported "
            + " and ".join(replaced)
            + " in sys.modules; modules that imported them before keep the old ones",
            RuntimeWarning,
            stacklevel=2,
        )
