"""The box's event loops (oca.serve.loops): uvloop's, whose connect to a numeric address must not wait for
libuv's resolver threads (every upstream connection of a fill is made that way, before its first byte)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from oca.serve.loops import new_event_loop, numeric_address


@pytest.mark.parametrize("family, address, numeric", [
    (socket.AF_INET, ("127.0.0.1", 80), True),
    (socket.AF_INET6, ("::1", 80, 0, 0), True),
    (socket.AF_INET, ("localhost", 80), False),  # a name: the resolver's
    (socket.AF_INET6, ("fe80::1%lo", 80, 0, 0), False),  # a scope given by name
    (socket.AF_INET, ("::1", 80), False),  # the other family's address
    (socket.AF_INET, ("127.0.0.1", "http"), False),  # a service name
    (socket.AF_UNIX, "/run/x.sock", False),
])
def test_which_addresses_are_connected_without_resolving(family: int, address: Any, numeric: bool) -> None:
    assert numeric_address(family, address) is numeric


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def _connect(address: Any, *, resolver_allowed: bool) -> socket.socket:
    """`address` connected with the box's uvloop loop's sock_connect; its getaddrinfo raises unless allowed."""
    loop = new_event_loop("uvloop")
    sock = socket.socket()
    sock.setblocking(False)
    try:
        with mock.patch.object(loop, "getaddrinfo", wraps=loop.getaddrinfo) as resolver:
            if not resolver_allowed:
                resolver.side_effect = AssertionError("asked the resolver for a numeric address")
            loop.run_until_complete(asyncio.wait_for(loop.sock_connect(sock, address), 5))
        return sock
    except BaseException:
        sock.close()
        raise
    finally:
        loop.close()


def test_a_numeric_address_is_connected_without_the_resolver(listener: socket.socket) -> None:
    with _connect(listener.getsockname(), resolver_allowed=False) as sock:
        assert sock.getpeername() == listener.getsockname()


def test_a_name_still_goes_to_the_resolver(listener: socket.socket) -> None:
    with _connect(("localhost", listener.getsockname()[1]), resolver_allowed=True) as sock:
        assert sock.getpeername()[1] == listener.getsockname()[1]


def test_a_refused_connect_raises_like_the_loop_s_own() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        _connect(("127.0.0.1", port), resolver_allowed=False)
