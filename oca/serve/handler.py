"""Turns one parsed request into one planned Response: the content path of the box.

Rules kept here (RFC 9110 unless noted):
- Only GET, HEAD and OPTIONS; anything else is 405 with Allow (§15.5.6).
- The cache key is the normalised path alone; the query (CMCD=...) never reaches it. Bad paths are 400.
- Preconditions are evaluated before Range (§13.2.2); If-Range gates Range (§13.1.5). One body plan
  (oca.http.body_plan) decides status, range headers and byte spans for a hit, a growing fill and a sliced
  object alike; each path only turns the spans into its parts. Before an object is stored (a growing fill, a
  sliced object) its validators are upstream's.
- HEAD answers exactly the headers GET would, without a body (§9.3.2).
- Bodies of small objects come from the worker's memory cache; everything else is a FileSlice that the
  connection sends with os.sendfile.
- A plain keep-alive hit from memory whose request came as one whole head in one read is remembered by
  its bytes (oca.serve.memo), with the token grant's expiry: the connection answers the same bytes again
  without asking here while the entry and the grant stand.
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
from typing import Protocol

from oca import __version__
from oca.config import HttpConfig
from oca.errors import BadRequest
from oca.fetch.history import ABSENT, NO_SOURCE, SLICE
from oca.fetch.remote import RemoteFill, RemoteFills
from oca.fetch.slices import covering, is_slice_key, slice_key
from oca.http.body_plan import CONDITIONAL, BodyPlan, Representation, Span, plan_body
from oca.http.cmcd import parse_cmcd
from oca.http.cmsd import static_field
from oca.http.conditionals import http_date, is_entity_tag, parse_http_date
from oca.http.media import is_playlist, media_type
from oca.http.ranges import ByteRange
from oca.keys import key_from_target
from oca.protocol.messages import FillState, SliceMeta
from oca.serve.accesslog import fast_fields
from oca.serve.dates import DateCache
from oca.serve.gate import Gate
from oca.serve.hints import HintSender
from oca.serve.memo import FOREVER, ResponseMemo
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
_CMCD_HEADERS = frozenset(("cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"))
_KEY_CACHE_SIZE = 65536
# Headers that take a request off the fast path (a plain GET of an object held in memory)
_SPECIAL = CONDITIONAL | _CMCD_HEADERS | {"range", "if-range"}

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
        self._ok_date = b""  # the Date value _ok_start carries (hit_head)
        self._ok_start = b""
        self._boundary = secrets.token_hex(16)
        self.draining = False
        # request-target -> (key, query, token, target without the token, that is `/<key>`): players repeat targets
        self._keys: dict[bytes, tuple[str, str, str | None, bytes, bool]] = {}
        self._granted: dict[bytes, float] = {}  # token-carrying targets let through -> until when (epoch s)
        self.memo = ResponseMemo(objects)  # request bytes answered as plain hits (the connection replays them)
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
        until: float | None = FOREVER  # how long this target is let through without a token check
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
            resp = self._fast_hit(req, entry, canonical)
            # the same bytes again get the same answer while the entry and the grant stand (oca.serve.memo);
            # a grant of 0 (a client-bound token, a peer, an unsigned prefix) is checked on every request
            if req.raw is not None and until and canonical and req.keep_alive and "authorization" not in req.headers:
                self.memo.put(req.raw, entry, until)
            return resp
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
        if keep_alive:
            head = self.hit_head(entry, len(body))
        else:
            head = self._head(200, entry.fixed_headers + entry.hit_status, len(body), False)
        key = entry.info.key
        resp = Response(200, head, [body], len(body), not keep_alive, key, "memory", "hit")
        resp.kept = entry
        if canonical:
            fields = entry.log_fields
            if not fields:
                fields = entry.log_fields = fast_fields("GET", req.target, key, 200, len(body))
            resp.log_fields = fields
            resp.counted = entry
        return resp

    def hit_head(self, entry: CachedObject, length: int) -> bytes:
        """The keep-alive 200 head of a plain hit of `entry` (`length` body bytes), with the Date of now
        (RFC 9110 §6.6.1): kept per object within a second. When the second moves it is joined from the part
        all objects share that second (status line, Date, common headers: built once a second) and the
        object's own, not built whole again: on a box whose objects are each asked for about once a second or
        less, that happens on most hits."""
        date = self._dates.now()
        if entry.head_date is not date:
            if self._ok_date is not date:
                self._ok_start = b"".join((b"HTTP/1.1 200 OK\r\nDate: ", date, b"\r\n", self._common))
                self._ok_date = date
            entry.head = b"%s%s%sContent-Length: %d\r\n\r\n" % (self._ok_start, entry.fixed_headers, entry.hit_status,
                                                                 length)
            entry.head_date = date
        return entry.head

    def _serve_entry(self, req: Request, entry: CachedObject, log: dict[str, object]) -> Response:
        rep = Representation(entry.info.size, entry.content_type, entry.etag, entry.last_modified)
        plan = self._plan(req, rep, log)
        if plan.status >= 300:
            # §15.4.5: a 304 carries the validators and Cache-Control a 200 would have (the fixed headers)
            return self._unsent(req, plan, entry.fixed_headers, "hit")
        return self._send_object(req, entry, plan, log)

    def _send_object(self, req: Request, entry: CachedObject, plan: BodyPlan, log: dict[str, object]) -> Response:
        info = entry.info
        fixed = entry.fixed_headers
        if plan.multipart:
            fixed = fixed[fixed.index(b"\r\n") + 2:]  # the multipart type replaces the object's own (§14.6)
        body_length = plan.length or 0
        head = self._head(plan.status, fixed + plan.headers + entry.hit_status, body_length, req.keep_alive)
        resp = Response(plan.status, head, close=not req.keep_alive, cache="hit", tier=info.tier)
        if req.method == "HEAD" or body_length == 0:
            return resp
        resp.body_length = body_length
        body = self._objects.cached_body(entry)
        if body is not None:  # the common case for small objects: no syscall but the send
            return _answer_from_memory(resp, entry, body, plan.spans)
        try:
            fd = os.open(info.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # removed or moved since our entry was made: ask the view again, once, and decide afresh (what
            # is there now may be another object, with other validators and another length)
            self._objects.forget(info.key)
            fresh = self._objects.get(info.key)
            if fresh is None or fresh.info.path == info.path:
                return self.error(req, 404, "not in cache", cache="miss")
            return self._serve_entry(req, fresh, log)
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
            return _answer_from_memory(resp, entry, body, plan.spans)
        resp.owned_fds = (fd,)
        resp.parts = [s if isinstance(s, bytes) else FileSlice(fd, s.start, s.length) for s in plan.spans]
        return resp

    def _plan(self, req: Request, rep: Representation, log: dict[str, object]) -> BodyPlan:
        """The body plan of this request for `rep` (oca.http.body_plan): the one decision of every body path."""
        plan = plan_body(req.method, req.headers, rep, max_ranges=self._http.max_ranges, boundary=self._boundary)
        if plan.ranged:
            log["range"] = req.headers["range"][:200]
        return plan

    def _unsent(self, req: Request, plan: BodyPlan, not_modified: bytes, cache: str) -> Response:
        """The answer of a plan that sends no representation: 304 (with the `not_modified` headers: validators
        and Cache-Control), 412, or 416 (no-store, like every error)."""
        if plan.status == 304:
            return Response(304, self._head(304, not_modified, None, req.keep_alive), close=not req.keep_alive,
                            cache=cache)
        if plan.status == 412:
            return self.error(req, 412, "precondition failed", cache=cache)
        return self.error(req, 416, "range not satisfiable", extra=plan.headers, cache=cache)

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
        # a close-delimited upstream told no length: the fill is followed only once it ended, and holds it all
        size = fill.size if fill.size is not None else fill.have
        # the validators are upstream's (the stored object's own ETag, its digest, exists only once it is stored)
        rep = Representation(size, media_type(key), _strong_etag(fill.etag), _date(fill.last_modified))
        plan = self._plan(req, rep, log)
        validators = _validators(rep)
        if plan.status >= 300:
            fills.release(fill)
            resp = self._unsent(req, plan, validators + self._miss_headers(key), "miss")
        else:
            headers = (self._miss_headers(key, typed=not plan.multipart) + validators + plan.headers
                       + b"Cache-Status: oca; fwd=uri-miss; fwd-status=200; stored\r\nX-OCA-Source: "
                       + fill.source.encode("latin-1", "replace") + b"\r\n")
            length = plan.length or 0
            resp = Response(plan.status, self._head(plan.status, headers, length, req.keep_alive),
                            close=not req.keep_alive, tier="upstream", cache="miss")
            resp.cleanup.append(lambda: fills.release(fill))
            if req.method != "HEAD" and length:
                resp.body_length = length
                resp.parts = [s if isinstance(s, bytes) else Growing(fill, s.start, s.length) for s in plan.spans]
        resp.key = key
        resp.log = log or None
        return resp

    def _miss_headers(self, key: str, *, typed: bool = True) -> bytes:
        """The fixed headers of an object answered from upstream bytes; without Content-Type when not `typed`
        (a multipart/byteranges answer has its own, §14.6)."""
        cache_control = self._http.playlist_cache_control if is_playlist(key) else self._http.segment_cache_control
        return ((f"Content-Type: {media_type(key)}\r\n" if typed else "")
                + f"Cache-Control: {cache_control}\r\nAccept-Ranges: bytes\r\n").encode("latin-1") + (
                    static_field(key) if self._http.cmsd else b"")

    def _sliced(self, req: Request, key: str, meta: SliceMeta, log: dict[str, object]) -> Response:
        """An object stored in slices: each covering slice is sent from storage, or from its fill."""
        fills = self.fills
        assert fills is not None
        # strong only: the slices are separate upstream fetches, stitched together only when their ETags match
        rep = Representation(meta.total, media_type(key), _strong_etag(meta.etag), _date(meta.last_modified))
        plan = self._plan(req, rep, log)
        if plan.status >= 300:
            return self._unsent(req, plan, _validators(rep) + self._miss_headers(key), "hit")
        first = next((s for s in plan.spans if isinstance(s, ByteRange)), None)
        if (req.method == "HEAD" or first is None
                or self._objects.get(slice_key(key, first.start // meta.slice_size)) is not None):
            return self._sliced_answer(req, key, log, rep, plan, meta.slice_size, None)
        # The first slice sent is not stored: no head before its fill has bytes, so a source that fails is
        # answered 502/504 (and `no-store`), never a 200 whose body cannot follow.
        fill = fills.acquire_slice(key, first.start // meta.slice_size)
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
                    done(self._sliced_answer(req, key, log, rep, plan, meta.slice_size, fill))
                else:
                    fill.wait(ready)
            ready()

        placeholder.defer = defer
        return placeholder

    def _sliced_answer(self, req: Request, key: str, log: dict[str, object], rep: Representation, plan: BodyPlan,
                       slice_size: int, first: RemoteFill | None) -> Response:
        """The answer of a sliced object: each span of the plan cut along the slices that hold it, each piece
        from storage or from its slice's fill; `first` is the fill of the first slice sent, when it was waited
        for (it is this response's to release)."""
        fills = self.fills
        assert fills is not None
        resp = Response(plan.status, b"", close=not req.keep_alive, key=key, tier="slices", cache="hit",
                        log=log or None)
        first_index = -1
        if first is not None:
            first_index = next(s.start for s in plan.spans if isinstance(s, ByteRange)) // slice_size
            resp.cleanup.append(lambda: fills.release(first))
        parts: list[Part] = []
        all_stored = first is None
        for span in plan.spans:
            if isinstance(span, bytes):  # multipart delimiters and part headers
                parts.append(span)
                continue
            for index in covering(span.start, span.end, slice_size):
                begin = max(span.start, index * slice_size)
                last = min(span.end, (index + 1) * slice_size - 1)
                offset, length = begin - index * slice_size, last - begin + 1
                if index == first_index:
                    parts.append(Lazy(self._slice_part(resp, key, index, offset, length, first)))
                    continue
                all_stored = all_stored and self._objects.get(slice_key(key, index)) is not None
                parts.append(Lazy(self._slice_part(resp, key, index, offset, length)))
        resp.cache = "hit" if all_stored else "miss"
        if not all_stored:
            log.setdefault("miss", SLICE)
        cache_status = b"Cache-Status: oca; hit; detail=slices\r\n" if all_stored else \
            b"Cache-Status: oca; fwd=partial; stored; detail=slices\r\n"
        length = plan.length or 0
        resp.head = self._head(plan.status, self._miss_headers(key, typed=not plan.multipart) + _validators(rep)
                               + plan.headers + cache_status, length, req.keep_alive)
        if req.method != "HEAD" and length:
            resp.parts, resp.body_length = parts, length
        return resp

    def _slice_part(self, resp: Response, key: str, index: int, offset: int, length: int,
                    acquired: RemoteFill | None = None) -> Callable[[], bytes | FileSlice | Growing]:
        """Where `length` bytes from `offset` of slice `index` come from, decided when the connection reaches
        them: `acquired` (a fill the response already holds), storage, or the slice's fill."""
        fills = self.fills
        assert fills is not None

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


def _answer_from_memory(resp: Response, entry: CachedObject, body: bytes, spans: tuple[Span, ...]) -> Response:
    """`resp` with its body cut from `entry`'s bytes in memory; a whole body may go by sendfile from the
    descriptor the entry keeps (oca.serve.objects)."""
    resp.tier = "memory"
    resp.parts = _from_memory(body, spans)
    if len(resp.parts) == 1 and resp.parts[0] is body:
        resp.kept = entry
    return resp


def _from_memory(body: bytes, spans: tuple[Span, ...]) -> list[Part]:
    """The body parts of a plan's spans, cut from an object held in memory (one bytes object: one send)."""
    if len(spans) == 1 and isinstance(spans[0], ByteRange) and spans[0].length == len(body):
        return [body]
    return [b"".join(s if isinstance(s, bytes) else body[s.start:s.end + 1] for s in spans)]


def _strong_etag(value: str | None) -> str | None:
    """An upstream ETag we can compare and pass on: a strong entity-tag (§8.8.3), else none at all."""
    return value if value is not None and not value.startswith("W/") and is_entity_tag(value) else None


def _date(value: str | None) -> int | None:
    """An upstream Last-Modified in seconds since the epoch; None if absent or not an HTTP-date (§5.6.7)."""
    return None if value is None else parse_http_date(value)


def _validators(rep: Representation) -> bytes:
    """ETag and Last-Modified lines for a representation filled from upstream: what clients validate with."""
    etag = b"ETag: %s\r\n" % rep.etag.encode("latin-1") if rep.etag is not None else b""
    modified = rep.last_modified
    return etag + (b"Last-Modified: %s\r\n" % http_date(modified).encode("ascii") if modified is not None else b"")
