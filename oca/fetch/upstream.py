"""The box's client side: ask upstream sources for an object, in order, and hand back a body to read.

Rules kept here:
- Sources are tried in the configured order (peers of the site, then the parent tier, then origin). A source
  that refuses the connection, does not answer within connect_timeout / first_byte_timeout, answers 5xx or
  (for a peer) does not hold the object moves us to the next one. Only the origin's 404 is final: it
  means the object does not exist (the caller caches that for negative_ttl).
- Peers and parents are boxes: they get the fleet's peer credential (`Authorization: Bearer`); peers are
  asked `Cache-Control: only-if-cached` (RFC 9111 §5.2.1.7) so a peer's miss does not turn into a second
  upstream fetch: it answers 504 and we move on.
- aiohttp's exceptions are translated here, once, into UpstreamError with the status the box answers
  (502, or 504 for timeouts) and a short reason for the X-OCA-Reason header and the log.
- A body read that stalls longer than between_bytes_timeout, or ends before Content-Length, raises
  UpstreamError: the caller must not keep what it got.
- aiohttp stops reading a connection with the read that carries a response's head, when the body goes on
  past it: the fill decides first how the body is read (spliced inside the kernel, or chunk by chunk, which
  resumes the reads). Otherwise uvloop reads on, up to 32 reads per wake-up and until aiohttp's buffer is
  full (2 MiB), before the fill's coroutine runs: a cold 8 MiB miss copied 2.5 MB through Python that the
  splice would have moved, and told its clients of the head ~3 ms late.
- An upstream connection is reused only if nothing arrived on it after its last response ended exactly at
  its framing boundary (RFC 9112 §6.3, §9.3): bytes past a response, sent at once or while the connection
  sat in the pool, would otherwise be read as the answer to the next request, for another key (response
  desync: a cache-poisoning vector). Such a connection is closed, never reused.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection

from oca import __version__
from oca.config import FetchConfig
from oca.fetch.errors import UpstreamError as UpstreamError  # the fetch layer's error, raised here too
from oca.fetch.slices import parse_content_range
from oca.fetch.splice import Splicer, can_splice
from oca.secret_files import read_secret

log = logging.getLogger("oca.fetch")
_PREFETCH_CONNECTIONS = 4  # upstream connections all prefetches share
# A response's buffer before aiohttp pauses reading the socket (its default is 64 KiB): at 64 KiB a fast
# source is paused and resumed every few reads, and a fill hands its clients many small chunks
_READ_BUFFER = 1 << 20


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    url: str  # base URL without trailing slash; the content path is appended
    kind: str  # peer | parent | origin
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamHead:
    """What a source answered, before the body."""

    source: str
    status: int  # 200, 206 or 304
    first: int  # offset in the object of the body's first byte
    length: int | None  # body bytes (None: close-delimited)
    total: int | None  # the whole object's size, when known
    etag: str | None
    last_modified: str | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class SplicedBody:
    """A body taken over for splicing: the bytes aiohttp had read (to be written first), then the splicer
    for the rest (None: aiohttp had read all of it)."""

    buffered: bytes
    splicer: Splicer | None


class UpstreamBody:
    """An open upstream response: iterate chunks, then close."""

    def __init__(self, head: UpstreamHead, response: aiohttp.ClientResponse, between_bytes: float) -> None:
        self.head = head
        self._response = response
        self._between = between_bytes
        self._splicer: Splicer | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it was read from the socket, one read at a time (up to 256 KiB under uvloop): not
        `readany`, which joins everything buffered into one new bytes object (a copy, in fresh memory, and a
        fill that hands its clients nothing until the whole batch is written: 2.3 MB at once was seen)."""
        received = 0
        content = self._response.content
        connection = self._response.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.resume_reading()  # paused at the head (_HeadFirstHandler)
        while True:
            try:
                async with asyncio.timeout(self._between):  # a timer, not wait_for's task per read
                    chunk, boundary = await content.readchunk()
            except TimeoutError:
                raise UpstreamError(504, f"{self.head.source}: no body bytes for {self._between:g}s "
                                         f"after {received} bytes") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(502, f"{self.head.source}: body broke off after {received} bytes: "
                                         f"{_describe(exc)}") from None
            if not chunk:
                if boundary:  # the end of one chunk of a chunked body: not the end of the body
                    continue
                break
            received += len(chunk)
            yield chunk
        expected = self.head.length
        if expected is not None and received != expected:
            raise UpstreamError(502, f"{self.head.source}: body ended at {received} of {expected} bytes")

    def splice_rest(self) -> SplicedBody | None:
        """The body taken over for splicing (oca.fetch.splice), or None when it must be read with `chunks`
        (TLS, chunked, close-delimited, HTTP/1.0, no os.splice, or a body that ended or failed already).
        Call before reading any chunk; once taken, the body is the SplicedBody's, and `close` closes the
        connection instead of pooling it."""
        response = self._response
        connection = response.connection
        protocol = connection.protocol if connection is not None else None
        transport = connection.transport if connection is not None else None
        content = response.content
        sock = transport.get_extra_info("socket") if transport is not None else None
        if protocol is None or transport is None or transport.is_closing() or sock is None or not can_splice(
                platform_splices=hasattr(os, "splice"),
                tls=response.url.scheme != "http" or transport.get_extra_info("sslcontext") is not None,
                http11=response.version == aiohttp.HttpVersion11, length=self.head.length,
                content_length=response.content_length,
                transfer_encoding=response.headers.get("Transfer-Encoding"),
                body_open=not content.is_eof() and content.exception() is None):
            return None
        # aiohttp holds what it read past the head in the body's buffer (and, when its flow control paused the
        # parser, in the parser): each read below can hand the parser's bytes to the buffer, so read until it
        # is empty; then stop aiohttp reading the socket. No await in between: nothing arrives meanwhile.
        parts = []
        while part := content.read_nowait(-1):
            parts.append(part)
        buffered = b"".join(parts)
        if len(buffered) != content.total_bytes:  # some of it was read before: the caller's bug
            raise RuntimeError("splice_rest after chunks of the body were read")
        if content.is_eof():  # it had all of it: its connection went back to the pool, as for `chunks`
            return SplicedBody(buffered, None)
        protocol.pause_reading()
        length = self.head.length or 0
        splicer = Splicer(os.dup(sock.fileno()), len(buffered), length - len(buffered), self.head.source,
                          self._between)
        self._splicer = splicer
        return SplicedBody(buffered, splicer)

    def close(self) -> None:
        if self._splicer is not None:
            self._splicer.close()
        self._response.close()


class _HeadFirstHandler(ResponseHandler):
    """aiohttp's protocol for one upstream connection, which stops reading the socket after the read that
    carried a response's head when its body is still open; `UpstreamBody.chunks` resumes, a splice never does
    (the rest of the body is the kernel's to move)."""

    def data_received(self, data: bytes) -> None:
        before = self._payload
        super().data_received(data)
        payload = self._payload
        if payload is not None and payload is not before and not payload.is_eof() and not self._reading_paused:
            self.pause_reading()


class _FramedConnector(aiohttp.TCPConnector):
    """aiohttp's pool checks only that a connection is open; this one also drops a connection on which bytes
    arrived while it was idle (aiohttp parses them into a queued "response" that the next request would get).
    aiohttp itself closes a connection with surplus bytes already there when the response is released.
    Its connections' protocol stops reading at each response's head (_HeadFirstHandler)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = functools.partial(_HeadFirstHandler, loop=self._loop)  # type: ignore[assignment]  # partial[T] is invariant in T

    async def _get(self, *args: Any, **kwargs: Any) -> Connection | None:
        while (conn := await super()._get(*args, **kwargs)) is not None:
            proto = conn.protocol
            if proto is not None and not proto.should_close:
                return conn
            log.warning("upstream %s sent bytes past its last response: connection closed, not reused",
                        getattr(args[0], "host", "?") if args else "?")
            conn.close()  # released with should_close: the pool closes it and we take the next one
        return None


class Upstream:
    def __init__(self, config: FetchConfig, sources: list[Source]) -> None:
        self.config = config
        self.sources = sources
        self._session: aiohttp.ClientSession | None = None
        self._background: aiohttp.ClientSession | None = None

    def _client(self, background: bool = False) -> aiohttp.ClientSession:
        """The client misses use (no connection limit), or the prefetches' own, with a small connection budget
        of its own so that pre-positioning never queues a player's miss behind it."""
        session = self._background if background else self._session
        if session is None or session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout)
            connector = _FramedConnector(limit=_PREFETCH_CONNECTIONS if background else 0, ttl_dns_cache=60,
                                             enable_cleanup_closed=True)
            session = aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False,
                                            read_bufsize=_READ_BUFFER,
                                            headers={"User-Agent": f"oca/{__version__}"})
            if background:
                self._background = session
            else:
                self._session = session
        return session

    async def close(self) -> None:
        for session in (self._session, self._background):
            if session is not None:
                await session.close()

    async def close_when_idle(self, grace: float = 300.0) -> None:
        """After a reload: let fills still reading from the old session finish, then close it; at once when
        cancelled (the box stops), or the session would be left to the GC ("Unclosed client session")."""
        try:
            await asyncio.sleep(grace)
        finally:
            await self.close()

    async def open(self, key: str, *, byte_range: tuple[int, int] | None = None, if_none_match: str | None = None,
                   sources: list[Source] | None = None, background: bool = False) -> UpstreamBody:
        """The first source's answer for `key` (a range of it, or a 304 to if_none_match), trying `sources`
        (default: the configured ones) in order; `background` for prefetches (their own connections).

        Raises UpstreamError(404) when the origin says the object does not exist, else UpstreamError(502/504)
        naming every source's failure once all failed."""
        order = self.sources if sources is None else sources
        if not order:
            raise UpstreamError(404, "not in cache and no upstream source is configured")
        failures: list[str] = []
        status = 502
        for source in order:
            try:
                return await self._try(source, key, byte_range, if_none_match, background)
            except UpstreamError as exc:
                if exc.status in (404, 416) and source.kind == "origin":
                    raise
                failures.append(exc.reason)
                status = exc.status if exc.status in (502, 504) else 502
                # a peer that does not hold it (its only-if-cached 504) is routine: the next source is asked
                peer_miss = source.kind == "peer" and exc.status == 404
                log.log(logging.DEBUG if peer_miss else logging.WARNING, "fill %s: %s", key, exc.reason)
        raise UpstreamError(status, "; ".join(failures))

    async def _try(self, source: Source, key: str, byte_range: tuple[int, int] | None,
                   if_none_match: str | None, background: bool) -> UpstreamBody:
        headers = {"Accept-Encoding": "identity"}
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        if source.kind != "origin" and source.credential:
            headers["Authorization"] = f"Bearer {source.credential}"
        if source.kind == "peer":
            headers["Cache-Control"] = "only-if-cached"
        url = f"{source.url}/{key}"
        try:
            response = await asyncio.wait_for(
                self._client(background).get(url, headers=headers, allow_redirects=False),
                self.config.connect_timeout + self.config.first_byte_timeout)
        except TimeoutError:
            raise UpstreamError(504, f"{source.name}: no response within "
                                     f"{self.config.first_byte_timeout:g}s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(502, f"{source.name}: {_describe(exc)}") from None
        try:
            return self._accept(source, response, byte_range)
        except UpstreamError:
            response.close()
            raise

    def _accept(self, source: Source, response: aiohttp.ClientResponse,
                byte_range: tuple[int, int] | None) -> UpstreamBody:
        status = response.status
        if status == 404 or (source.kind == "peer" and status == 504):
            raise UpstreamError(404, f"{source.name}: does not have it ({status})")
        if status == 416 and byte_range is not None:
            raise UpstreamError(416, f"{source.name}: the object is shorter than byte {byte_range[0]}")
        if status not in (200, 206, 304):
            raise UpstreamError(502, f"{source.name}: answered {status}")
        length = response.content_length
        first, total = 0, length
        if status == 206:
            parsed = parse_content_range(response.headers.get("Content-Range"))
            if parsed is None or byte_range is None or parsed[0] != byte_range[0]:
                raise UpstreamError(502, f"{source.name}: 206 with an unusable Content-Range "
                                         f"{response.headers.get('Content-Range')!r}")
            first, last, total = parsed
            if length is not None and length != last - first + 1:
                raise UpstreamError(502, f"{source.name}: Content-Length {length} does not match Content-Range")
            length = last - first + 1
        elif status == 304:
            length, total = 0, None
        head = UpstreamHead(source.name, status, first, length, total, response.headers.get("ETag"),
                            response.headers.get("Last-Modified"), response.headers.get("Content-Type"))
        return UpstreamBody(head, response, self.config.between_bytes_timeout)


def sources_from_config(config: FetchConfig) -> list[Source]:
    """The configured sources, with the peer credential read from its file (ConfigError if unreadable)."""
    credential = None
    if config.peer_credential_file:
        credential = read_secret(config.peer_credential_file, "fetch.peer_credential_file")
    return [Source(s.name, s.url.rstrip("/"), s.kind, credential) for s in config.sources]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "closed the connection without answering"
    text = str(exc) or type(exc).__name__
    return text[:200]
