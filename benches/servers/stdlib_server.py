"""The shared legacy handlers on the pure-Python asyncore/asynchat.

CPython's own modules on Python <= 3.11; on 3.12+ the pure-Python backports
(``pip install pyasyncore pyasynchat``), which install the same module names.
"""

import importlib.util
import os
import platform
import sys
import sysconfig
import types
import warnings

from server_common import serve_legacy


def _is_pure_python(asyncore, asynchat):
    # asyncore-rs also answers to `import asyncore` (its wheel ships top-level packages
    # on 3.12+, and python/ may be on PYTHONPATH in a checkout): refuse to measure it here.
    return (
        type(asyncore.socket_map) is dict
        and isinstance(asyncore.dispatcher.__dict__.get("handle_read_event"), types.FunctionType)
        and isinstance(asynchat.async_chat.__dict__.get("handle_read"), types.FunctionType)
    )


def _load_stdlib_files():
    """Loads Lib/asyncore.py and Lib/asynchat.py by path (when something shadows them)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    modules = []
    for name in ("asyncore", "asynchat"):
        path = os.path.join(stdlib, name + ".py")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or not os.path.exists(path):
            raise ImportError(f"{path} not found")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def load():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import asynchat
            import asyncore
        except ImportError:
            if sys.version_info >= (3, 12):
                raise ImportError(
                    "no pure-Python asyncore on Python 3.12+ (pip install pyasyncore pyasynchat)"
                )
            raise
        if not _is_pure_python(asyncore, asynchat) and sys.version_info < (3, 12):
            asyncore, asynchat = _load_stdlib_files()
    if not _is_pure_python(asyncore, asynchat):
        raise ImportError(
            f"`import asyncore` gives {asyncore.__file__}, which is not the pure-Python module"
            " (install pyasyncore/pyasynchat without asyncore-rs's top-level packages)"
        )
    if sys.version_info < (3, 12):
        detail = f"CPython {platform.python_version()} stdlib asyncore/asynchat"
    else:
        from importlib import metadata

        try:
            version = metadata.version("pyasyncore")
        except metadata.PackageNotFoundError:
            version = "?"
        detail = f"pyasyncore {version} on CPython {platform.python_version()}"
    return asyncore, asynchat, detail


if __name__ == "__main__":
    serve_legacy(__doc__, load)
