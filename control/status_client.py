"""The control plane's client for the GETs it sends every box as a matter of routine: `/status` at every
health poll and `/inventory/titles` after a poll that shows the box's inventory moved, over one connection
kept open to each box.

Why not aiohttp's client, which the rest of the control plane uses: the poller asks every box every
`health.interval`, and at 20,000 boxes aiohttp's per-request machinery (URL objects, request and response
objects, writers) cost 140-200 µs of CPU per poll, more than one core for a 2 s interval; a box's first
inventory through aiohttp, on a new connection, cost 0.3 ms of CPU more. Here a box's status request is
bytes built once, the answer is parsed by llhttp (httptools, the data plane's parser) and each box keeps
one idle connection between polls, which its inventory fetches reuse.

Rules kept here:
- HTTP/1.1 GET only, `Connection: keep-alive`; http:// or https:// (TLS verified with the system CAs).
- An answer is (status, body). A body over `max_body` (the client's, or the one a GET passes: an inventory
  is allowed more than a status), an answer llhttp rejects, or a connection that ends
  before the answer does raise ValueError or ConnectionError (the poller's "bad answer" / "cannot reach").
- A kept connection the box closed between polls (it timed out an idle keep-alive) is retried once on a new
  connection; a fresh connection is never retried.
- At most `max_idle` connections are kept (idle, or in use by the poll of their box); when that many are,
  a connection just used is closed, not an older one: the poller asks the boxes in the same order every
  round, and evicting the least recently used made every box reconnect at every poll (each one's
  connection had just been evicted). Each is an open file, and the process's open-file limit bounds them
  (default: the soft limit less a reserve, see `default_max_idle`). A request cancelled half-way (the
  poller's timeout) closes its connection.
- `connect` opens a box's connection ahead of its first GET and keeps it (room allowing): the poller warms
  every box's connection before its first scheduled round, so that round asks over kept connections only
  instead of paying up to 20,000 handshakes inside its span.
- A kept connection stays in the table while it is used (a second GET to the same box meanwhile opens a
  connection of its own, closed after its answer): taking each out and putting it back at every poll made
  the dict rebuild itself over and over (a re-inserted key takes a new entry until the next resize), 20,000
  entries at a time.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

MAX_BODY = 1 << 20  # a /status answer is a few hundred bytes; a box is not allowed to make us buffer more


@dataclass(frozen=True, slots=True)
class Target:
    """Where one box's /status is and the request bytes that ask for it."""

    host: str
    port: int
    tls: bool
    request: bytes

    @classmethod
    def of(cls, base_url: str, path: str, token: str | None = None) -> Target:
        """`base_url` is a box's admin URL (`http://10.0.0.1:8081`, maybe with a path); ValueError if it is
        not an http(s) URL with a host."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r}: expected an http(s) URL with a host")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"GET {parts.path.rstrip('/')}{path} HTTP/1.1", f"Host: {host_header}", "Connection: keep-alive",
                 "Accept: application/json", "User-Agent: oca-control"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        return cls(parts.hostname, port, tls, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def default_max_idle(reserve: int = 2048) -> int:
    """The process's soft open-file limit less `reserve` descriptors for everything else (API clients, the
    store, polls in flight, pushes): a box whose connection is not kept costs a new connection per poll,
    about twice the CPU of a kept one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(0, soft - reserve)


class _Connection(asyncio.Protocol):
    """One connection to one box: one request at a time."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = False
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: what create_connection made

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a callback's error comes out as one too
            too_big = self.size > self.max_body
            self._fail(ValueError(f"answer larger than {self.max_body} bytes" if too_big else f"not HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionResetError("the box closed the connection before its answer ended"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            raise ValueError(f"answer larger than {self.max_body} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = bool(self.parser.should_keep_alive())
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((int(self.parser.get_status_code()), b"".join(self.body)))

    # ours
    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def get(self, request: bytes, max_body: int) -> tuple[int, bytes]:
        assert self.transport is not None and self.waiter is None
        self.max_body = max_body
        # one parser per connection: llhttp starts the next message after a complete one (a new parser per
        # poll cost 1.4 µs and a collector-tracked object: its set-up looks up every callback by name)
        self.body, self.size, self.keep_alive = [], 0, False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class StatusClient:
    """GETs over kept connections, one per target (see the module rules)."""

    def __init__(self, max_idle: int | None = None, max_body: int = MAX_BODY) -> None:
        self.max_idle = default_max_idle() if max_idle is None else max_idle
        self.max_body = max_body
        self._kept: dict[tuple[str, int, bool], _Connection] = {}
        self._tls: ssl.SSLContext | None = None

    @property
    def idle(self) -> int:
        """Connections kept (between polls, or in use by one)."""
        return len(self._kept)

    async def get(self, target: Target, max_body: int | None = None) -> tuple[int, bytes]:
        """(status, body) of the target's GET; `max_body` instead of the client's limit for this answer."""
        key = (target.host, target.port, target.tls)
        limit = self.max_body if max_body is None else max_body
        kept = self._kept.get(key)
        if kept is not None and kept.waiter is None:  # kept and not in use
            if kept.open:
                try:
                    return self._done(key, kept, await self._ask(key, kept, target, limit))
                except ConnectionError:
                    pass  # closed by the box while idle: once more on a new connection
            self._forget(key, kept)
        fresh = await self._connect(target)
        return self._done(key, fresh, await self._ask(key, fresh, target, limit))

    async def connect(self, target: Target) -> bool:
        """Open a connection to the target and keep it for its GETs, unless one is kept already or the table
        is full; True when one was opened and kept. Errors (OSError) are the caller's."""
        key = (target.host, target.port, target.tls)
        if key in self._kept or len(self._kept) >= self.max_idle:
            return False
        conn = await self._connect(target)
        if key in self._kept or len(self._kept) >= self.max_idle:  # filled while we connected (calls at once
            conn.close()                                            # can each see the last free place)
            return False
        self._kept[key] = conn
        return True

    async def _ask(self, key: tuple[str, int, bool], conn: _Connection, target: Target,
                   max_body: int) -> tuple[int, bytes]:
        try:
            return await conn.get(target.request, max_body)
        except BaseException:
            self._forget(key, conn)  # cancelled or failed half-way: the connection's state is unknown
            raise

    def _done(self, key: tuple[str, int, bool], conn: _Connection, answer: tuple[int, bytes]) -> tuple[int, bytes]:
        kept = self._kept.get(key)
        if conn.keep_alive and conn.open and (kept is conn or (kept is None and len(self._kept) < self.max_idle)):
            self._kept[key] = conn
        else:
            self._forget(key, conn)
        return answer

    def _forget(self, key: tuple[str, int, bool], conn: _Connection) -> None:
        if self._kept.get(key) is conn:
            del self._kept[key]
        conn.close()

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if target.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        _, conn = await loop.create_connection(lambda: _Connection(self.max_body), target.host, target.port,
                                               ssl=tls, server_hostname=target.host if tls else None)
        return conn

    def close(self) -> None:
        while self._kept:
            _, conn = self._kept.popitem()
            conn.close()
