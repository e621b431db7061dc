"""Vendored pure-Python reference copies of CPython 3.11's asyncore and asynchat."""
