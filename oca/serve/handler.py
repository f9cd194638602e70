"""Turns one parsed request into one planned Response: the content path of the box.

Rules kept here (RFC 9110 unless noted):
- Only GET, HEAD and OPTIONS; anything else is 405 with Allow (§15.5.6).
- The cache key is the normalised path alone; the query (CMCD=...) never reaches it. Bad paths are 400.
- Preconditions are evaluated before Range (§13.2.2); If-Range gates Range (§13.1.5).
- HEAD answers exactly the headers GET would, without a body (§9.3.2).
- Bodies of small objects come from the worker's memory cache; everything else is a FileSlice that the
  connection sends with os.sendfile.
- Tokens (RFC 9246) are checked before anything is looked up: a refusal is 403 whatever is stored; a
  request-target let through is remembered until its token expires (oca.serve.gate).
- A miss (or a soft-purged object) joins the worker's one fill of its key (oca.fetch.remote): the answer is
  deferred until the fill has headers, then streamed from the growing file (Growing parts); a sliced
  object is answered slice by slice (Lazy parts: from storage, or from that slice's fill). Never a
  cached error: every error answer is `no-store`.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from oca import __version__
from oca.config import HttpConfig
from oca.errors import BadRequest
from oca.fetch.history import ABSENT, NO_SOURCE, SLICE
from oca.fetch.remote import RemoteFill, RemoteFills
from oca.fetch.slices import covering, is_slice_key, slice_key
from oca.http.cmcd import parse_cmcd
from oca.http.cmsd import static_field
from oca.http.conditionals import Precondition, evaluate_preconditions, if_range_allows_partial, parse_http_date
from oca.http.media import is_playlist, media_type
from oca.http.ranges import (
    ByteRange,
    RangeKind,
    content_range,
    evaluate_range,
    multipart_plan,
    plan_length,
    unsatisfied_range,
)
from oca.keys import key_from_target
from oca.protocol.messages import FillState, SliceMeta
from oca.serve.accesslog import fast_fields
from oca.serve.dates import DateCache
from oca.serve.gate import Gate
from oca.serve.hints import HintSender
from oca.serve.messages import FileSlice, Growing, Lazy, ObjectTruncated, Part, Request, Response, StorageFault
from oca.serve.objects import CachedObject, ObjectCache
from oca.serve.stats import PEER_MISS

REASONS = {
    200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    412: "Precondition Failed", 414: "URI Too Long", 416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large", 499: "Client Closed Request", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
_CONDITIONAL = frozenset(("if-match", "if-none-match", "if-modified-since", "if-unmodified-since"))
_CMCD_HEADERS = frozenset(("cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"))
_KEY_CACHE_SIZE = 65536
# Headers that take a request off the fast path (a plain GET of an object held in memory)
_SPECIAL = _CONDITIONAL | _CMCD_HEADERS | {"range", "if-range"}

_MISS = b"Cache-Status: oca; fwd=uri-miss\r\n"
_MISS_404 = b"Cache-Status: oca; fwd=uri-miss; fwd-status=404\r\n"


# a fill that ended without its bytes for this request to follow: answer from the state it ended in
_NOT_FOLLOWED = frozenset((FillState.ABSENT, FillState.FAIL, FillState.STORED, FillState.SLICED))


def _range_start(value: str | None) -> int:
    """Where a Range header's first range starts (a hint for which slice to fetch first); 0 if unclear."""
    if value is None or not value.startswith("bytes="):
        return 0
    first = value[6:].split(",", 1)[0].strip().split("-", 1)[0]
    return int(first) if first.isdigit() and len(first) < 20 else 0


class _SlicedHead(NamedTuple):
    """What a sliced object's answer was decided to be, before its parts are planned."""

    status: int
    extra: bytes  # Content-Range, for a 206
    etag: str | None
    wanted: ByteRange
    slice_size: int


class StorageFaults(Protocol):
    """Where the data plane reports what storage got wrong; the worker passes them on to the master."""

    def io_error(self, tier: str, error: str) -> None: ...

    def damaged(self, key: str, error: str) -> None: ...


class ContentHandler:
    def __init__(self, objects: ObjectCache, http: HttpConfig, faults: StorageFaults,
                 fills: RemoteFills | None = None, *, fetching: bool = False, gate: Gate | None = None) -> None:
        self._objects = objects
        self.fills = fills  # None: no master to fill misses through (a miss is a 404)
        self.fetching = fetching and fills is not None  # False: no upstream sources (a miss is a 404)
        self.gate = gate if gate is not None and gate.verifier is not None else None  # None: no token needed
        self._http = http
        self.faults = faults
        self._dates = DateCache()
        self._boundary = secrets.token_hex(16)
        self.draining = False
        # request-target -> (key, query, token, target without the token, that is `/<key>`): players repeat targets
        self._keys: dict[bytes, tuple[str, str, str | None, bytes, bool]] = {}
        self._granted: dict[bytes, float] = {}  # token-carrying targets let through -> until when (epoch s)
        # CMCD nor/nrr -> the master prefetches the next object (issue 18); only where misses are fetched
        self.hints = HintSender(fills, objects, self._parse_target) if fills is not None and self.fetching else None
        expose = "Content-Range, Content-Length, ETag, Cache-Status, Date, CMSD-Static, CMSD-Dynamic"
        self._common = (
            f"Server: oca/{__version__}\r\n"
            f"Access-Control-Allow-Origin: {http.cors_allow_origin}\r\n"
            f"Access-Control-Expose-Headers: {expose}\r\n"
        ).encode("latin-1")
        self._preflight = (
            "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
            "Access-Control-Allow-Headers: Range, If-Range, If-None-Match, If-Modified-Since, "
            "CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session\r\n"
            f"Access-Control-Max-Age: {int(http.cors_max_age)}\r\n"
        ).encode("latin-1")

    # -- entry point --------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        method = req.method
        if method not in ("GET", "HEAD", "OPTIONS"):
            return self.error(req, 405, "method not allowed", extra=b"Allow: GET, HEAD, OPTIONS\r\n")
        target = req.target
        if target == b"/healthz":
            if self.draining:
                return self.error(req, 503, "draining")
            return self._simple(req, 200, b"ok\n", b"Content-Type: text/plain\r\nCache-Control: no-store\r\n")
        parsed = self._keys.get(target)
        if parsed is None:
            try:
                key, query, token, plain = self._parse_target(target)
            except BadRequest as exc:
                return self.error(req, 400, str(exc))
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            # the plain spelling (/<key>, no query): a plain hit's access-log fields never change (_fast_hit)
            parsed = self._keys[target] = (key, query, token, plain, plain[1:] == key.encode())
        key, query, token, plain, canonical = parsed
        if token is not None:
            req.target = plain  # what the access log shows: the path without the credential
        if method == "OPTIONS":
            return self._simple(req, 204, b"", self._preflight)
        gate = self.gate
        if gate is not None:
            until = self._granted.get(target)  # the same target let through recently, until its token expires
            if until is None or until <= time.time() or "authorization" in req.headers:
                refused, until = gate.check(token, key, req.client, req.headers.get("authorization"))
                if refused is not None:
                    self._granted.pop(target, None)
                    resp = self.error(req, 403, refused)
                    resp.key = key
                    return resp
                if until:
                    if len(self._granted) >= _KEY_CACHE_SIZE:
                        self._granted.clear()
                    self._granted[target] = until
        entry = self._objects.get(key)
        if (entry is not None and entry.body is not None and method == "GET" and "CMCD=" not in query
                and not entry.stale and req.headers.keys().isdisjoint(_SPECIAL)):
            return self._fast_hit(req, entry, canonical)
        log: dict[str, object] = {}
        if "CMCD=" in query or not req.headers.keys().isdisjoint(_CMCD_HEADERS):
            cmcd = log["cmcd"] = parse_cmcd(query, req.headers)
            if self.hints is not None and ("nor" in cmcd or "nrr" in cmcd):
                self.hints.send(cmcd, target, key, token, req.client, gate, str(cmcd.get("sid") or req.client))
        if entry is None or entry.stale:
            resp = self._miss(req, key, log, entry)
            resp.key, resp.log = key, log or None
            return resp
        resp = self._serve_entry(req, entry, log)
        resp.key = key
        resp.log = log or None
        return resp

    def _parse_target(self, target: bytes) -> tuple[str, str, str | None, bytes]:
        """(key, query, token or None, the target without the token) of a request-target; BadRequest if bad.
        The token is RFC 9246's, carried as the first path segment: never part of the key."""
        token, plain = None, target
        if target.startswith(b"/t/"):
            token, plain = Gate.split(target, self.gate is not None)
        key, query = key_from_target(plain)
        return key, query, token, plain

    # -- hits ---------------------------------------------------------------------------------

    def _fast_hit(self, req: Request, entry: CachedObject, canonical: bool) -> Response:
        """A plain GET of an object in memory: the most common request, with the head reused within a second.
        `canonical`: the request-target (without its token) is `/<key>`, so the log fields are the object's."""
        body = self._objects.cached_body(entry)
        assert body is not None
        keep_alive = req.keep_alive
        date = self._dates.now()
        if keep_alive and entry.head_date is date:
            head = entry.head
        else:
            head = self._head(200, entry.fixed_headers + entry.hit_status, len(body), keep_alive)
            if keep_alive:
                entry.head, entry.head_date = head, date
        key = entry.info.key
        resp = Response(200, head, [body], len(body), not keep_alive, key, "memory", "hit")
        if canonical:
            fields = entry.log_fields
            if not fields:
                fields = entry.log_fields = fast_fields("GET", req.target, key, 200, len(body))
            resp.log_fields = fields
        return resp

    def _serve_entry(self, req: Request, entry: CachedObject, log: dict[str, object]) -> Response:
        headers = req.headers
        info = entry.info
        if not headers.keys().isdisjoint(_CONDITIONAL):
            verdict = evaluate_preconditions(req.method, headers, entry.etag, entry.last_modified)
            if verdict is Precondition.NOT_MODIFIED:
                # §15.4.5: a 304 carries the validators and Cache-Control a 200 would have, and no
                # Content-Length describing a body it does not send
                head = self._head(304, entry.fixed_headers, None, req.keep_alive)
                return Response(304, head, close=not req.keep_alive, cache="hit")
            if verdict is Precondition.FAILED:
                return self.error(req, 412, "precondition failed")
        length = info.size
        ranges: tuple[ByteRange, ...] = ()
        range_header = headers.get("range")
        if range_header is not None and if_range_allows_partial(headers.get("if-range"), entry.etag,
                                                                 entry.last_modified):
            log["range"] = range_header[:200]
            decision = evaluate_range(range_header, length, self._http.max_ranges)
            if decision.kind is RangeKind.UNSATISFIABLE:
                extra = f"Content-Range: {unsatisfied_range(length)}\r\n".encode("latin-1")
                return self.error(req, 416, "range not satisfiable", extra=extra, cache="hit")
            if decision.kind is RangeKind.PARTIAL:
                ranges = decision.ranges
        return self._send_object(req, entry, ranges)

    def _send_object(self, req: Request, entry: CachedObject, ranges: tuple[ByteRange, ...]) -> Response:
        info = entry.info
        length = info.size
        fixed = entry.fixed_headers
        # the body as parts: literal bytes, and ranges of the object to copy
        plan: list[bytes | ByteRange] = [ByteRange(0, length - 1)] if length else []
        if len(ranges) == 1:
            status = 206
            extra = f"Content-Range: {content_range(ranges[0], length)}\r\n"
            plan = [ranges[0]]
        elif ranges:
            status = 206
            plan = multipart_plan(ranges, length, entry.content_type, self._boundary)
            extra = f"Content-Type: multipart/byteranges; boundary={self._boundary}\r\n"
            fixed = fixed[fixed.index(b"\r\n") + 2:]  # the multipart type replaces the object's own (§14.6)
        else:
            status, extra = 200, ""
        body_length = plan_length(plan)
        head = self._head(status, fixed + extra.encode("latin-1") + entry.hit_status, body_length, req.keep_alive)
        resp = Response(status, head, close=not req.keep_alive, cache="hit", tier=info.tier)
        if req.method == "HEAD" or body_length == 0:
            return resp
        resp.body_length = body_length
        body = self._objects.cached_body(entry)
        if body is not None:  # the common case for small objects: no syscall but the send
            resp.tier = "memory"
            resp.parts = _from_memory(body, plan)
            return resp
        try:
            fd = os.open(info.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # removed or moved since our entry was made: ask the view again, once
            self._objects.forget(info.key)
            fresh = self._objects.get(info.key)
            if fresh is None or fresh.info.path == info.path:
                return self.error(req, 404, "not in cache", cache="miss")
            return self._send_object(req, fresh, ranges)
        except OSError as exc:
            return self._io_failure(req, info.tier, info.key, exc)
        try:
            body = self._objects.load_body(entry, fd)
        except ObjectTruncated as exc:
            os.close(fd)
            self.faults.damaged(info.key, str(exc))
            self._objects.forget(info.key)
            return self.error(req, 503, f"object damaged on disk, dropped: {exc}")
        except OSError as exc:
            os.close(fd)
            return self._io_failure(req, info.tier, info.key, exc)
        if body is not None:
            os.close(fd)
            resp.tier = "memory"
            resp.parts = _from_memory(body, plan)
            return resp
        resp.owned_fds = (fd,)
        resp.parts = [p if isinstance(p, bytes) else FileSlice(fd, p.start, p.length) for p in plan]
        return resp

    def _io_failure(self, req: Request, tier: str, key: str, exc: OSError) -> Response:
        reason = errno.errorcode.get(exc.errno or 0, str(exc))
        self.faults.io_error(tier, f"{reason} reading {key}")
        self._objects.forget(key)
        return self.error(req, 503, f"storage error on tier {tier}: {reason}")

    # -- misses -------------------------------------------------------------------------------

    def _miss(self, req: Request, key: str, log: dict[str, object], stale: CachedObject | None) -> Response:
        """Not stored (or soft-purged): join this box's one fill of the key; answer once it has headers."""
        fills = self.fills
        if fills is None or not self.fetching or is_slice_key(key):
            if stale is not None:  # soft-purged but nowhere to revalidate it: the stored copy is all there is
                return self._serve_entry(req, stale, log)
            log["miss"] = NO_SOURCE
            return self.error(req, 404, "not in cache", cache_status=_MISS, cache="miss")
        if "only-if-cached" in req.headers.get("cache-control", ""):  # a peer box asking: RFC 9111 §5.2.1.7
            if stale is not None:
                return self._serve_entry(req, stale, log)
            # its own cache value: a peer's probe is neither a client's miss (hit ratio) nor a release's error
            return self.error(req, 504, "not in cache (only-if-cached)", cache_status=_MISS, cache=PEER_MISS)
        if fills.is_absent(key):  # the origin said 404 a moment ago (negative_ttl)
            log["miss"] = ABSENT
            return self.error(req, 404, "not found upstream", cache_status=_MISS_404, cache="miss")
        sliced = fills.sliced.get(key)
        if sliced is not None:
            fills.sliced.touch(key)  # the table is bounded: the layouts in use stay
            return self._sliced(req, key, sliced, log)
        fill = fills.acquire(key, start=_range_start(req.headers.get("range")), revalidate=stale is not None)
        resp = Response(499, b"", cache="miss")

        def defer(done: Callable[[Response], None]) -> None:
            def ready() -> None:
                if fill.result or (fill.fd >= 0 and fill.size is not None):
                    done(self._filled(req, key, fill, log, stale is not None))
                else:
                    fill.wait(ready)
            ready()

        resp.defer = defer
        return resp

    def _filled(self, req: Request, key: str, fill: RemoteFill, log: dict[str, object],
                revalidating: bool) -> Response:
        """The answer to a miss once its fill has headers (or has ended)."""
        fills = self.fills
        assert fills is not None
        result = fill.result
        if fill.why:  # the master's reason for the miss (oca.fetch.history)
            log["miss"] = fill.why
        if result in _NOT_FOLLOWED:
            fills.release(fill)
            if result is FillState.SLICED and fill.sliced is not None:
                resp = self._sliced(req, key, fill.sliced, log)
            elif result is FillState.STORED:
                self._objects.forget(key)
                entry = self._objects.get(key)
                if entry is None:
                    resp = self.error(req, 503, "object vanished right after its fill; retry", cache="miss")
                else:
                    resp = self._serve_entry(req, entry, log)
                    resp.cache = "revalidated" if revalidating else "hit"
            else:
                extra = b"Cache-Status: oca; fwd=uri-miss; fwd-status=%d\r\n" % fill.status
                resp = self.error(req, fill.status, fill.reason, cache_status=extra, cache="miss")
            resp.key = key
            resp.log = log or None
            return resp
        log["source"] = fill.source
        size = fill.size or 0
        body: list[ByteRange | bytes] = [ByteRange(0, size - 1)] if size else []
        status, extra = 200, b""
        range_header = req.headers.get("range")
        if range_header is not None and "if-range" not in req.headers:
            log["range"] = range_header[:200]
            decision = evaluate_range(range_header, size, self._http.max_ranges)
            if decision.kind is RangeKind.UNSATISFIABLE:
                fills.release(fill)
                extra = f"Content-Range: {unsatisfied_range(size)}\r\n".encode("latin-1")
                return self.error(req, 416, "range not satisfiable", extra=extra, cache="miss")
            if decision.kind is RangeKind.PARTIAL and len(decision.ranges) == 1:
                status, body = 206, [decision.ranges[0]]
                extra = f"Content-Range: {content_range(decision.ranges[0], size)}\r\n".encode("latin-1")
        headers = (self._miss_headers(key) + extra
                   + b"Cache-Status: oca; fwd=uri-miss; fwd-status=200; stored\r\nX-OCA-Source: "
                   + fill.source.encode("latin-1", "replace") + b"\r\n")
        length = plan_length(body)
        resp = Response(status, self._head(status, headers, length, req.keep_alive), close=not req.keep_alive,
                        key=key, tier="upstream", cache="miss", log=log or None)
        resp.cleanup.append(lambda: fills.release(fill))
        if req.method != "HEAD" and length:
            resp.body_length = length
            resp.parts = [Growing(fill, p.start, p.length) if isinstance(p, ByteRange) else p for p in body]
        return resp

    def _miss_headers(self, key: str) -> bytes:
        cache_control = self._http.playlist_cache_control if is_playlist(key) else self._http.segment_cache_control
        return (f"Content-Type: {media_type(key)}\r\nCache-Control: {cache_control}\r\n"
                "Accept-Ranges: bytes\r\n").encode("latin-1") + (static_field(key) if self._http.cmsd else b"")

    def _sliced(self, req: Request, key: str, meta: SliceMeta, log: dict[str, object]) -> Response:
        """An object stored in slices: each covering slice is sent from storage, or from its fill."""
        fills = self.fills
        assert fills is not None
        total, slice_size = meta.total, meta.slice_size
        raw_etag = meta.etag
        etag = raw_etag if raw_etag is not None and not raw_etag.startswith("W/") else None  # strong only
        modified = parse_http_date(meta.last_modified or "") or int(time.time())
        headers = req.headers
        if etag is not None and not headers.keys().isdisjoint(_CONDITIONAL):
            verdict = evaluate_preconditions(req.method, headers, etag, modified)
            if verdict is Precondition.NOT_MODIFIED:
                head = self._head(304, f"ETag: {etag}\r\n".encode("latin-1") + self._miss_headers(key), None,
                                  req.keep_alive)
                return Response(304, head, close=not req.keep_alive, key=key, cache="hit")
            if verdict is Precondition.FAILED:
                return self.error(req, 412, "precondition failed")
        wanted = ByteRange(0, total - 1)
        status, extra = 200, b""
        range_header = headers.get("range")
        if range_header is not None and if_range_allows_partial(headers.get("if-range"), etag or "", modified):
            log["range"] = range_header[:200]
            decision = evaluate_range(range_header, total, self._http.max_ranges)
            if decision.kind is RangeKind.UNSATISFIABLE:
                extra = f"Content-Range: {unsatisfied_range(total)}\r\n".encode("latin-1")
                return self.error(req, 416, "range not satisfiable", extra=extra)
            if decision.kind is RangeKind.PARTIAL and len(decision.ranges) == 1:
                wanted, status = decision.ranges[0], 206
                extra = f"Content-Range: {content_range(wanted, total)}\r\n".encode("latin-1")
        head_fields = _SlicedHead(status, extra, etag, wanted, slice_size)
        first_index = wanted.start // slice_size
        if req.method == "HEAD" or not wanted.length or self._objects.get(slice_key(key, first_index)) is not None:
            return self._sliced_answer(req, key, log, head_fields, None)
        # The first slice sent is not stored: no head before its fill has bytes, so a source that fails is
        # answered 502/504 (and `no-store`), never a 200 whose body cannot follow.
        fill = fills.acquire_slice(key, first_index)
        placeholder = Response(499, b"", cache="miss")

        def defer(done: Callable[[Response], None]) -> None:
            def ready() -> None:
                if fill.failed:
                    fills.release(fill)
                    extra = b"Cache-Status: oca; fwd=uri-miss; fwd-status=%d; detail=slices\r\n" % fill.status
                    resp = self.error(req, fill.status or 502, fill.reason, cache_status=extra, cache="miss")
                    resp.key = key
                    resp.log = {**log, "miss": fill.why or SLICE, **(resp.log or {})}
                    done(resp)
                elif fill.fd >= 0 or fill.result:
                    done(self._sliced_answer(req, key, log, head_fields, fill))
                else:
                    fill.wait(ready)
            ready()

        placeholder.defer = defer
        return placeholder

    def _sliced_answer(self, req: Request, key: str, log: dict[str, object],
                       head_fields: _SlicedHead, first: RemoteFill | None) -> Response:
        """The answer of a sliced object: each covering slice from storage or from its fill; `first` is the
        first slice's fill when it was waited for (it is this response's to release)."""
        status, extra, etag, wanted, slice_size = head_fields
        parts: list[Part] = []
        resp = Response(status, b"", close=not req.keep_alive, key=key, tier="slices", cache="hit", log=log or None)
        all_stored = first is None
        for index in covering(wanted.start, wanted.end, slice_size):
            begin = max(wanted.start, index * slice_size)
            last = min(wanted.end, (index + 1) * slice_size - 1)
            offset, length = begin - index * slice_size, last - begin + 1
            if first is not None and index == wanted.start // slice_size:
                parts.append(Lazy(self._slice_part(resp, key, index, offset, length, first)))
                continue
            stored = self._objects.get(slice_key(key, index))
            all_stored = all_stored and stored is not None
            parts.append(Lazy(self._slice_part(resp, key, index, offset, length)))
        resp.cache = "hit" if all_stored else "miss"
        if not all_stored:
            log.setdefault("miss", SLICE)
        cache_status = b"Cache-Status: oca; hit; detail=slices\r\n" if all_stored else \
            b"Cache-Status: oca; fwd=partial; stored; detail=slices\r\n"
        validators = f"ETag: {etag}\r\n".encode("latin-1") if etag else b""
        resp.head = self._head(status, self._miss_headers(key) + validators + extra + cache_status,
                               wanted.length, req.keep_alive)
        if req.method != "HEAD":
            resp.parts, resp.body_length = parts, wanted.length
        return resp

    def _slice_part(self, resp: Response, key: str, index: int, offset: int, length: int,
                    acquired: RemoteFill | None = None) -> Callable[[], bytes | FileSlice | Growing]:
        fills = self.fills
        assert fills is not None
        if acquired is not None:  # released with the response, whether or not the connection gets this far
            resp.cleanup.append(lambda: fills.release(acquired))

        def from_storage() -> bytes | FileSlice | Growing:
            self._objects.forget(slice_key(key, index))
            entry = self._objects.get(slice_key(key, index))
            if entry is None:
                raise ObjectTruncated(f"slice {index} of {key} vanished")
            try:
                fd = os.open(entry.info.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ObjectTruncated(f"slice {index} of {key} vanished") from None
            except OSError as exc:
                raise StorageFault(exc, entry.info.tier) from None
            resp.cleanup.append(lambda: os.close(fd))
            return FileSlice(fd, offset, length)

        def resolve() -> bytes | FileSlice | Growing:
            if acquired is not None:
                return Growing(acquired, offset, length, from_storage)
            if self._objects.get(slice_key(key, index)) is not None:
                return from_storage()
            fill = fills.acquire_slice(key, index)
            resp.cleanup.append(lambda: fills.release(fill))
            return Growing(fill, offset, length, from_storage)

        return resolve

    # -- building answers ---------------------------------------------------------------------

    def _head(self, status: int, headers: bytes, length: int | None, keep_alive: bool) -> bytes:
        """Status line and headers; `length` None for a 304, which describes no body it sends."""
        return b"".join((
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Error").encode()),
            b"Date: ", self._dates.now(), b"\r\n", self._common, headers,
            b"" if length is None else b"Content-Length: %d\r\n" % length,
            b"" if keep_alive else b"Connection: close\r\n",
            b"\r\n",
        ))

    def _simple(self, req: Request, status: int, body: bytes, headers: bytes) -> Response:
        head = self._head(status, headers, len(body), req.keep_alive)
        send_body = body and req.method != "HEAD"
        return Response(status, head, [body] if send_body else [], len(body) if send_body else 0,
                        close=not req.keep_alive)

    def error(self, req: Request | None, status: int, reason: str, *, extra: bytes = b"",
              cache_status: bytes = b"", cache: str = "", close: bool = False) -> Response:
        """A small text/plain answer; the reason also travels in X-OCA-Reason and the access log."""
        body = f"{status} {REASONS.get(status, '')}: {reason}\n".encode("utf-8", "replace")
        safe_reason = reason.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")[:200]
        headers = (b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
                   + b"X-OCA-Reason: " + safe_reason + b"\r\n" + cache_status + extra)
        keep = req is not None and req.keep_alive and not close
        head = self._head(status, headers, len(body), keep)
        with_body = req is None or req.method != "HEAD"
        return Response(status, head, [body] if with_body else [], len(body) if with_body else 0,
                        close=not keep, cache=cache, log={"error": reason})


def _from_memory(body: bytes, plan: list[bytes | ByteRange]) -> list[Part]:
    """The body parts of a plan, cut from an object held in memory (one bytes object: one send)."""
    if len(plan) == 1 and isinstance(plan[0], ByteRange) and plan[0].length == len(body):
        return [body]
    return [b"".join(p if isinstance(p, bytes) else body[p.start:p.end + 1] for p in plan)]
