"""Selects the implementation the tests run against.

ASYNCORE_RS_TEST_IMPL=rs (default) tests asyncore_rs; =stdlib runs the same tests
against CPython's own modules (only where they exist, <= 3.11), which is how the
ported suites and our own tests are checked to be right about CPython.
"""

import os
import warnings

IMPL = os.environ.get("ASYNCORE_RS_TEST_IMPL", "rs")

if IMPL == "stdlib":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat
        import asyncore
else:
    from asyncore_rs import asynchat, asyncore

__all__ = ["IMPL", "asynchat", "asyncore"]
