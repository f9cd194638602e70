"""Range evaluation (RFC 9110 §14) and multipart/byteranges planning."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.http.ranges import (
    ByteRange,
    RangeDecision,
    RangeKind,
    content_range,
    evaluate_range,
    multipart_plan,
    plan_length,
    unsatisfied_range,
)

FULL = RangeDecision(RangeKind.FULL)
UNSAT = RangeDecision(RangeKind.UNSATISFIABLE)


def partial(*pairs: tuple[int, int]) -> RangeDecision:
    return RangeDecision(RangeKind.PARTIAL, tuple(ByteRange(a, b) for a, b in pairs))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # the pinned rules, object length 1000
        (None, FULL),
        ("bytes=0-9", partial((0, 9))),
        ("bytes=990-", partial((990, 999))),
        ("bytes=-10", partial((990, 999))),
        ("bytes=-2000", partial((0, 999))),
        ("bytes=0-99999", partial((0, 999))),
        ("bytes=0-999", partial((0, 999))),
        ("bytes=999-999", partial((999, 999))),
        ("bytes=1000-", UNSAT),
        ("bytes=1000-2000", UNSAT),
        ("bytes=-0", UNSAT),
        ("bytes=5-2", UNSAT),
        ("bytes=0-1,5-2", UNSAT),
        ("items=0-9", FULL),
        ("bytes=0-1,5-6", partial((0, 1), (5, 6))),
        ("bytes=5-6,0-1", partial((5, 6), (0, 1))),  # client order kept
        ("bytes=0-1, 5-6", partial((0, 1), (5, 6))),
        ("bytes=0-1 ,\t5-6", partial((0, 1), (5, 6))),
        ("bytes=0-1,,5-6", partial((0, 1), (5, 6))),
        ("bytes=,0-9,", partial((0, 9))),
        ("  bytes=0-9  ", partial((0, 9))),
        ("BYTES=0-9", partial((0, 9))),  # §14.1: units compare case-insensitively
        ("bytes=00000-0009", partial((0, 9))),
        # unsatisfiable members are dropped when another one is satisfiable
        ("bytes=2000-3000,0-9", partial((0, 9))),
        ("bytes=-0,0-9", partial((0, 9))),
        ("bytes=1000-,-0", UNSAT),
        # abuse: overlapping, or several ranges adding up to the whole object
        ("bytes=0-9,5-14", FULL),
        ("bytes=0-9,9-10", FULL),
        ("bytes=0-,-1", FULL),
        ("bytes=0-499,500-999", FULL),
        ("bytes=0-9,10-19", partial((0, 9), (10, 19))),  # adjacent is not overlapping
        # invalid syntax: ignore the header
        ("bytes=alpha", FULL),
        ("bytes =0-9", FULL),
        ("bytes= 0-9", FULL),
        ("bytes=0 -9", FULL),
        ("bytes=0- 9", FULL),
        ("bytes=\uff10-9", FULL),  # FULLWIDTH DIGIT ZERO
        ("bytes=\u0660-\u0669", FULL),  # ARABIC-INDIC DIGIT ZERO and NINE
        ("bytes=0-9x", FULL),
        ("bytes=0--9", FULL),
        ("bytes=-", FULL),
        ("bytes=--5", FULL),
        ("bytes=+5-9", FULL),
        ("bytes=0x10-20", FULL),
        ("bytes=0-9;q=1", FULL),
        ("bytes=", FULL),
        ("bytes=,", FULL),
        ("bytes", FULL),
        ("=0-9", FULL),
        ("", FULL),
        ("bytes=0-1,alpha", FULL),
        ("by tes=0-9", FULL),
        # huge numbers never raise: last-pos clamps, first-pos is unsatisfiable
        (f"bytes=0-{2**64}", partial((0, 999))),
        (f"bytes=0-{'9' * 5000}", partial((0, 999))),
        (f"bytes={2**64}-", UNSAT),
        (f"bytes={'9' * 5000}-", UNSAT),
        (f"bytes=-{'9' * 5000}", partial((0, 999))),
        (f"bytes={'9' * 5000}-{'9' * 4999}", UNSAT),  # reversed, compared without int()
        (f"bytes={'0' * 5000}5-9", partial((5, 9))),
    ],
)
def test_evaluate_range(header: str | None, expected: RangeDecision) -> None:
    assert evaluate_range(header, 1000) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", UNSAT),
        ("bytes=0-0", UNSAT),
        ("bytes=-1", UNSAT),
        ("bytes=-0", UNSAT),
        ("bytes=5-2", UNSAT),
        ("bytes=alpha", FULL),
        ("items=0-1", FULL),
        (None, FULL),
    ],
)
def test_zero_length_object(header: str | None, expected: RangeDecision) -> None:
    assert evaluate_range(header, 0) == expected


@pytest.mark.parametrize(
    ("count", "max_ranges", "kind"),
    [
        (16, 16, RangeKind.PARTIAL),
        (17, 16, RangeKind.FULL),
        (2, 1, RangeKind.FULL),
        (1, 1, RangeKind.PARTIAL),
        (1, 0, RangeKind.FULL),
    ],
)
def test_max_ranges(count: int, max_ranges: int, kind: RangeKind) -> None:
    header = "bytes=" + ",".join(f"{10 * i}-{10 * i + 1}" for i in range(count))
    assert evaluate_range(header, 1000, max_ranges=max_ranges).kind is kind


def test_cve_2011_3192_pattern_is_served_whole() -> None:
    header = "bytes=0-," + ",".join(f"5-{i}" for i in range(1300))
    assert evaluate_range(header, 10_000) == FULL


@pytest.mark.parametrize(
    ("r", "length", "expected"),
    [(ByteRange(0, 9), 1000, "bytes 0-9/1000"), (ByteRange(999, 999), 1000, "bytes 999-999/1000")],
)
def test_content_range(r: ByteRange, length: int, expected: str) -> None:
    assert content_range(r, length) == expected


def test_unsatisfied_range() -> None:
    assert unsatisfied_range(1000) == "bytes */1000"


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4)])
def test_byte_range_rejects_impossible_bounds(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="start <= end"):
        ByteRange(start, end)


def test_byte_range_length() -> None:
    assert ByteRange(990, 999).length == 10


def test_multipart_plan_exact_bytes() -> None:
    plan = multipart_plan([ByteRange(0, 1), ByteRange(5, 6)], 10, "video/mp4", "SEP")
    assert plan == [
        b"--SEP\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-1/10\r\n\r\n",
        ByteRange(0, 1),
        b"\r\n--SEP\r\nContent-Type: video/mp4\r\nContent-Range: bytes 5-6/10\r\n\r\n",
        ByteRange(5, 6),
        b"\r\n--SEP--\r\n",
    ]
    assert plan_length(plan) == sum(len(c) if isinstance(c, bytes) else c.length for c in plan)


def _render(plan: list[bytes | ByteRange], data: bytes) -> bytes:
    return b"".join(c if isinstance(c, bytes) else data[c.start : c.end + 1] for c in plan)


@given(st.data())
def test_multipart_plan_parses_back(data: st.DataObject) -> None:
    length = data.draw(st.integers(1, 200))
    body = bytes(i % 251 for i in range(length))
    starts = sorted(data.draw(st.sets(st.integers(0, length - 1), min_size=1, max_size=6)))
    ranges = [ByteRange(s, data.draw(st.integers(s, length - 1))) for s in starts]
    boundary = data.draw(st.from_regex(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}", fullmatch=True))
    plan = multipart_plan(ranges, length, "video/mp4", boundary)
    rendered = _render(plan, body)
    assert len(rendered) == plan_length(plan)
    # RFC 2046 §5.1.1: split on CRLF--boundary (the first delimiter opens the body without CRLF).
    delimiter = b"\r\n--" + boundary.encode()
    assert rendered.startswith(b"--" + boundary.encode() + b"\r\n")
    assert rendered.endswith(delimiter + b"--\r\n")
    parts = (b"\r\n" + rendered).split(delimiter)[1:-1]
    assert len(parts) == len(ranges)
    for part, r in zip(parts, ranges, strict=True):
        head, _, payload = part.partition(b"\r\n\r\n")
        assert head == (
            f"\r\nContent-Type: video/mp4\r\nContent-Range: {content_range(r, length)}".encode()
        )
        assert payload == body[r.start : r.end + 1]


@pytest.mark.parametrize(
    ("ranges", "content_type", "boundary", "message"),
    [
        ([], "video/mp4", "b", "at least one range"),
        ([ByteRange(0, 10)], "video/mp4", "b", "past the object length"),
        ([ByteRange(0, 1)], "video/mp4", "", "boundary"),
        ([ByteRange(0, 1)], "video/mp4", "x" * 71, "boundary"),
        ([ByteRange(0, 1)], "video/mp4", "ends in space ", "boundary"),
        ([ByteRange(0, 1)], "video/mp4", "a\r\nb", "boundary"),
        ([ByteRange(0, 1)], "video/mp4\r\nX-Evil: 1", "b", "Content-Type"),
    ],
)
def test_multipart_plan_rejects_bad_arguments(
    ranges: list[ByteRange], content_type: str, boundary: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        multipart_plan(ranges, 10, content_type, boundary)


# --- properties -------------------------------------------------------------------------------

_range_text = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.one_of(
            st.from_regex(r"[0-9]{1,25}-[0-9]{0,25}", fullmatch=True),
            st.from_regex(r"-[0-9]{1,25}", fullmatch=True),
            st.sampled_from(["", " ", "x", "-", "0-", "\u0663-4"]),
        ),
        max_size=20,
    ).map(lambda specs: "bytes=" + ",".join(specs)),
)


@given(_range_text, st.integers(0, 2**40))
def test_never_raises_and_ranges_fit(header: str, length: int) -> None:
    decision = evaluate_range(header, length)
    if decision.kind is RangeKind.PARTIAL:
        assert decision.ranges
        assert all(0 <= r.start <= r.end < length for r in decision.ranges)
        if len(decision.ranges) > 1:
            ordered = sorted(decision.ranges, key=lambda r: r.start)
            assert all(a.end < b.start for a, b in itertools.pairwise(ordered))
            assert sum(r.length for r in decision.ranges) < length
    else:
        assert decision.ranges == ()


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 10_000))
def test_single_int_range_matches_model(first: int, last: int, length: int) -> None:
    decision = evaluate_range(f"bytes={first}-{last}", length)
    if last < first or first >= length:
        assert decision == UNSAT
    else:
        assert decision == partial((first, min(last, length - 1)))


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_suffix_range_matches_model(suffix: int, length: int) -> None:
    decision = evaluate_range(f"bytes=-{suffix}", length)
    if suffix == 0 or length == 0:
        assert decision == UNSAT
    else:
        assert decision == partial((max(0, length - suffix), length - 1))
