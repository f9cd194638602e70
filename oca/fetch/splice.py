"""An upstream body moved into a fill's feed inside the kernel: socket -> pipe -> file with os.splice (Linux).

Rules kept here:
- Only a body framed by its Content-Length, on a plain TCP connection, over HTTP/1.1, is spliced
  (`can_splice` decides, purely). TLS (the kernel does not decrypt), chunked or close-delimited bodies, and
  a platform without os.splice keep aiohttp's reads (oca.fetch.upstream's `chunks`). The head is always
  aiohttp's: its connect and first-byte timeouts, the pool's framing checks, the sources' order and
  fallback stay as they are; only the body's bytes after the head bypass Python.
- The bytes aiohttp had already read past the head are handed over first (`buffered`); the rest never
  enters Python. Exactly the declared length is taken from the socket, never a byte more: bytes past it are
  never read, never served, never stored.
- aiohttp's parser never sees the end of a spliced body, so its connection is closed afterwards, never
  pooled (a spliced fill costs the next fill a new upstream connection; the pool's rule that a connection is
  reused only at its framing boundary holds). So only a body of at least SPLICE_FROM bytes is spliced: the
  copy it saves (a few ms of CPU per MiB here) outweighs a new connection's round trip to a distant source,
  which for a small segment would cost more than copying it.
- A stall longer than between_bytes_timeout raises UpstreamError(504); the socket's end or a socket error
  before the declared length, UpstreamError(502): the caller keeps nothing. An error writing the file is the
  file's OSError, for the caller to charge to its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator

from oca.fetch.errors import UpstreamError

SPLICE_FROM = 1 << 20  # bytes of body: below it, aiohttp's reads (and a pooled connection) are cheaper
PIPE_SIZE = 1 << 20  # bytes per splice (Linux's default pipe holds 64 KiB; 1 MiB is pipe-max-size's default)
YIELD_EVERY = 1 << 20  # bytes moved back to back before the loop gets a turn (other fills, the announcements)
_MOVE = getattr(os, "SPLICE_F_MOVE", 1)
_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)


def can_splice(*, platform_splices: bool, tls: bool, http11: bool, length: int | None,
               content_length: int | None, transfer_encoding: str | None, body_open: bool) -> bool:
    """Whether a response's body can be spliced: `length` is the body's size as the head says it,
    `content_length` the header's value, `body_open` that the body has not ended or failed yet."""
    return (platform_splices and not tls and http11 and transfer_encoding is None and body_open
            and length is not None and length >= SPLICE_FROM and content_length == length)


class Splicer:
    """The rest of one body (`remaining` bytes after `received`), read from `sock` (a descriptor of our own,
    closed by `close`) into a file."""

    def __init__(self, sock: int, received: int, remaining: int, source: str, between_bytes: float) -> None:
        self._sock = sock
        self._source = source
        self._between = between_bytes
        self._pipe: tuple[int, int] | None = None
        self.received = received
        self.remaining = remaining
        self.spliced = 0  # bytes moved by splice (not the buffered ones)

    async def into(self, fd: int) -> AsyncIterator[int]:
        """Move the rest of the body to `fd` at its current offset; yields the bytes of each move once they
        are in the file."""
        if self.remaining <= 0:
            return
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # a user over its pipe-pages limit keeps 64 KiB: slower, not wrong
                fcntl.fcntl(self._pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        out, into_pipe = self._pipe
        since_turn = 0
        while self.remaining > 0:
            try:
                n = os.splice(self._sock, into_pipe, min(self.remaining, PIPE_SIZE), flags=_MOVE | _NONBLOCK)
            except BlockingIOError:
                await self._readable()
                since_turn = 0
                continue
            except OSError as exc:
                raise UpstreamError(502, f"{self._source}: body broke off after {self.received} bytes: "
                                         f"{exc.strerror or exc}") from None
            if n == 0:
                raise UpstreamError(502, f"{self._source}: body ended at {self.received} of "
                                         f"{self.received + self.remaining} bytes")
            _drain(out, fd, n)
            self.received += n
            self.remaining -= n
            self.spliced += n
            yield n
            since_turn += n
            if since_turn >= YIELD_EVERY:
                since_turn = 0
                await asyncio.sleep(0)

    async def _readable(self) -> None:
        """Wait until the socket has bytes (or its end), at most between_bytes_timeout."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._sock, wake)
        try:
            async with asyncio.timeout(self._between):
                await ready
        except TimeoutError:
            raise UpstreamError(504, f"{self._source}: no body bytes for {self._between:g}s "
                                     f"after {self.received} bytes") from None
        finally:
            loop.remove_reader(self._sock)

    def close(self) -> None:
        descriptors = [self._sock, *(self._pipe or ())]
        self._sock, self._pipe = -1, None
        for fd in descriptors:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _drain(pipe: int, fd: int, n: int) -> None:
    """Move the `n` bytes in `pipe` to `fd` (they are there: never EAGAIN)."""
    while n > 0:
        n -= os.splice(pipe, fd, n, flags=_MOVE)
