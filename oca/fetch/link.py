"""The fill link between the master and one worker: JSON lines over a Unix socket pair, both directions.

Rules kept here:
- Writes never block the event loop: `send` queues into the transport; a peer that stops reading is
  cut off past a large buffer (a stuck worker is the master's supervisor's business, not this link's).
- Each side hands every message to one callback, in order; a line that is not JSON is logged and skipped.
- When the other side goes away, `on_close` is called once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("oca.fetch")
_MAX_BUFFER = 64 << 20


class Link(asyncio.Protocol):
    def __init__(self, on_message: Callable[[Link, dict[str, Any]], None],
                 on_close: Callable[[Link], None] | None = None, name: str = "") -> None:
        self.name = name
        self._on_message = on_message
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket, on_message: Callable[[Link, dict[str, Any]], None],
                   on_close: Callable[[Link], None] | None = None, name: str = "") -> Link:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        link = cls(on_message, on_close, name)
        await loop.connect_accepted_socket(lambda: link, sock)
        return link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            try:
                message = json.loads(line)
            except ValueError:
                log.error("fill link %s: unreadable message %r", self.name, line[:100])
                continue
            if isinstance(message, dict):
                self._on_message(self, message)
        del buffer[:start]

    def send(self, message: dict[str, Any]) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        if transport.get_write_buffer_size() > _MAX_BUFFER:
            log.error("fill link %s: the other side reads nothing; closing the link", self.name)
            transport.abort()
            return
        transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self._on_close is not None:
                self._on_close(self)
