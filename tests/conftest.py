"""Fixtures every test file may use. Shared helpers that are not fixtures (HOST,
pump...) are in _common.py."""

import pytest
from _impl import asyncore


@pytest.fixture
def chan_map():
    """A private channel map, emptied (every channel closed) after the test."""
    m = {}
    yield m
    asyncore.close_all(m, ignore_all=True)


@pytest.fixture
def global_map():
    """For tests that use the default map: it starts empty and is emptied afterwards."""
    asyncore.close_all(ignore_all=True)
    yield asyncore.socket_map
    asyncore.close_all(ignore_all=True)


@pytest.fixture
def peers():
    """Plain sockets the test keeps (the other ends of channels); closed afterwards."""
    socks = []
    yield socks
    for s in socks:
        s.close()
