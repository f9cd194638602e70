"""One client connection of the data port: httptools parses, the handler plans, this module does the syscalls.

This is the only module of the data plane that knows about file descriptors. Rules it keeps:
- Bodies planned as FileSlices go out with os.sendfile on the client socket itself (zero-copy), under
  uvloop and the stock asyncio loop alike; partial sends wait for writability (add_writer) and resume.
- A response that cannot be completed (file shorter than its length, client gone) closes the connection
  before Content-Length is reached: never a clean short response.
- Requests are answered in order; pipelined requests wait in `pending` (reading pauses past a limit).
- Header limits: max_header_bytes for the request line and headers together, max_headers fields (431).
- Every response ends with one access-log record and one stats update, aborted or not.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import TYPE_CHECKING

import httptools

from oca.serve.messages import FileSlice, Request, Response

if TYPE_CHECKING:
    from oca.serve.server import Server

_MAX_PENDING = 32
_RECV_SIZE = 256 * 1024
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT)


class _HeadersTooLarge(Exception):
    """Raised from a parser callback; httptools wraps it in HttpParserCallbackError, so we also keep a flag."""


class Connection:
    __slots__ = (
        "_body_sent", "_client", "_current", "_fd", "_head_left", "_header_bytes", "_headers", "_loop",
        "_out", "_parser", "_pending", "_reading", "_server", "_sock", "_url", "_writing", "close_after",
        "closed", "header_started", "last_activity", "requests_done",
    )

    def __init__(self, server: Server, sock: socket.socket, client: str) -> None:
        self._server = server
        self._loop = server.loop
        self._sock = sock
        self._fd = sock.fileno()
        self._client = client
        self._parser = httptools.HttpRequestParser(self)
        self._pending: deque[Request] = deque()
        self._out: deque[bytes | memoryview | FileSlice] = deque()
        self._current: Response | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._head_left = 0
        self._body_sent = 0
        self._reading = False
        self._writing = False
        self.close_after = False
        self.closed = False
        self.header_started: float | None = None
        self.last_activity = self._loop.time()
        self.requests_done = 0
        self._resume_reading()

    # -- state the server's sweeper looks at ----------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._current is None and not self._pending and self.header_started is None

    @property
    def sending(self) -> bool:
        return self._current is not None

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self.header_started = self._loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._server.config.max_header_bytes:
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        headers = self._headers
        if self._header_bytes > self._server.config.max_header_bytes or len(headers) >= self._server.config.max_headers:
            raise _HeadersTooLarge
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # RFC 9110 §5.3: repeated fields combine as a comma list (a doubled Range becomes invalid, as it should)
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_message_complete(self) -> None:
        parser = self._parser
        self._pending.append(Request(
            parser.get_method().decode("ascii", "replace"), self._url, self._headers,
            parser.should_keep_alive(), self._client, self._loop.time(),
        ))
        self.header_started = None

    # -- reading ----------------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._reading and not self.closed:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        self.last_activity = self._loop.time()
        if not data:  # the client finished sending: answer what it asked, then close
            self._pause_reading()
            self.close_after = True
            if self._current is None and not self._pending:
                self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade and CONNECT are not served here")
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._fail(431, "request header fields too large")
            else:
                self._fail(400, f"malformed request: {exc}")
            return
        if len(self._pending) > _MAX_PENDING:
            self._pause_reading()
        self._next()

    def _fail(self, status: int, reason: str) -> None:
        """A request we cannot parse: answer after what is already queued, then close."""
        self._pause_reading()
        self.close_after = True
        self.header_started = None
        self._pending.append(Request("", b"", {}, False, self._client, self._loop.time(), (status, reason)))
        self._next()

    # -- writing ----------------------------------------------------------------------------------

    def _next(self) -> None:
        while self._current is None and self._pending and not self.closed:
            req = self._pending.popleft()
            if not self._reading and not self.close_after and len(self._pending) <= _MAX_PENDING:
                self._resume_reading()
            if req.failure is not None:
                resp = self._server.handler.error(None, *req.failure, close=True)
            else:
                try:
                    resp = self._server.handler.handle(req)
                except Exception as exc:  # a bug must cost one request, not the worker
                    self._server.log_exception(exc)
                    resp = self._server.handler.error(req, 500, "internal error", close=True)
            if self.close_after:
                resp.close = True
            self._start(req, resp)

    def _start(self, req: Request, resp: Response) -> None:
        self._current = resp
        self._server.current_requests[self] = req
        self._body_sent = 0
        head = resp.head
        parts = resp.parts
        self._head_left = len(head)
        if parts and type(parts[0]) is bytes and len(parts[0]) <= 65536:
            # one send for head and a small body
            self._out.append(head + parts[0])  # type: ignore[operator]
            self._out.extend(parts[1:])
        else:
            self._out.append(head)
            self._out.extend(parts)
        self._flush()

    def _flush(self) -> None:
        out = self._out
        sock = self._sock
        while out:
            item = out[0]
            if type(item) is FileSlice:
                try:
                    sent = os.sendfile(self._fd, item.fd, item.offset, item.length)
                except (BlockingIOError, InterruptedError):
                    self._wait_writable()
                    return
                except OSError as exc:
                    self.abort(None if exc.errno in _GONE else exc)
                    return
                if sent == 0:  # the file ended before its length: never finish cleanly
                    self.abort(OSError(errno.EIO, "object file shorter than its length"))
                    return
                self._body_sent += sent
                if sent < item.length:
                    out[0] = FileSlice(item.fd, item.offset + sent, item.length - sent)
                    continue
                out.popleft()
            else:
                flags = socket.MSG_MORE if len(out) > 1 else 0  # let the head ride with the file's first bytes
                try:
                    sent = sock.send(item, flags)
                except (BlockingIOError, InterruptedError):
                    self._wait_writable()
                    return
                except OSError as exc:
                    self.abort(None if exc.errno in _GONE else exc)
                    return
                head_part = min(sent, self._head_left)
                self._head_left -= head_part
                self._body_sent += sent - head_part
                if sent < len(item):
                    out[0] = memoryview(item)[sent:]
                    self._wait_writable()
                    return
                out.popleft()
        self.last_activity = self._loop.time()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._finish(aborted=False)

    def _wait_writable(self) -> None:
        self.last_activity = self._loop.time()
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._flush)

    def _finish(self, aborted: bool, error: BaseException | None = None) -> None:
        resp = self._current
        if resp is None:
            return
        self._current = None
        req = self._server.current_requests.pop(self, None)
        for fd in resp.owned_fds:
            os.close(fd)
        self.requests_done += 1
        self._server.record(req, resp, self._body_sent, aborted, error)
        if aborted:
            return
        if resp.close or (self.close_after and not self._pending):
            self.close()
        else:
            self._next()

    # -- closing ----------------------------------------------------------------------------------

    def abort(self, error: BaseException | None = None) -> None:
        """Stop now: the client is gone, or the body cannot be completed."""
        self._out.clear()
        self._finish(aborted=True, error=error)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        if self._current is not None:
            self._out.clear()
            self._finish(aborted=True)
        self._pending.clear()
        try:
            self._sock.close()
        finally:
            self._server.forget(self)

    def respond_timeout(self) -> None:
        """The request head did not arrive within header_timeout (slowloris): 408, then close."""
        self._fail(408, "request header timeout")
