"""A fault-injecting HTTP/1.1 origin for the pull-through tests.

It runs its own asyncio event loop in a background thread, so both sync tests (that start real `oca serve`
processes) and async tests can use it. It is written on plain asyncio streams, not aiohttp's server, because
the faults are byte-level: a connection closed before any answer, headers then silence, a body cut short or
longer than its Content-Length, a body dribbled a few bytes at a time.

    with Origin() as origin:
        origin.add("titles/t1/720p/seg1.m4s", data=b"...")
        origin.add("titles/t1/big.mp4", size=4 * 1024**3)           # virtual: bytes made on the fly
        origin.set_fault("titles/t1/big.mp4", Fault(truncate_at=1000))
        ... point a box at origin.url ...
        assert origin.count("titles/t1/big.mp4") == 1

Requests are parsed with httptools (as the data plane does); responses are written by hand. Nothing runs by
itself: the origin only ever answers requests it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import math
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httptools

# --- the virtual-object pattern ---------------------------------------------------------------------------------

PAGE = 1 << 16
"""Virtual objects are generated in pages of this many bytes."""

_MULT = 2654435761
# ((j * _MULT) >> 13) & 0xFF for 0 <= j < 2 * PAGE: every page is a slice of this table, XOR-ed with a byte.
_BASE = bytes(((j * _MULT) >> 13) & 0xFF for j in range(2 * PAGE))
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _page_params(page: int) -> tuple[int, int]:
    """(offset into _BASE, XOR key) of one page: distinct for every page of the first TiB."""
    return (page * 40503) & (PAGE - 1), ((page >> 16) * 167 + 0x5A) & 0xFF


def pattern_byte(i: int) -> int:
    """Byte i of every virtual object (the slow reference: tests check `pattern` against it)."""
    page, j = divmod(i, PAGE)
    offset, key = _page_params(page)
    return ((((offset + j) * _MULT) >> 13) & 0xFF) ^ key


def pattern(start: int, end: int) -> bytes:
    """Bytes [start, end) of the deterministic pattern every virtual object is made of (fast: C-level slices)."""
    if end <= start:
        return b""
    parts: list[bytes] = []
    pos = start
    while pos < end:
        page, j = divmod(pos, PAGE)
        n = min(PAGE - j, end - pos)
        offset, key = _page_params(page)
        parts.append(_BASE[offset + j:offset + j + n].translate(_XOR[key]))
        pos += n
    return parts[0] if len(parts) == 1 else b"".join(parts)


# --- public types -----------------------------------------------------------------------------------------------

DESYNC_FILL = b"POISON: a response nobody asked for. "
"""The body bytes of a `Fault(desync=n)` response: DESYNC_FILL repeated, cut to n bytes."""


def desync_response(n: int) -> bytes:
    """The unasked-for response `Fault(desync=n)` sends after the body: a complete HTTP/1.1 200 of n bytes."""
    body = (DESYNC_FILL * (n // len(DESYNC_FILL) + 1))[:n]
    head = (f"HTTP/1.1 200 OK\r\nServer: oca-test-origin\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {n}\r\nETag: \"desync-{n}\"\r\n\r\n")
    return head.encode("latin-1") + body


AUTO_ETAG = "auto"
"""`add(etag=...)` default: a strong ETag derived from the content (an MD5 of `data`, the size if virtual)."""

DEFAULT_LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


@dataclass(frozen=True)
class Fault:
    """How the origin misbehaves for one key. Faults combine in the order they would happen on the wire:

    refuse -> (pause) -> hang_before_headers -> delay_first_byte -> status line + headers -> hang_after_headers
    -> body (dribble, stall_at, truncate_at) -> extra_bytes.

    - refuse: read the request, then close the connection without a byte (RST instead of FIN if `reset`).
    - hang_before_headers: send nothing for this many seconds, then close (math.inf: until stop()).
    - delay_first_byte: wait this many seconds, then answer normally.
    - hang_after_headers: send the status line and headers, then nothing for this many seconds, then close.
    - dribble: (chunk_bytes, interval_seconds): the body in chunks of chunk_bytes, sleeping between them.
    - stall_at: (body_offset, seconds): after body_offset body bytes, pause this long, then carry on.
    - truncate_at: send only this many body bytes (the headers still promise them all), then close.
    - extra_bytes: after the body, send this many more bytes (b"#"); the connection is then kept alive as
      usual, so a client reusing it reads them as the start of its next response.
    - desync: after the body, send a whole second response on the same connection, unasked: `HTTP/1.1 200 OK`
      with `Content-Length: desync` and that many bytes of DESYNC_FILL (a response-splitting origin, or a
      proxy in front of it that lost the framing). The connection is kept alive, so a client that reuses it
      for its next request (another key) reads this canned answer as that request's response.
    - status: answer with this status and a small text body instead of the object (conditionals are skipped).
    - no_content_length: no Content-Length; the body is close-delimited (Connection: close), or chunked if
      `chunked` (chunked alone implies no_content_length). A truncated chunked body lacks its last chunk.
    - reset: every close this fault causes (refuse, truncate_at, the hangs) is an RST, not a FIN.
    - times: the fault applies to this many requests for the key, then clears itself (None: until changed).
    """

    refuse: bool = False
    hang_before_headers: float | None = None
    hang_after_headers: float | None = None
    dribble: tuple[int, float] | None = None
    stall_at: tuple[int, float] | None = None
    truncate_at: int | None = None
    extra_bytes: int = 0
    desync: int = 0
    status: int | None = None
    no_content_length: bool = False
    chunked: bool = False
    delay_first_byte: float | None = None
    reset: bool = False
    times: int | None = None

    def __post_init__(self) -> None:
        if self.dribble is not None and (self.dribble[0] <= 0 or self.dribble[1] < 0):
            raise ValueError(f"dribble needs chunk_bytes > 0 and interval >= 0, got {self.dribble}")
        if self.truncate_at is not None and self.truncate_at < 0:
            raise ValueError("truncate_at must be >= 0")
        if self.extra_bytes < 0:
            raise ValueError("extra_bytes must be >= 0")
        if self.desync < 0:
            raise ValueError("desync must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1")


@dataclass
class RequestRecord:
    """One request as the origin saw and answered it. Live: bytes_sent/status/finished fill in as it is served."""

    method: str
    path: str                                  # the request target as sent (with any query string)
    headers: dict[str, str]                    # lower-case names; repeated headers joined with ", "
    range: str | None                          # the raw Range header
    status: int | None = None                  # None: no status line was sent (refuse, hang_before_headers)
    bytes_sent: int = 0                        # body bytes written to the socket (not headers, not chunk framing)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None              # monotonic time the answer ended (None: going; may lag the client)
    key: str = ""
    conn: int = 0                              # connection number, from 1: equal numbers = one keep-alive conn
    content_range: tuple[int, int] | None = None   # (first, last) inclusive byte positions of a 206
    outcome: str = "pending"                   # ok, refused, hung, truncated, client_gone, cancelled


@dataclass
class _Object:
    key: str
    data: bytes | None
    size: int
    etag: str | None
    content_type: str
    last_modified: str | None
    headers: dict[str, str]

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        return pattern(start, min(end, self.size))


@dataclass
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool


class _Closed(Exception):
    """The connection is to be closed now (after a fault, or because the client went away)."""


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on host where nothing listens: connecting is refused (ECONNREFUSED), reliably.

    The port stays bound (never listening) by a socket held for the life of the process, so no other test can
    grab it in the meantime.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    _HELD_PORTS.append(sock)
    return int(sock.getsockname()[1])


_HELD_PORTS: list[socket.socket] = []


def _parse_http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _etag_list(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _weak_match(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """A single `bytes=` range against size: (first, last) inclusive; None to ignore it; "416" if unsatisfiable."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        return None
    if first_s == "":
        if last_s == "":
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            return "416"
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    if first >= size:
        return "416"
    last = int(last_s) if last_s else size - 1
    return first, min(last, size - 1)


# --- the origin -------------------------------------------------------------------------------------------------


class Origin:
    """A controllable, observable HTTP/1.1 origin on its own event loop thread. Thread-safe from the test side."""

    CHUNK = 256 * 1024

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}
        self._faults: dict[str | None, tuple[Fault, int | None]] = {}
        self._paused: set[str | None] = set()
        self._records: list[RequestRecord] = []
        self._connections = 0
        self._conn_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._resume: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None

    # --- lifecycle ---

    def start(self) -> Origin:
        if self._thread is not None:
            raise RuntimeError("origin already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"origin-{self.host}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("origin did not start within 10s")
        if failure:
            self._thread.join(5)
            self._thread = None
            loop.close()
            raise failure[0]
        return self

    async def _open(self) -> None:
        self._resume = asyncio.Event()
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=64 * 1024)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and cut every connection, hung ones included, promptly."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None
        self._server = None

    async def _close(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- content ---

    def add(self, key: str, data: bytes | None = None, *, size: int | None = None, etag: str | None = AUTO_ETAG,
            content_type: str = "application/octet-stream", last_modified: str | float | None = DEFAULT_LAST_MODIFIED,
            headers: dict[str, str] | None = None, fault: Fault | None = None) -> None:
        """Serve key (at /key). Exactly one of data (real bytes) or size (virtual: `pattern` bytes, made on demand).

        etag=None sends no ETag; last_modified may be an HTTP date, epoch seconds, or None (no header); headers
        are added to every 200/206/HEAD answer for the key. Replaces any previous object and fault for key.
        """
        if (data is None) == (size is None):
            raise ValueError("give exactly one of data= or size=")
        key = key.lstrip("/")
        if data is not None:
            size = len(data)
        assert size is not None
        if size < 0:
            raise ValueError("size must be >= 0")
        if etag == AUTO_ETAG:
            digest = hashlib.md5(data).hexdigest()[:16] if data is not None else f"virtual-{size:x}"
            etag = f'"{digest}"'
        if isinstance(last_modified, int | float):
            last_modified = email.utils.formatdate(float(last_modified), usegmt=True)
        obj = _Object(key, data, size, etag, content_type, last_modified, dict(headers or {}))
        with self._lock:
            self._objects[key] = obj
            self._faults.pop(key, None)
            if fault is not None:
                self._faults[key] = (fault, fault.times)

    def remove(self, key: str) -> None:
        """Forget key: it answers 404 from now on (its fault, if any, still applies)."""
        with self._lock:
            self._objects.pop(key.lstrip("/"), None)

    def set_etag(self, key: str, etag: str | None) -> None:
        """Change key's ETag (the content stays): If-None-Match/If-Range against the old one no longer match."""
        with self._lock:
            self._objects[key.lstrip("/")].etag = etag

    def set_fault(self, key: str | None, fault: Fault | None) -> None:
        """Set (or clear, with None) key's fault. key=None: a fault for every key that has none of its own."""
        k = key.lstrip("/") if key is not None else None
        with self._lock:
            if fault is None:
                self._faults.pop(k, None)
            else:
                self._faults[k] = (fault, fault.times)

    def expected(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of key's content (end exclusive, like a slice; None: to the end).

        For `Range: bytes=a-b` compare with expected(key, a, b + 1).
        """
        with self._lock:
            obj = self._objects[key.lstrip("/")]
        end = obj.size if end is None else min(end, obj.size)
        return obj.read(start, end)

    def size(self, key: str) -> int:
        with self._lock:
            return self._objects[key.lstrip("/")].size

    def etag(self, key: str) -> str | None:
        with self._lock:
            return self._objects[key.lstrip("/")].etag

    # --- holding requests ---

    def pause(self, key: str | None = None) -> None:
        """Hold new and queued requests for key (None: every key) before anything is sent, until resume()."""
        with self._lock:
            self._paused.add(key.lstrip("/") if key is not None else None)

    def resume(self, key: str | None = None) -> None:
        """Release what pause(key) holds (resume(None) releases only the pause(None), not per-key pauses)."""
        with self._lock:
            self._paused.discard(key.lstrip("/") if key is not None else None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._pulse)

    def _pulse(self) -> None:
        if self._resume is not None:
            self._resume.set()
            self._resume = asyncio.Event()

    # --- observation ---

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request since start/reset_counters, in arrival order (a copy of the list; the records are live)."""
        with self._lock:
            return list(self._records)

    def records(self, key: str | None = None, method: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records
                    if (key is None or r.key == key.lstrip("/")) and (method is None or r.method == method)]

    def count(self, key: str | None = None, method: str | None = None) -> int:
        """Requests received (for key, of method), including refused and unfinished ones."""
        return len(self.records(key, method))

    def bytes_sent(self, key: str | None = None) -> int:
        """Body bytes written (for key): headers and chunk framing excluded, extra_bytes included."""
        return sum(r.bytes_sent for r in self.records(key))

    def in_flight(self, key: str | None = None) -> int:
        return sum(1 for r in self.records(key) if r.finished is None)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start/reset_counters."""
        with self._lock:
            return self._connections

    def reset_counters(self) -> None:
        with self._lock:
            self._records.clear()
            self._connections = 0

    def wait_until(self, predicate: Callable[[Origin], bool], timeout: float = 5.0) -> bool:
        """Poll predicate(self) until true or timeout (blocking: from sync tests, or an async test's executor)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    # --- serving (loop thread) ---

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self._connections += 1
            self._conn_seq += 1
            conn_id = self._conn_seq
        try:
            await self._serve_connection(reader, writer, conn_id)
        except (_Closed, ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                conn_id: int) -> None:
        done: deque[_Request] = deque()
        state: dict[str, Any] = {}

        def on_message_begin() -> None:
            state.clear()
            state["url"] = b""
            state["headers"] = {}

        def on_url(url: bytes) -> None:
            state["url"] += url

        def on_header(name: bytes, value: bytes) -> None:
            headers: dict[str, str] = state["headers"]
            lname = name.decode("latin-1").lower()
            text = value.decode("latin-1").strip()
            headers[lname] = f"{headers[lname]}, {text}" if lname in headers else text

        def on_headers_complete() -> None:
            state["method"] = parser.get_method().decode("ascii", "replace")
            state["keep_alive"] = parser.should_keep_alive()

        def on_message_complete() -> None:
            done.append(_Request(state["method"], state["url"].decode("latin-1"), state["headers"],
                                 bool(state["keep_alive"])))

        class _Callbacks:
            pass

        callbacks: Any = _Callbacks()
        callbacks.on_message_begin = on_message_begin
        callbacks.on_url = on_url
        callbacks.on_header = on_header
        callbacks.on_headers_complete = on_headers_complete
        callbacks.on_message_complete = on_message_complete
        parser = httptools.HttpRequestParser(callbacks)

        while True:
            while not done:
                data = await reader.read(64 * 1024)
                if not data:
                    return
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    pass
                except httptools.HttpParserError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
            request = done.popleft()
            if not await self._answer(request, reader, writer, conn_id):
                return

    def _take_fault(self, key: str) -> Fault | None:
        with self._lock:
            k: str | None = key if key in self._faults else None
            entry = self._faults.get(k)
            if entry is None:
                return None
            fault, remaining = entry
            if remaining is not None:
                if remaining <= 1:
                    del self._faults[k]
                else:
                    self._faults[k] = (fault, remaining - 1)
            return fault

    async def _sleep(self, seconds: float) -> None:
        if math.isinf(seconds):
            assert self._stopping is not None
            await self._stopping.wait()
            raise _Closed
        await asyncio.sleep(max(0.0, seconds))

    async def _hang(self, seconds: float, reader: asyncio.StreamReader) -> None:
        """Silence for seconds (inf: until stop()); ConnectionResetError as soon as the client closes instead.

        Whatever the client sends meanwhile is read and dropped: the connection is closed after a hang anyway.
        """

        async def client_gone() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while await reader.read(64 * 1024):
                    pass

        sleeper = asyncio.ensure_future(self._sleep(seconds))
        watcher = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, watcher):
                task.cancel()
            await asyncio.gather(sleeper, watcher, return_exceptions=True)
        if sleeper.done() and not sleeper.cancelled():
            sleeper.result()  # _Closed when stopping
            return
        raise ConnectionResetError("the client closed during a hang")

    def _close_now(self, writer: asyncio.StreamWriter, reset: bool) -> None:
        if reset:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.transport.close()

    async def _answer(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      conn_id: int) -> bool:
        """Answer one request; False when the connection is to be closed."""
        target = request.target
        key = urllib.parse.unquote(urllib.parse.urlsplit(target).path).lstrip("/")
        record = RequestRecord(request.method, target, request.headers, request.headers.get("range"), key=key,
                               conn=conn_id)
        with self._lock:
            self._records.append(record)
        try:
            keep = await self._respond(request, record, reader, writer)
            if record.outcome == "pending":
                record.outcome = "ok"
            return keep
        except asyncio.CancelledError:
            record.outcome = "cancelled"
            raise
        except (ConnectionError, OSError):
            record.outcome = "client_gone"
            raise _Closed from None
        finally:
            record.finished = time.monotonic()

    async def _respond(self, request: _Request, record: RequestRecord, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        key = record.key
        fault = self._take_fault(key) or Fault()

        if fault.refuse:
            record.outcome = "refused"
            self._close_now(writer, fault.reset)
            return False

        while True:
            with self._lock:
                held = key in self._paused or None in self._paused
            if not held:
                break
            assert self._resume is not None
            await self._resume.wait()

        if fault.hang_before_headers is not None:
            record.outcome = "hung"
            await self._hang(fault.hang_before_headers, reader)
            self._close_now(writer, fault.reset)
            return False

        if fault.delay_first_byte is not None:
            await self._sleep(fault.delay_first_byte)

        with self._lock:
            obj = self._objects.get(key)
        method = request.method
        extra: dict[str, str] = {}
        body_start = body_len = 0
        source: Callable[[int, int], bytes] = _text_source(b"")
        length_known = True

        if fault.status is not None:
            status = fault.status
            text = f"origin fault {status}\n".encode()
            source = _text_source(text)
            body_len = len(text)
            extra["content-type"] = "text/plain"
        elif method not in ("GET", "HEAD"):
            status = 405
            extra["allow"] = "GET, HEAD"
        elif obj is None:
            status = 404
            text = b"not found\n"
            source = _text_source(text)
            body_len = len(text)
            extra["content-type"] = "text/plain"
        else:
            status, body_start, body_len = self._select(request.headers, obj, record)
            if obj.etag is not None:
                extra["etag"] = obj.etag
            if obj.last_modified is not None:
                extra["last-modified"] = obj.last_modified
            if status in (200, 206):
                extra["content-type"] = obj.content_type
                extra["accept-ranges"] = "bytes"
                extra.update({k.lower(): v for k, v in obj.headers.items()})
                source = obj.read
            if status == 206:
                first, last = record.content_range or (0, 0)
                extra["content-range"] = f"bytes {first}-{last}/{obj.size}"
            elif status == 416:
                extra["content-range"] = f"bytes */{obj.size}"
            if status == 304:
                length_known = False  # a 304 carries no body and no Content-Length here

        has_body = method != "HEAD" and status not in (204, 304)
        chunked = fault.chunked
        close_delimited = fault.no_content_length and not chunked
        keep = request.keep_alive and not close_delimited

        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                 f"Date: {email.utils.formatdate(usegmt=True)}", "Server: oca-test-origin"]
        if chunked and has_body:
            lines.append("Transfer-Encoding: chunked")
        elif length_known and not fault.no_content_length and not chunked:
            lines.append(f"Content-Length: {body_len}")
        lines.extend(f"{_title(k)}: {v}" for k, v in extra.items())
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        record.status = status
        writer.write(head)
        await writer.drain()

        if fault.hang_after_headers is not None:
            record.outcome = "hung"
            await self._hang(fault.hang_after_headers, reader)
            self._close_now(writer, fault.reset)
            return False

        if has_body:
            limit = body_len if fault.truncate_at is None else min(body_len, fault.truncate_at)
            step = fault.dribble[0] if fault.dribble else self.CHUNK
            interval = fault.dribble[1] if fault.dribble else 0.0
            stall = fault.stall_at
            pos = 0
            while pos < limit:
                if stall is not None and pos >= stall[0]:
                    await self._sleep(stall[1])
                    stall = None
                n = min(step, limit - pos)
                if stall is not None and pos < stall[0]:
                    n = min(n, stall[0] - pos)
                chunk = source(body_start + pos, body_start + pos + n)
                record.bytes_sent += len(chunk)  # before write(): the client may see the bytes at once
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                pos += n
                await writer.drain()
                if fault.dribble and pos < limit and interval > 0:
                    await asyncio.sleep(interval)
            if limit < body_len:
                record.outcome = "truncated"
                await writer.drain()
                self._close_now(writer, fault.reset)
                return False
            if chunked:
                writer.write(b"0\r\n\r\n")
            if fault.extra_bytes:
                record.bytes_sent += fault.extra_bytes
                writer.write(b"#" * fault.extra_bytes)
            if fault.desync:
                smuggled = desync_response(fault.desync)
                record.bytes_sent += len(smuggled)
                writer.write(smuggled)
            await writer.drain()

        if not keep:
            writer.transport.close()
            return False
        return True

    def _select(self, headers: dict[str, str], obj: _Object, record: RequestRecord) -> tuple[int, int, int]:
        """(status, body start, body length) for a GET/HEAD of obj: 200, 206, 304 or 416."""
        inm = headers.get("if-none-match")
        if inm is not None:
            tags = _etag_list(inm)
            if obj.etag is not None and ("*" in tags or any(_weak_match(t, obj.etag) for t in tags)):
                return 304, 0, 0
        else:
            ims = headers.get("if-modified-since")
            if ims is not None and obj.last_modified is not None:
                since, modified = _parse_http_date(ims), _parse_http_date(obj.last_modified)
                if since is not None and modified is not None and modified <= since:
                    return 304, 0, 0
        rng = headers.get("range")
        if rng is None:
            return 200, 0, obj.size
        if_range = headers.get("if-range")
        if if_range is not None:
            if if_range.startswith(('"', "W/")):  # an entity tag: strong comparison only
                honored = obj.etag is not None and not obj.etag.startswith("W/") and if_range == obj.etag
            else:
                honored = obj.last_modified is not None and if_range.strip() == obj.last_modified
            if not honored:
                return 200, 0, obj.size
        parsed = parse_range(rng, obj.size)
        if parsed is None:
            return 200, 0, obj.size
        if parsed == "416":
            return 416, 0, 0
        assert isinstance(parsed, tuple)
        first, last = parsed
        record.content_range = (first, last)
        return 206, first, last - first + 1


def _text_source(text: bytes) -> Callable[[int, int], bytes]:
    def read(start: int, end: int) -> bytes:
        return text[start:end]
    return read


def _title(name: str) -> str:
    return "ETag" if name == "etag" else "-".join(part.capitalize() for part in name.split("-"))


_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 416: "Range Not Satisfiable",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def iter_pattern(start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """`pattern(start, end)` in pieces, for comparing long virtual bodies without holding them whole."""
    for pos in range(start, end, chunk):
        yield pattern(pos, min(end, pos + chunk))


__all__ = ["AUTO_ETAG", "DEFAULT_LAST_MODIFIED", "DESYNC_FILL", "PAGE", "Fault", "Origin", "RequestRecord",
           "closed_port", "desync_response", "iter_pattern", "parse_range", "pattern", "pattern_byte"]
