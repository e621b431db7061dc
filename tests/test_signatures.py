"""Every public function, class and method has CPython 3.11's runtime signature.

``inspect.signature()`` is what ``help()``, IDEs and argument-forwarding code see. The
reference is the vendored copy of CPython 3.11's modules in tests/_reference (the same
source as the stdlib's on 3.11, and present on 3.12+ where the stdlib has none). Names,
parameter kinds and defaults (by repr, so ``socket.AF_INET`` is not ``2``) must match;
the one allowed difference is that a method written in Rust shows its ``self`` as
positional-only (``(self, /, ...)``).
"""

import inspect
import sys
import types

import pytest
from _impl import asynchat, asyncore
from _reference import _ref_asynchat, _ref_asyncore

PAIRS = [(_ref_asyncore, asyncore), (_ref_asynchat, asynchat)]


def _defined_here(ref, obj):
    return getattr(obj, "__module__", None) == ref.__name__


def _public_names(ref):
    """Public functions and classes the reference module defines (not imports)."""
    for name, obj in sorted(vars(ref).items()):
        if name.startswith("_"):
            continue
        if isinstance(obj, (types.FunctionType, type)) and _defined_here(ref, obj):
            yield name, obj


def _is_public_method(name):
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _cases():
    for ref, _ours in PAIRS:
        short = ref.__name__.rsplit("_", 1)[-1]
        for name, obj in _public_names(ref):
            yield pytest.param(ref, (name,), id=f"{short}.{name}")
            if not isinstance(obj, type):
                continue
            # Methods of the class and of its reference bases (inherited ones too:
            # async_chat.create_socket must be right on async_chat, not only on dispatcher).
            for klass in obj.__mro__:
                if klass is object:
                    continue
                for meth, value in vars(klass).items():
                    if _is_public_method(meth) and isinstance(value, types.FunctionType):
                        yield pytest.param(ref, (name, meth), id=f"{short}.{name}.{meth}")


CASES = list(_cases())


def _signature(obj):
    # Some callables have no signature at all on some versions (an Exception
    # subclass on 3.11): then ours must have none either.
    try:
        return inspect.signature(obj)
    except ValueError:
        return None


def _lookup(module, path):
    obj = module
    for part in path:
        obj = getattr(obj, part)
    return obj


def _describe(sig, *, is_method):
    """(name, kind, repr(default)) per parameter, with a method's self made positional-only
    (a Rust method's ``self, /`` marker is the allowed difference)."""
    params = list(sig.parameters.values())
    out = []
    for i, p in enumerate(params):
        kind = p.kind
        if is_method and i == 0 and p.name == "self":
            kind = inspect.Parameter.POSITIONAL_ONLY
        default = "<none>" if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, kind.name, default))
    return out


def test_the_cases_cover_the_modules():
    # The collection is not empty or partial by accident: the classes and functions
    # CPython 3.11's modules define are all here, with their methods.
    ids = {"/".join(c.values[1]) for c in CASES}
    for expected in [
        "dispatcher",
        "dispatcher/__init__",
        "dispatcher/create_socket",
        "dispatcher/handle_accepted",
        "dispatcher_with_send/__init__",
        "dispatcher_with_send/send",
        "file_dispatcher/set_file",
        "file_wrapper/getsockopt",
        "loop",
        "poll",
        "poll2",
        "poll3",
        "close_all",
        "compact_traceback",
        "readwrite",
        "ExitNow",
        "async_chat/push_with_producer",
        "async_chat/create_socket",
        "simple_producer/__init__",
        "simple_producer/more",
        "find_prefix_at_end",
    ]:
        if expected.startswith("file_") and not hasattr(_ref_asyncore, "file_wrapper"):
            continue
        assert expected in ids
    assert len(CASES) > 100


@pytest.mark.parametrize(("ref", "path"), CASES)
def test_signature_matches_cpython(ref, path):
    ours_module = dict(PAIRS)[ref]
    want_obj = _lookup(ref, path)
    got_obj = _lookup(ours_module, path)
    want = _signature(want_obj)
    got = _signature(got_obj)
    if want is None or got is None:
        assert got is want, f"{'.'.join(path)}: ours {got}, CPython 3.11 {want}"
        return
    is_method = len(path) > 1
    assert _describe(got, is_method=is_method) == _describe(want, is_method=is_method), (
        f"{'.'.join(path)}: ours {got}, CPython 3.11 {want}"
    )


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the stdlib has no asyncore on 3.12+")
def test_reference_copies_are_the_stdlib_signatures():
    # The vendored copies stand for CPython 3.11's modules: on <= 3.11 check they agree.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat as std_asynchat
        import asyncore as std_asyncore
    if getattr(std_asyncore, "__file__", "").find("asyncore_rs") != -1:
        pytest.skip("asyncore is asyncore-rs's here (install() was called)")
    std = {_ref_asyncore: std_asyncore, _ref_asynchat: std_asynchat}
    for case in CASES:
        ref, path = case.values
        want = _signature(_lookup(std[ref], path))
        got = _signature(_lookup(ref, path))
        assert str(got) == str(want), ".".join(path)


@pytest.mark.parametrize("mod", [asynchat, _ref_asynchat], ids=["ours", "reference"])
def test_simple_producer_init_as_cpython(mod):
    # __init__ is what sets data/buffer_size, so a subclass may take other arguments.
    class FromParts(mod.simple_producer):
        def __init__(self, a, b, c):
            mod.simple_producer.__init__(self, a + b + c, buffer_size=2)

    p = FromParts(b"ab", b"cd", b"e")
    assert (p.more(), p.more(), p.more(), p.more()) == (b"ab", b"cd", b"e", b"")
    q = mod.simple_producer(b"xyz")
    mod.simple_producer.__init__(q, b"0123456789" * 60)
    assert (q.buffer_size, len(q.more()), len(q.more())) == (512, 512, 88)
    with pytest.raises(TypeError):
        mod.simple_producer()
