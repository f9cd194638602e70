"""The fill link between the master and one worker: a Unix socket pair carrying protocol messages, both ways.

Rules kept here:
- Writes never block the event loop: `send` queues into the transport; a peer that stops reading is
  cut off past a large buffer (a stuck worker is the master's supervisor's business, not this link's).
- Bytes become messages only in oca.protocol (the codec of the version the two sides agreed on); each side
  hands every message to one callback, in order; a line that is not a message is logged and skipped.
- When the other side goes away, `on_close` is called once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from oca.protocol.codec import Codec, Lines, ProtocolError

log = logging.getLogger("oca.fetch")
_MAX_BUFFER = 64 << 20

In = TypeVar("In")


class Link(asyncio.Protocol, Generic[In]):
    """One end of a fill link, reading messages of type `In` (decoded by `read`) and sending any message."""

    def __init__(self, codec: Codec, read: Callable[[Codec, bytes], In],
                 on_message: Callable[[Link[In], In], None],
                 on_close: Callable[[Link[In]], None] | None = None, name: str = "") -> None:
        self.name = name
        self.codec = codec
        self._read = read
        self._on_message = on_message
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._lines = Lines()
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket, codec: Codec, read: Callable[[Codec, bytes], In],
                   on_message: Callable[[Link[In], In], None],
                   on_close: Callable[[Link[In]], None] | None = None, name: str = "") -> Link[In]:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        link = cls(codec, read, on_message, on_close, name)
        await loop.connect_accepted_socket(lambda: link, sock)
        return link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            try:
                message = self._read(self.codec, line)
            except ProtocolError as exc:
                log.error("fill link %s: %s", self.name, exc)
                continue
            self._on_message(self, message)

    def send(self, message: msgspec.Struct) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        if transport.get_write_buffer_size() > _MAX_BUFFER:
            log.error("fill link %s: the other side reads nothing; closing the link", self.name)
            transport.abort()
            return
        transport.write(self.codec.encode(message))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self._on_close is not None:
                self._on_close(self)
