"""PEP 517 build backend: maturin, plus the manylinux2014 link that releases get.

``pip install .`` (and building from the sdist) goes through maturin as usual. On
Linux, when the ``ziglang`` package is in the build environment (``build-system.requires``
lists it), the wheel is linked with zig against glibc 2.17 and tagged
``manylinux2014`` / ``manylinux_2_17``, the way the release wheels are built
(``scripts/release.py``). Without this, maturin links against this machine's glibc and the
wheel only installs on systems at least as new (``manylinux_2_34`` on Debian 12), so a
wheel built here and copied to RHEL 8, Debian 11 or Amazon Linux 2 would not install.

maturin has no pyproject setting for zig; it reads extra build arguments from
``MATURIN_PEP517_ARGS``, which this backend fills in unless the user set it (or passed
``--config-settings build-args=...``, which maturin prefers). Editable builds are left
alone: they are for development on this machine.
"""

import os
import sys

from maturin import *  # noqa: F403 - every other hook is maturin's own
from maturin import build_wheel as _maturin_build_wheel

MANYLINUX_ARGS = "--zig --compatibility manylinux2014"


def _zig_dir():
    try:
        import ziglang
    except ImportError:
        return None
    return os.path.dirname(ziglang.__file__)


def _use_zig():
    if not sys.platform.startswith("linux") or "MATURIN_PEP517_ARGS" in os.environ:
        return
    zig = _zig_dir()
    if zig is None:
        return
    os.environ["MATURIN_PEP517_ARGS"] = MANYLINUX_ARGS
    # maturin looks for `python3 -m ziglang` (this interpreter), then for `zig` on PATH
    os.environ.setdefault("CARGO_ZIGBUILD_PYTHON_PATH", sys.executable)
    os.environ["PATH"] = zig + os.pathsep + os.environ.get("PATH", "")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _use_zig()
    return _maturin_build_wheel(wheel_directory, config_settings, metadata_directory)
