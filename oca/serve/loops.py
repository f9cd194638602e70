"""The event loops the box's processes run on: uvloop's (the default), or the standard library's.

Rules kept here:
- uvloop's `sock_connect` resolves every address in libuv's thread pool, numeric ones included (uvloop 0.23
  asks getaddrinfo without the socket's type, which skips its own numeric fast path). aiohttp connects every
  upstream connection with `sock_connect`, so each fill waited for a pool thread before its connect: 0.1 ms
  on an idle machine, up to 2 ms seen in a busy master, all of it before the miss's first byte. An IPv4 or
  IPv6 address given as numbers is connected here directly (a non-blocking connect, then writability and
  SO_ERROR, as asyncio's own loop does); a name still goes to uvloop's resolver.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of `kind` ("uvloop" or "asyncio")."""
    if kind == "uvloop":
        return _uvloop_class()()
    return asyncio.new_event_loop()


def numeric_address(family: int, address: Any) -> bool:
    """Whether `address` is an (IP, port, ...) tuple of `family` whose IP is written as numbers."""
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or len(address) < 2:
        return False
    host = address[0]
    if not isinstance(host, str) or not isinstance(address[1], int):
        return False
    try:
        socket.inet_pton(family, host)
    except OSError:  # a name, a scoped IPv6 address ("fe80::1%eth0"): the resolver's
        return False
    return True


async def connect_numeric(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[Any, ...]) -> None:
    """Connect non-blocking `sock` to a numeric `address` on `loop`, without resolving it."""
    try:
        sock.connect(address)
        return
    except (BlockingIOError, InterruptedError):
        pass
    writable = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await writable
    finally:
        loop.remove_writer(fd)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, f"Connect call failed {address}")


_UVLOOP_CLASS: type[asyncio.AbstractEventLoop] | None = None


def _uvloop_class() -> type[asyncio.AbstractEventLoop]:
    """uvloop's loop with `sock_connect` for numeric addresses done here (imported on first use: the asyncio
    loop needs no uvloop)."""
    global _UVLOOP_CLASS
    if _UVLOOP_CLASS is None:
        import uvloop

        class Loop(uvloop.Loop):
            async def sock_connect(self, sock: socket.socket, address: Any) -> None:
                if numeric_address(sock.family, address):
                    await connect_numeric(self, sock, address)
                else:
                    await super().sock_connect(sock, address)

        _UVLOOP_CLASS = Loop
    return _UVLOOP_CLASS
