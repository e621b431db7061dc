"""The per-message methods take every argument shape CPython's do.

asyncore-rs calls ``recv``, ``send``, ``dispatcher_with_send.send`` and
``async_chat.push`` through entry points of its own for the shape handler code
uses (one positional argument) and hands any other shape to the general
wrapper (src/fast_methods.rs). These check both shapes, the errors, and that a
subclass's override still wins. Run with ASYNCORE_RS_TEST_IMPL=stdlib, they
check CPython.
"""

import inspect
import socket

import pytest
from _impl import asynchat, asyncore
from _reliability import recv_exactly

WAIT = 5.0


@pytest.fixture
def pair(chan_map):
    """(channel factory, peer socket): the factory wraps one end of a socketpair."""
    a, b = socket.socketpair()
    b.settimeout(WAIT)
    made = []

    def make(cls):
        ch = cls(a, map=chan_map)
        made.append(ch)
        return ch

    yield make, b
    b.close()
    for ch in made:
        ch.close()


def test_push_positional_and_keyword(pair):
    make, peer = pair
    ch = make(asynchat.async_chat)
    ch.push(b"one ")
    ch.push(data=b"two")
    assert recv_exactly(peer, 7) == b"one two"


@pytest.mark.parametrize(
    "call",
    [
        lambda ch: ch.push(),
        lambda ch: ch.push(b"a", b"b"),
        lambda ch: ch.push(b"a", data=b"b"),
        lambda ch: ch.push(other=b"a"),
        lambda ch: ch.push(123),
    ],
    ids=["none", "two", "both ways", "unknown keyword", "not bytes"],
)
def test_push_bad_arguments_raise_type_error(pair, call):
    make, _ = pair
    ch = make(asynchat.async_chat)
    with pytest.raises(TypeError):
        call(ch)


def test_dispatcher_send_and_recv_with_keywords(pair):
    make, peer = pair
    ch = make(asyncore.dispatcher)
    assert ch.send(data=b"ping") == 4
    assert peer.recv(16) == b"ping"
    peer.sendall(b"pong")
    assert ch.recv(buffer_size=16) == b"pong"
    peer.sendall(b"again")
    assert ch.recv(16) == b"again"
    with pytest.raises(TypeError):
        ch.recv()
    with pytest.raises(TypeError):
        ch.send(b"a", b"b")


def test_dispatcher_with_send_keyword(pair):
    make, peer = pair
    ch = make(asyncore.dispatcher_with_send)
    ch.send(data=b"kw")
    ch.send(b"-pos")
    assert recv_exactly(peer, 6) == b"kw-pos"
    with pytest.raises(TypeError):
        ch.send()


def test_subclass_overrides_win(pair):
    make, peer = pair
    log = []

    class Chat(asynchat.async_chat):
        def push(self, data):
            log.append(data)
            super().push(data)

    ch = make(Chat)
    ch.push(b"x")
    assert log == [b"x"]
    assert peer.recv(16) == b"x"


@pytest.mark.parametrize(
    "cls, name",
    [
        (asyncore.dispatcher, "recv"),
        (asyncore.dispatcher, "send"),
        (asyncore.dispatcher_with_send, "send"),
        (asynchat.async_chat, "push"),
    ],
)
def test_signature_and_name(cls, name):
    method = getattr(cls, name)
    params = list(inspect.signature(method).parameters)
    assert params[0] == "self" and len(params) == 2
    assert method.__name__ in (name, f"_ws_{name}", f"_ac_{name}")
