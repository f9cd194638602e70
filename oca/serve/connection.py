"""One client connection of the data port: httptools parses, the handler plans, this module does the I/O.

This is the only module of the data plane that sends to a client: every byte of a response leaves here
(transport writes, os.sendfile on the client socket, direct sends with MSG_MORE), and here the descriptors a
response owns are closed once it ends. It opens no file: the handler opens an object's file (reading a small
one into the memory cache) and hands the descriptor over in a FileSlice; a miss's is the worker's fill file
(oca.fetch.remote). Rules it keeps:
- Responses from memory go through the event loop's transport, whose write path is native under uvloop
  (it batches the writes of one loop iteration, so a worker answers several clients before it wakes them).
  While the transport is paused (its buffer is past the high-water mark) no further pipelined request of
  the connection is answered.
- File bodies go out with os.sendfile on the client socket itself (zero-copy), under uvloop and the stock
  asyncio loop alike, and only while the transport's buffer is empty, so bytes never overtake each other:
  when it is not empty, the write-buffer limits drop to 0/0 for that response, which makes pause_writing /
  resume_writing say exactly when it is empty again. The head goes out directly too, with MSG_MORE.
  A partial send waits for writability on a dup() of the socket (the loop refuses a second watcher on a
  transport's own descriptor) and resumes where it stopped.
- A response that cannot be completed (file shorter than its length, client gone) aborts the connection
  before Content-Length is reached: never a clean short response.
- Only an error the file itself raises becomes a StorageFault (charged to its tier); a send that fails on
  the socket's side (reset, send timeout, a reader that stopped) is the client's and blames no tier.
- Requests are answered in order; pipelined ones wait in `pending` (reading pauses past a limit).
- Header limits: max_header_bytes for the request line and headers together, max_headers fields (431).
- A head that announces content (Content-Length above 0, any Transfer-Encoding) is refused with 400 and
  the connection closed before any body byte is parsed (oca.http.framing: request smuggling); so is an
  HTTP/1.1 head without Host, or any head with two Host lines (RFC 9112 §3.2).
- Every response ends with one access-log record and one stats update, aborted or not (Server.record:
  plain hits from memory are recorded in batches).
- A head that is one Host line this connection already sent is not checked again: check_framing's answer
  for it cannot change (any other header, or another Host, and it is checked).
- A read that is exactly one request head, arriving with nothing queued or in flight, is looked up in the
  worker's response memo (oca.serve.memo): bytes answered before as a plain hit from memory are answered
  again without the parser or the handler, with the Date of now, this connection's CMSD line, and the same
  record (counters, access-log line). A memo hit leaves the parser where a parsed request would: between
  messages.
- Every head carries the box's CMSD-Dynamic line (oca.http.cmsd), built per connection: the throughput
  estimate is read from the socket's TCP_INFO at most once a second of the connection's activity, and again
  when the box's duress changes; between those the same bytes are reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from oca.http.cmsd import TCP_INFO_BYTES, etp_from_tcp_info
from oca.http.framing import check_framing
from oca.protocol.messages import FillState
from oca.serve.messages import FileSlice, Growing, Lazy, ObjectTruncated, Part, Request, Response, StorageFault

if TYPE_CHECKING:
    from oca.http.cmsd import Signals
    from oca.serve.objects import CachedObject
    from oca.serve.server import Server

# Request durations need a clock finer than the loop's (uvloop's moves once per iteration, in ms)
_clock = time.perf_counter
_MAX_PENDING = 32
_CMSD_REFRESH = 1.0  # seconds of a connection's activity between two reads of its TCP_INFO
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT)
# Past max_connections. No Date: RFC 9110 §6.6.1 makes it optional on 5xx; this costs no clock, no handler
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nCache-Control: no-store\r\n"
            b"X-OCA-Reason: connection limit\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH", "CONNECT", "TRACE")}
# Header names as sent -> lower-cased text: clients repeat the same few spellings, so each is decoded once
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 256  # a client inventing names costs a decode per header, never memory


class _HeadersTooLarge(Exception):
    """Raised from a parser callback; httptools wraps it in HttpParserCallbackError (see data_received)."""


class _BadFraming(Exception):
    """Raised from on_headers_complete: oca.http.framing refused the head (content, Host); 400, then close."""


class Connection(asyncio.Protocol):
    __slots__ = (
        "_body_sent",
        "_client",
        "_cmsd",
        "_cmsd_at",
        "_cmsd_generation",
        "_current",
        "_current_request",
        "_dup",
        "_fd",
        "_head_left",
        "_header_bytes",
        "_headers",
        "_host_ok",
        "_loop",
        "_memo",
        "_out",
        "_parser",
        "_paused_reading",
        "_pending",
        "_server",
        "_sock",
        "_strict",
        "_transport",
        "_url",
        "_write_paused",
        "_writer_armed",
        "close_after",
        "closed",
        "header_started",
        "last_activity",
        "requests_done",
    )

    def __init__(self, server: Server) -> None:
        self._server = server
        self._loop = server.loop
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self._fd = -1
        self._sock: socket.socket | None = None  # the transport's socket, for TCP_INFO (None: not TCP)
        self._cmsd = b"\r\n"  # what ends this connection's heads: the CMSD-Dynamic line and the blank line
        self._cmsd_at = -_CMSD_REFRESH
        self._cmsd_generation = -1
        self._dup: socket.socket | None = None  # dup() of the client socket: see _direct
        self._head_left = 0  # bytes of the current head not yet sent directly
        self._client = ""
        self._memo = server.handler.memo
        self._parser = httptools.HttpRequestParser(self)
        self._pending: deque[Request] = deque()
        self._out: deque[Part] = deque()
        self._current: Response | None = None
        self._current_request: Request | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._host_ok: str | None = None  # a Host value check_framing let through on this connection
        self._body_sent = 0
        self._paused_reading = False
        self._write_paused = False
        self._strict = False  # write-buffer limits are 0/0 while a file response waits for the buffer
        self._writer_armed = False
        self.close_after = False
        self.closed = False
        self.header_started: float | None = None
        self.last_activity = self._loop.time()
        self.requests_done = 0

    # -- state the server's sweeper looks at ----------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._current is None and not self._pending and self.header_started is None

    @property
    def sending(self) -> bool:
        return self._current is not None or self._write_paused

    # -- transport callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if isinstance(peer, tuple) else "local"
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        if not self._server.admit(self):  # past max_connections: a canned 503, then close
            self.closed = True
            self._transport.write(_REFUSAL)
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        now = self.last_activity = self._loop.time()
        raw = None
        if self.header_started is None:  # bytes of a new request: its head must be complete by header_timeout
            # Nothing queued before these bytes, nothing held back: if they are a request head answered before
            # as a plain hit, answer it again as it was (oca.serve.memo); else they may become such a head
            if (data.endswith(b"\r\n\r\n") and self._current is None and not self._pending and not self.close_after
                    and not self._write_paused):
                entry = self._memo.get(data)
                if entry is not None:
                    self._replay(entry)
                    return
                raw = data
            self.header_started = now
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade and CONNECT are not served here")
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._fail(431, "request header fields too large")
            elif isinstance(exc.__context__, _BadFraming):
                self._fail(400, str(exc.__context__))
            else:
                self._fail(400, f"malformed request: {exc}")
            return
        pending = self._pending
        if raw is not None and len(pending) == 1 and not self._url and not self._headers:
            pending[0].raw = raw  # one whole head, nothing after it: the handler may remember its answer
        elif len(pending) > _MAX_PENDING:
            self._pause_reading()
        self._next()

    def _replay(self, entry: CachedObject) -> None:
        """Answer a request whose bytes were answered before as a plain hit of `entry` (oca.serve.memo): the
        same head with the Date of now and this connection's CMSD line, the same body, recorded alike."""
        started = _clock()
        body = entry.body
        assert body is not None  # the memo hands out only entries that hold their body
        server = self._server
        head = server.handler.hit_head(entry, len(body))
        signals = server.cmsd
        if signals is not None:  # _with_cmsd, inline: this is the most common answer
            if (self._cmsd_generation != signals.generation
                    or self.last_activity - self._cmsd_at >= _CMSD_REFRESH):
                self._refresh_cmsd(signals)
            head = head[:-2] + self._cmsd
        if entry.fd >= 0 and not self._transport.get_write_buffer_size():
            self._send_kept(head, body, entry.fd)
        else:
            self._transport.writelines((head, body))
        self.requests_done += 1
        server.hit(entry, len(body), started, self._client, entry.log_fields)

    def _send_kept(self, head: bytes, body: bytes, fd: int) -> None:
        """A whole body from memory whose descriptor the object cache also keeps (oca.serve.objects; a memo
        replay or a plain hit): the head with MSG_MORE, the body by sendfile from that descriptor; whatever the
        socket does not take at once (or a read error of the file) goes through the transport from the bytes in
        memory, so no descriptor of the cache is used after this call. The transport's buffer is empty: nothing
        is sent out of order."""
        try:
            sent = self._direct().send(head, socket.MSG_MORE)
        except OSError:  # EAGAIN; or an error the transport meets too and handles as for any write
            sent = 0
        if sent < len(head):
            self._transport.writelines((head[sent:], body))
            return
        try:
            sent = os.sendfile(self._fd, fd, 0, len(body))
        except OSError:  # EAGAIN, or the file's disk failing: the bytes in memory are the same
            sent = 0
        if sent < len(body):
            self._transport.write(memoryview(body)[sent:])

    def eof_received(self) -> bool:
        """The client finished sending: answer what it asked, then close."""
        self.close_after = True
        if self._current is None and not self._pending:
            self.close()
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.last_activity = self._loop.time()
        if self._current is not None:
            if self._out:
                self._flush()
        elif self._pending:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._current is not None:
            self._out.clear()
            self._finish(aborted=True, error=None)
        self._pending.clear()
        self._disarm_writer(release=True)
        self.closed = True
        self._server.forget(self)

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._server.max_header_bytes:
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        headers = self._headers
        if self._header_bytes > self._server.max_header_bytes or len(headers) >= self._server.max_headers:
            raise _HeadersTooLarge
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[name] = key
        text = value.decode("latin-1")
        # RFC 9110 §5.3: repeated fields combine as a comma list (a doubled Range becomes invalid, as it should)
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        # stops the parser before a byte of any body is read
        headers = self._headers
        host = headers.get("host")
        if host is not None and host == self._host_ok and len(headers) == 1:
            return  # a head of one Host line this connection sent before: check_framing let that through
        reason = check_framing(headers, self._parser.get_http_version())
        if reason is not None:
            raise _BadFraming(reason)
        self._host_ok = host

    def on_message_complete(self) -> None:
        parser = self._parser
        method = parser.get_method()
        self._pending.append(Request(
            _METHODS.get(method) or method.decode("ascii", "replace"), self._url, self._headers,
            parser.should_keep_alive() and not self.close_after, self._client, _clock(),  # closing: say so
        ))
        # ready for the next message on this connection (no on_message_begin: one callback fewer per request)
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self.header_started = None

    def _fail(self, status: int, reason: str) -> None:
        """A request we cannot parse (or that took too long): answer after what is queued, then close."""
        self._pause_reading()
        self.close_after = True
        self.header_started = None
        self._pending.append(Request("", b"", {}, False, self._client, _clock(), (status, reason)))
        self._next()

    def _pause_reading(self) -> None:
        if not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()

    # -- writing ----------------------------------------------------------------------------------

    def _next(self) -> None:
        server = self._server
        while self._current is None and self._pending and not self.closed and not self._write_paused:
            req = self._pending.popleft()
            if self._paused_reading and not self.close_after and len(self._pending) <= _MAX_PENDING:
                self._paused_reading = False
                self._transport.resume_reading()
            if req.failure is not None:
                resp = server.handler.error(None, *req.failure, close=True)
            else:
                try:
                    resp = server.handler.handle(req)
                except Exception as exc:  # a bug must cost one request, not the worker
                    server.log_exception(exc)
                    resp = server.handler.error(req, 500, "internal error", close=True)
            if self.close_after and not self._pending:  # the last answer owed: queued ones go out first
                resp.close = True
            self._start(req, resp)

    def _start(self, req: Request, resp: Response) -> None:
        self._current = resp
        self._current_request = req
        if resp.defer is not None:  # a miss: the handler answers once the fill knows what it got
            defer, resp.defer = resp.defer, None
            defer(lambda final: self._deferred(req, resp, final))
            return
        transport = self._transport
        parts = resp.parts
        head = self._with_cmsd(resp.head)
        if not parts:
            transport.write(head)
            self._body_sent = 0
            self._finish(aborted=False)
        elif len(parts) == 1 and type(parts[0]) is bytes:
            kept = resp.kept
            if kept is not None and kept.fd >= 0 and not transport.get_write_buffer_size():
                self._send_kept(head, parts[0], kept.fd)
            else:
                transport.writelines((head, parts[0]))  # one writev under uvloop: no copy of the body
            self._body_sent = len(parts[0])  # handed to the transport; a later reset shows in connection_lost
            self._finish(aborted=False)
        else:
            self._body_sent = 0
            self._out.extend(parts)
            if self._write_paused or transport.get_write_buffer_size():
                # behind what the transport still holds: with 0/0 limits resume_writing says when it is empty
                self._strict = True
                transport.set_write_buffer_limits(high=0, low=0)
                transport.write(head)
                self._head_left = 0
            else:
                self._out.appendleft(head)  # sent with MSG_MORE so it rides with the file's first bytes
                self._head_left = len(head)
            self._flush()

    def _with_cmsd(self, head: bytes) -> bytes:
        """The head with this connection's CMSD-Dynamic line before its blank line (oca.http.cmsd)."""
        signals = self._server.cmsd
        if signals is None:
            return head
        if self._cmsd_generation != signals.generation or self.last_activity - self._cmsd_at >= _CMSD_REFRESH:
            self._refresh_cmsd(signals)
        return head[:-2] + self._cmsd

    def _refresh_cmsd(self, signals: Signals) -> None:
        """Build this connection's CMSD-Dynamic line again: the box's duress moved, or a second of activity
        passed since its throughput estimate was read from TCP_INFO."""
        etp = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                etp = etp_from_tcp_info(self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES))
        self._cmsd = signals.head_end(etp)
        self._cmsd_at, self._cmsd_generation = self.last_activity, signals.generation

    def _deferred(self, req: Request, placeholder: Response, final: Response) -> None:
        if self._current is not placeholder or self.closed:  # the client left while we waited
            _discard(final)
            return
        if self.close_after:
            final.close = True
        self._start(req, final)

    def _wake(self, resp: Response) -> None:
        """More bytes of a growing body arrived (or its fill ended): carry on sending if still on it."""
        if self._current is resp and not self.closed and not self._writer_armed:
            self._flush()

    def _direct(self) -> socket.socket:
        """A dup() of the client socket, kept for the connection's life: the loop allows only one watcher
        per descriptor, and the transport has the original; direct sends also take MSG_MORE."""
        if self._dup is None:
            self._dup = socket.socket(fileno=os.dup(self._fd))
        return self._dup

    def _flush(self) -> None:
        """Send queued parts directly on the socket while the transport's buffer is empty; files with sendfile."""
        out = self._out
        while out:
            if self._write_paused:
                return  # resume_writing calls us again once the transport's buffer is empty
            item = out[0]
            if isinstance(item, Lazy):
                try:
                    out[0] = item.resolve()
                except (ObjectTruncated, StorageFault) as exc:
                    self.abort(exc)
                    return
                except Exception as exc:
                    self._server.log_exception(exc)
                    self.abort(exc)
                    return
                continue
            if isinstance(item, Growing):
                if not self._send_growing(item):
                    return
                continue
            try:
                if isinstance(item, FileSlice):
                    sent = os.sendfile(self._fd, item.fd, item.offset, item.length)
                else:
                    sent = self._direct().send(item, socket.MSG_MORE if len(out) > 1 and _ready(out[1]) else 0)
            except (BlockingIOError, InterruptedError):
                self._arm_writer()
                return
            except OSError as exc:
                self.abort(_blame(exc, item.fd, item.offset) if isinstance(item, FileSlice) else _blame(exc))
                return
            if isinstance(item, FileSlice):
                if sent == 0:  # the file ended before its length: never finish cleanly
                    self.abort(ObjectTruncated("object file ended before its length"))
                    return
                self._body_sent += sent
                if sent < item.length:
                    out[0] = FileSlice(item.fd, item.offset + sent, item.length - sent)
                    continue  # the next call says EAGAIN (socket full) or takes more
            else:
                head = min(sent, self._head_left)
                self._head_left -= head
                self._body_sent += sent - head
                if sent < len(item):
                    out[0] = item[sent:]
                    self._arm_writer()
                    return
            out.popleft()
        self.last_activity = self._loop.time()
        self._disarm_writer()
        self._finish(aborted=False)

    def _send_growing(self, item: Growing) -> bool:
        """Send what has arrived of a growing body; False when we must stop here (wait, or aborted)."""
        body = item.body
        if body.result is FillState.STORED and item.fallback is not None:
            self._out[0] = item.fallback()
            return True
        ready = body.available - item.offset
        if ready <= 0:
            if body.result:  # ended (failed, or done short of what we promised): never a clean short body
                self.abort(ObjectTruncated(f"upstream fill ended: {body.reason or body.result}"))
                return False
            current = self._current
            assert current is not None
            body.wait(lambda: self._wake(current))
            self.last_activity = self._loop.time()
            return False
        try:
            sent = os.sendfile(self._fd, body.fd, item.offset, min(ready, item.length))
        except (BlockingIOError, InterruptedError):
            self._arm_writer()
            return False
        except OSError as exc:
            self.abort(_blame(exc, body.fd, item.offset))
            return False
        if sent == 0:
            self.abort(ObjectTruncated("fill file shorter than announced"))
            return False
        self._body_sent += sent
        self.last_activity = self._loop.time()
        if sent < item.length:
            self._out[0] = Growing(body, item.offset + sent, item.length - sent, item.fallback)
        else:
            self._out.popleft()
        return True

    def _arm_writer(self) -> None:
        self.last_activity = self._loop.time()
        if not self._writer_armed:
            self._writer_armed = True
            self._loop.add_writer(self._direct().fileno(), self._flush)

    def _disarm_writer(self, release: bool = False) -> None:
        if self._writer_armed and self._dup is not None:
            self._writer_armed = False
            self._loop.remove_writer(self._dup.fileno())
        if release and self._dup is not None:
            self._dup.close()  # closes only the duplicate; the transport still owns the connection
            self._dup = None

    def _finish(self, aborted: bool, error: BaseException | None = None) -> None:
        resp = self._current
        if resp is None:
            return
        self._current = None
        if self._strict:
            self._strict = False
            self._transport.set_write_buffer_limits()  # back to the loop's defaults
        req, self._current_request = self._current_request, None
        if resp.owned_fds or resp.cleanup:
            _discard(resp)
        self.requests_done += 1
        self._server.record(req, resp, self._body_sent, aborted, error)
        if aborted:
            return
        if resp.close or (self.close_after and not self._pending):
            self.close()
        elif self._pending:  # a pipelined request waits (with none, _next would find nothing to do)
            self._next()

    # -- closing ----------------------------------------------------------------------------------

    def abort(self, error: BaseException | None = None) -> None:
        """Stop now: the client is gone, or the body cannot be completed (RST, never a short clean end)."""
        self._out.clear()
        self._disarm_writer(release=True)
        self._finish(aborted=True, error=error)
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close after the transport has written what it holds."""
        if self.closed:
            return
        self.closed = True
        self._disarm_writer(release=True)
        if self._transport is not None:
            self._transport.close()

    def respond_timeout(self) -> None:
        """The request head did not arrive within header_timeout (slowloris): 408, then close."""
        self._fail(408, "request header timeout")


def _discard(resp: Response) -> None:
    """Give back what a response held: its file descriptors and its fills."""
    if resp.owned_fds:
        for fd in resp.owned_fds:
            os.close(fd)
        resp.owned_fds = ()
    if resp.cleanup:
        resp.release()


def _blame(error: OSError, fd: int = -1, offset: int = 0) -> BaseException | None:
    """Which side failed a send: None for a client that went away, a StorageFault when the file cannot be
    read on its own (sendfile reports the errors of both descriptors), else the socket's error. Guessing
    from the errno alone would let a client's misbehaviour take a tier out of service."""
    if error.errno in _GONE:
        return None
    if fd >= 0:
        try:
            os.pread(fd, 1, offset)
        except OSError as read_error:
            return StorageFault(read_error)
    return error


def _ready(part: Part) -> bool:
    """Whether a part's bytes can follow at once (then the part before it goes out with MSG_MORE)."""
    return type(part) is bytes or type(part) is FileSlice
