"""Decides the answer to a GET or HEAD of one representation: status, the headers that depend on the request,
and the body as spans. Pure: every body path of the box (a stored hit, a growing fill, a sliced object) asks
this one function and only turns the spans into bytes, file slices or growing parts.

Rules kept here (RFC 9110):
- Preconditions come first, in the order of §13.2.2 (oca.http.conditionals): 412 (§15.5.13) or 304.
- A 304 carries no body and no Content-Length (§15.4.5: it would describe a body it does not send); the
  caller sends the validators and Cache-Control a 200 would have carried.
- Range is evaluated only when If-Range lets it (§13.1.5, §13.2.2 step 5); a mismatched If-Range means the
  whole representation, a 200, never a 206 or 416 (aiohttp's FileResponse gets this wrong).
- One satisfiable range: a 206 with Content-Range (§14.4, §15.3.7.1). Several: a 206 whose body is
  multipart/byteranges (§14.6, §15.3.7.2), whose Content-Type replaces the representation's own. No
  satisfiable range: 416 with `Content-Range: bytes */length` (§15.5.17). What ranges.py answers with the
  whole object (unknown unit, bad syntax, too many, overlapping) is a 200.
- A 412 or 416 has no spans: the caller answers it with its own error body (and `no-store`).
- HEAD is decided exactly as GET (§9.3.2); the caller leaves the body out.
- Spans are byte ranges of the representation (inclusive, always inside it) and literal bytes (the
  multipart delimiters and part headers); `length` is their total, the Content-Length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from oca.http.conditionals import Precondition, evaluate_preconditions, if_range_allows_partial
from oca.http.ranges import (
    ByteRange,
    RangeKind,
    content_range,
    evaluate_range,
    multipart_plan,
    plan_length,
    unsatisfied_range,
)

# the request headers that make a request conditional (§13.1); If-Range only qualifies Range
CONDITIONAL = frozenset(("if-match", "if-none-match", "if-modified-since", "if-unmodified-since"))

Span = bytes | ByteRange


# Both are NamedTuples, not frozen dataclasses: built for every request that is not a plain in-memory hit (a
# sendfile hit of a 2 MiB segment too), where a frozen dataclass costs four times as much to make.


class Representation(NamedTuple):
    """What is answered: the selected representation's length, media type and validators. `etag` is an
    RFC 9110 entity-tag as sent (e.g. '"3f2a"'), `last_modified` whole seconds since the epoch; None when
    there is none (an upstream that sent no validator)."""

    length: int
    content_type: str
    etag: str | None = None
    last_modified: int | None = None


class BodyPlan(NamedTuple):
    """The decision. `headers` are complete header lines (Content-Range, or the multipart Content-Type when
    `multipart`); `length` is the Content-Length (None for a 304); `ranged` says whether Range was used."""

    status: int
    headers: bytes = b""
    spans: tuple[Span, ...] = ()
    length: int | None = 0
    multipart: bool = False
    ranged: bool = False


_NOT_MODIFIED = BodyPlan(304, length=None)
_FAILED = BodyPlan(412)


def plan_body(method: str, headers: Mapping[str, str], rep: Representation, *, max_ranges: int,
              boundary: str) -> BodyPlan:
    """The answer to `method` (GET or HEAD) with these request `headers` (lower-case names) for `rep`.
    `boundary` separates multipart parts (RFC 2046 §5.1.1: 1-70 characters that never occur in the body;
    a long random token, RFC 9110 §14.6)."""
    if not headers.keys().isdisjoint(CONDITIONAL):
        verdict = evaluate_preconditions(method, headers, rep.etag, rep.last_modified)
        if verdict is Precondition.NOT_MODIFIED:
            return _NOT_MODIFIED
        if verdict is Precondition.FAILED:
            return _FAILED
    length = rep.length
    range_header = headers.get("range")
    if range_header is None or not if_range_allows_partial(headers.get("if-range"), rep.etag, rep.last_modified):
        return BodyPlan(200, b"", (ByteRange(0, length - 1),) if length else (), length)
    decision = evaluate_range(range_header, length, max_ranges)
    if decision.kind is RangeKind.UNSATISFIABLE:
        return BodyPlan(416, b"Content-Range: %s\r\n" % unsatisfied_range(length).encode("ascii"), ranged=True)
    if decision.kind is RangeKind.FULL:
        return BodyPlan(200, b"", (ByteRange(0, length - 1),) if length else (), length, ranged=True)
    ranges = decision.ranges
    if len(ranges) == 1:
        only = ranges[0]
        return BodyPlan(206, b"Content-Range: %s\r\n" % content_range(only, length).encode("ascii"), (only,),
                        only.length, ranged=True)
    spans = multipart_plan(ranges, length, rep.content_type, boundary)
    content_type = b"Content-Type: multipart/byteranges; boundary=%s\r\n" % boundary.encode("ascii")
    return BodyPlan(206, content_type, tuple(spans), plan_length(spans), multipart=True, ranged=True)
