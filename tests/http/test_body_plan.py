"""The one body plan (oca.http.body_plan): status, headers and spans of every body path, without an event loop."""

from __future__ import annotations

import email.parser
import email.policy
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.http.body_plan import BodyPlan, Representation, plan_body
from oca.http.ranges import ByteRange

ETAG = '"3f2a"'
LM = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
LM_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
BOUNDARY = "0123456789abcdef"
REP = Representation(1000, "video/mp4", ETAG, LM)
BARE = Representation(1000, "video/mp4")  # an upstream that sent no validator


def plan(headers: dict[str, str], rep: Representation = REP, method: str = "GET", max_ranges: int = 16) -> BodyPlan:
    return plan_body(method, headers, rep, max_ranges=max_ranges, boundary=BOUNDARY)


def render(p: BodyPlan, data: bytes) -> bytes:
    return b"".join(s if isinstance(s, bytes) else data[s.start:s.end + 1] for s in p.spans)


WHOLE = BodyPlan(200, b"", (ByteRange(0, 999),), 1000)


@pytest.mark.parametrize(("method", "headers", "rep", "expected"), [
    ("GET", {}, REP, WHOLE),
    ("HEAD", {}, REP, WHOLE),  # §9.3.2: HEAD is decided as GET
    ("GET", {}, Representation(0, "video/mp4", ETAG, LM), BodyPlan(200, b"", (), 0)),
    ("GET", {"range": "bytes=0-9"}, REP,
     BodyPlan(206, b"Content-Range: bytes 0-9/1000\r\n", (ByteRange(0, 9),), 10, ranged=True)),
    ("HEAD", {"range": "bytes=-10"}, REP,
     BodyPlan(206, b"Content-Range: bytes 990-999/1000\r\n", (ByteRange(990, 999),), 10, ranged=True)),
    ("GET", {"range": "bytes=1000-"}, REP, BodyPlan(416, b"Content-Range: bytes */1000\r\n", ranged=True)),
    ("GET", {"range": "bytes=-0"}, REP, BodyPlan(416, b"Content-Range: bytes */1000\r\n", ranged=True)),
    ("GET", {"range": "bytes=0-"}, Representation(0, "video/mp4"), BodyPlan(416, b"Content-Range: bytes */0\r\n",
                                                                          ranged=True)),
    ("GET", {"range": "items=0-9"}, REP, BodyPlan(200, b"", (ByteRange(0, 999),), 1000, ranged=True)),
    # §13.1.5: If-Range gates Range; a mismatch is the whole object, never 206 or 416
    ("GET", {"range": "bytes=0-9", "if-range": ETAG}, REP,
     BodyPlan(206, b"Content-Range: bytes 0-9/1000\r\n", (ByteRange(0, 9),), 10, ranged=True)),
    ("GET", {"range": "bytes=0-9", "if-range": LM_DATE}, REP,
     BodyPlan(206, b"Content-Range: bytes 0-9/1000\r\n", (ByteRange(0, 9),), 10, ranged=True)),
    ("GET", {"range": "bytes=0-9", "if-range": '"other"'}, REP, WHOLE),
    ("GET", {"range": "bytes=5000-", "if-range": '"other"'}, REP, WHOLE),
    ("GET", {"range": "bytes=0-9", "if-range": BEFORE}, REP, WHOLE),
    ("GET", {"range": "bytes=0-9", "if-range": ETAG}, BARE, WHOLE),  # no validator: nothing matches
    ("GET", {"range": "bytes=0-9", "if-range": LM_DATE}, BARE, WHOLE),
    # §13.2.2: preconditions first; 304 has no Content-Length (§15.4.5), neither it nor 412 has spans
    ("GET", {"if-none-match": ETAG, "range": "bytes=0-9"}, REP, BodyPlan(304, length=None)),
    ("HEAD", {"if-modified-since": LM_DATE}, REP, BodyPlan(304, length=None)),
    ("GET", {"if-match": '"nope"', "range": "bytes=5000-"}, REP, BodyPlan(412)),
    ("GET", {"if-unmodified-since": BEFORE}, REP, BodyPlan(412)),
    ("GET", {"if-match": ETAG, "range": "bytes=0-0"}, REP,
     BodyPlan(206, b"Content-Range: bytes 0-0/1000\r\n", (ByteRange(0, 0),), 1, ranged=True)),
    # without validators: only "*" matches (§13.1.1, §13.1.2) and date conditions are ignored
    ("GET", {"if-match": ETAG}, BARE, BodyPlan(412)),
    ("GET", {"if-match": "*"}, BARE, WHOLE),
    ("GET", {"if-none-match": ETAG}, BARE, WHOLE),
    ("GET", {"if-none-match": "*"}, BARE, BodyPlan(304, length=None)),
    ("GET", {"if-modified-since": LM_DATE}, BARE, WHOLE),
    ("GET", {"if-unmodified-since": BEFORE}, BARE, WHOLE),
])
def test_decisions(method: str, headers: dict[str, str], rep: Representation, expected: BodyPlan) -> None:
    assert plan(headers, rep, method) == expected


def test_several_ranges_are_multipart_byteranges_with_their_own_content_type() -> None:
    p = plan({"range": "bytes=0-1,5-6"})
    assert (p.status, p.multipart, p.ranged) == (206, True, True)
    assert p.headers == b"Content-Type: multipart/byteranges; boundary=0123456789abcdef\r\n"
    assert p.spans == (
        b"--0123456789abcdef\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-1/1000\r\n\r\n",
        ByteRange(0, 1),
        b"\r\n--0123456789abcdef\r\nContent-Type: video/mp4\r\nContent-Range: bytes 5-6/1000\r\n\r\n",
        ByteRange(5, 6),
        b"\r\n--0123456789abcdef--\r\n",
    )
    assert p.length == sum(len(s) if isinstance(s, bytes) else s.length for s in p.spans)


def test_too_many_or_overlapping_ranges_are_the_whole_object() -> None:
    assert plan({"range": "bytes=0-1,5-6,9-10"}, max_ranges=2).status == 200
    assert plan({"range": "bytes=0-500,400-600"}).spans == (ByteRange(0, 999),)


def test_an_invalid_upstream_etag_is_refused_not_compared() -> None:
    with pytest.raises(ValueError, match="entity-tag"):
        plan({"if-match": ETAG}, Representation(10, "video/mp4", "unquoted", None))


# --- properties -------------------------------------------------------------------------------------------------

_spec = st.one_of(
    st.tuples(st.integers(0, 1200), st.one_of(st.none(), st.integers(0, 1200))),  # first-last or first-
    st.tuples(st.none(), st.integers(0, 1200)),  # -suffix
)


def _header(specs: list[tuple[int | None, int | None]]) -> str:
    return "bytes=" + ",".join(f"-{b}" if a is None else f"{a}-" if b is None else f"{a}-{b}" for a, b in specs)


def _satisfiable(spec: tuple[int | None, int | None], length: int) -> bool:
    """RFC 9110 §14.1.2, written out apart from the code under test."""
    first, last = spec
    if first is None:
        return last is not None and last > 0 and length > 0
    return first < length


_headers = st.fixed_dictionaries({}, optional={
    "if-match": st.sampled_from([ETAG, '"x"', "*", 'W/"3f2a"']),
    "if-none-match": st.sampled_from([ETAG, '"x"', "*", 'W/"3f2a"']),
    "if-modified-since": st.sampled_from([LM_DATE, BEFORE, "junk"]),
    "if-unmodified-since": st.sampled_from([LM_DATE, BEFORE, "junk"]),
    "if-range": st.sampled_from([ETAG, '"x"', LM_DATE, BEFORE, 'W/"3f2a"']),
})


@given(st.integers(0, 1100), st.lists(_spec, min_size=1, max_size=8), _headers, st.sampled_from(["GET", "HEAD"]),
       st.integers(1, 8))
def test_spans_fit_lengths_add_up_and_416_only_when_nothing_is_satisfiable(
        length: int, specs: list[tuple[int | None, int | None]], conditions: dict[str, str], method: str,
        max_ranges: int) -> None:
    rep = Representation(length, "video/mp4", ETAG, LM)
    p = plan({**conditions, "range": _header(specs)}, rep, method, max_ranges)
    ranges = [s for s in p.spans if isinstance(s, ByteRange)]
    # spans lie within the object; the lengths add up to the Content-Length
    assert all(0 <= r.start <= r.end < length for r in ranges)
    if p.status in (200, 206):
        assert p.length == sum(len(s) if isinstance(s, bytes) else s.length for s in p.spans)
    else:
        assert p.spans == () and p.status in (304, 412, 416)
    assert (p.length is None) == (p.status == 304)
    if p.status == 416:
        reversed_spec = any(a is not None and b is not None and b < a for a, b in specs)
        assert reversed_spec or not any(_satisfiable(s, length) for s in specs)
        assert p.headers == f"Content-Range: bytes */{length}\r\n".encode()
    elif p.status == 206:
        assert len(specs) <= max_ranges
        assert any(_satisfiable(s, length) for s in specs)
    elif p.status == 200:
        assert ranges == ([ByteRange(0, length - 1)] if length else [])
    # a range is only used when no precondition stops the request first (§13.2.2)
    if p.status in (304, 412):
        assert not p.ranged


@given(st.integers(1, 300), st.lists(_spec, min_size=1, max_size=6), st.binary(min_size=300, max_size=300))
def test_a_206_carries_exactly_the_requested_bytes(length: int, specs: list[tuple[int | None, int | None]],
                                                   data: bytes) -> None:
    """What a client reassembles from the body, single part or multipart parsed by a MIME parser, is the object's
    own bytes at the Content-Range it was told."""
    data = data[:length]
    p = plan({"range": _header(specs)}, Representation(length, "video/mp4", ETAG, LM))
    if p.status != 206:
        return
    body = render(p, data)
    assert len(body) == p.length
    if not p.multipart:
        match = re.fullmatch(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)\r\n", p.headers)
        assert match is not None and int(match.group(3)) == length
        assert body == data[int(match.group(1)):int(match.group(2)) + 1]
        return
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(p.headers + b"\r\n" + body)
    assert message.get_content_type() == "multipart/byteranges"
    parts = list(message.iter_parts())
    assert len(parts) >= 2
    for part in parts:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", part["Content-Range"])
        assert match is not None and int(match.group(3)) == length
        assert part.get_content_type() == "video/mp4"
        assert part.get_payload(decode=True) == data[int(match.group(1)):int(match.group(2)) + 1]
