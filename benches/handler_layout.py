"""What a handler class's base does to the speed of its own Python code.

The bench's line handler calls ``collect_incoming_data()`` and
``found_terminator()`` once per line; both read and write attributes of
``self``. How fast CPython runs them depends on how the instance keeps its
attributes, which the base class decides: a plain class gets CPython's managed
dict (3.11+; with inline values, attribute access is specialised), a subclass
of a C class with a dict *slot* (``tp_dictoffset``, what ``#[pyclass(dict)]``
gives) keeps a separate dict and is not specialised, and a subclass of a C
class without one gets the managed dict again (on 3.14 with inline values).
This times the two methods on each kind of base (ns per line, best of 5):

    python benches/handler_layout.py

``collections.deque`` stands for a C base without a dict slot and
``functools.partial`` for one with a dict slot (asyncore-rs's ``dispatcher``
today). docs/internals.rst ("Where the time goes", Lines) has the figures.
"""

import collections
import functools
import sys
import time


def handler_on(base, *init):
    class Handler(base):
        def __init__(self):
            self.ibuffer = []

        def push(self, data):
            pass

        def collect_incoming_data(self, data):
            self.ibuffer.append(data)

        def found_terminator(self):
            line = b"".join(self.ibuffer)
            self.ibuffer = []
            self.push(line + b"\n")

    if init:
        # functools.partial needs its function before __init__ runs.
        Handler.__new__ = lambda cls: base.__new__(cls, *init)
    return Handler


def time_lines(cls, lines=200_000, repeats=5):
    h = cls()
    collect, found = h.collect_incoming_data, h.found_terminator
    data = b"x" * 40
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(lines):
            collect(data)
            found()
        best = min(best, time.perf_counter() - t0)
    return best / lines * 1e9


def main():
    bases = [
        ("plain class", handler_on(object)),
        ("C base, no dict slot (deque)", handler_on(collections.deque)),
        ("C base, dict slot (partial)", handler_on(functools.partial, print)),
    ]
    print(f"CPython {sys.version.split()[0]}")
    for name, cls in bases:
        managed = bool(cls.__flags__ & (1 << 4))  # Py_TPFLAGS_MANAGED_DICT
        print(f"  {name:30s} managed dict: {managed!s:5s} {time_lines(cls):5.0f} ns per line")


if __name__ == "__main__":
    main()
