"""Evaluates a Range header against an object's length (RFC 9110 §14) and plans multipart bodies.

Rules kept here:
- Never raises on client input. Syntax the grammar does not allow makes us ignore the header
  (FULL, a 200). A range whose last-pos precedes its first-pos, or a well-formed set with no
  satisfiable range, is UNSATISFIABLE (a 416).
- Only ASCII digits count as digits; numbers are compared as digit strings, so a 5000-digit value
  neither raises nor costs quadratic time, and anything past the object length clamps or fails.
- Abuse is answered with the whole object (CVE-2011-3192): more than `max_ranges` ranges,
  overlapping ranges, or several ranges whose bytes add up to the whole object.
- A range is inclusive at both ends, as on the wire.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.6.3: OWS = *( SP / HTAB ).
_OWS = " \t"
# Digit strings longer than this exceed any file length (2**63 has 19 digits); compared as text.
_MAX_DIGITS = 19
# RFC 2046 §5.1.1: bcharsnospace plus SP, 1 to 70 characters, not ending in SP.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes start..end of an object, both inclusive (RFC 9110 §14.1.2)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"byte range needs 0 <= start <= end, got {self.start}-{self.end}")

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeKind(enum.Enum):
    FULL = "full"  # ignore Range: 200 with the whole object
    PARTIAL = "partial"  # 206 with `ranges` (one range: single part; several: multipart/byteranges)
    UNSATISFIABLE = "unsatisfiable"  # 416 with Content-Range: bytes */length


@dataclass(frozen=True, slots=True)
class RangeDecision:
    kind: RangeKind
    ranges: tuple[ByteRange, ...] = ()


_FULL = RangeDecision(RangeKind.FULL)
_UNSATISFIABLE = RangeDecision(RangeKind.UNSATISFIABLE)


@dataclass(frozen=True, slots=True)
class _IntRange:
    """`first-last` or `first-` as written: digit strings without leading zeros."""

    first: str
    last: str | None


@dataclass(frozen=True, slots=True)
class _SuffixRange:
    """`-suffix`: the last `suffix` bytes, as a digit string without leading zeros."""

    suffix: str


_Spec: TypeAlias = _IntRange | _SuffixRange


def evaluate_range(header: str | None, length: int, max_ranges: int = 16) -> RangeDecision:
    """Decide how to answer a GET carrying `Range: header` for an object of `length` bytes."""
    if header is None:
        return _FULL
    specs = _parse(header.strip(_OWS))
    if specs is None or len(specs) > max_ranges:
        # §14.2: a server MAY ignore the Range header field; it MUST ignore an unknown range unit.
        return _FULL
    if any(_reversed(spec) for spec in specs):
        # §14.1.2 makes a range with last-pos < first-pos invalid; §14.2 lets us "ignore or reject"
        # an invalid ranges-specifier, and §15.5.17 names rejection: we reject with 416.
        return _UNSATISFIABLE
    ranges = [r for r in (_resolve(spec, length) for spec in specs) if r is not None]
    if not ranges:
        # §14.1.1: no range-spec overlaps the current extent of the representation.
        return _UNSATISFIABLE
    if len(ranges) > 1 and (_overlapping(ranges) or sum(r.length for r in ranges) >= length):
        # §14.2 and §17.15: overlapping or whole-object multi-range requests are a denial-of-service
        # pattern; serving the object once is cheaper and always correct.
        return _FULL
    return RangeDecision(RangeKind.PARTIAL, tuple(ranges))


def _parse(value: str) -> list[_Spec] | None:
    """The byte-range specs of `bytes=...`, or None when the header is to be ignored."""
    unit, sep, range_set = value.partition("=")
    # §14.1: ranges-specifier = range-unit "=" range-set; no whitespace around "=".
    if not sep or not _TOKEN.fullmatch(unit):
        return None
    # §14.1: range units are compared case-insensitively; "bytes" is the only one we know.
    if unit.lower() != "bytes" or range_set[:1] in (" ", "\t"):
        return None
    specs: list[_Spec] = []
    # §5.6.1: element *( OWS "," OWS element ); a recipient ignores empty list elements.
    for element in range_set.split(","):
        element = element.strip(_OWS)
        if not element:
            continue
        spec = _parse_spec(element)
        if spec is None:
            return None
        specs.append(spec)
    # §14.1: range-set = 1#range-spec, so at least one non-empty element.
    return specs or None


def _parse_spec(element: str) -> _Spec | None:
    first, sep, last = element.partition("-")
    if not sep:
        return None
    if not first:
        # §14.1.2: suffix-range = "-" suffix-length
        return _SuffixRange(_digits(last)) if _is_digits(last) else None
    # §14.1.2: int-range = first-pos "-" [ last-pos ]
    if not _is_digits(first) or (last and not _is_digits(last)):
        return None
    return _IntRange(_digits(first), _digits(last) if last else None)


def _is_digits(text: str) -> bool:
    # §5.6.1 / RFC 5234: DIGIT is %x30-39 only; str.isdigit alone would accept U+FF10 or U+0663.
    return text.isascii() and text.isdigit()


def _digits(text: str) -> str:
    return text.lstrip("0") or "0"


def _less(a: str, b: str) -> bool:
    """a < b for canonical digit strings of any length, without converting them."""
    return (len(a), a) < (len(b), b)


def _number(digits: str) -> int:
    """The value, or one that exceeds every object length when the digit string is too long."""
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _reversed(spec: _Spec) -> bool:
    return isinstance(spec, _IntRange) and spec.last is not None and _less(spec.last, spec.first)


def _resolve(spec: _Spec, length: int) -> ByteRange | None:
    """The satisfiable bytes of one spec, or None (§14.1.2)."""
    if isinstance(spec, _SuffixRange):
        suffix = _number(spec.suffix)
        if suffix == 0 or length == 0:
            # §14.1.2: a suffix-range is satisfiable only with a non-zero suffix-length. §14.1.2 also
            # calls "-N" satisfiable on an empty representation, but no Content-Range can describe
            # zero bytes, so an empty object answers every range with 416.
            return None
        return ByteRange(max(0, length - suffix), length - 1)
    first = _number(spec.first)
    if first >= length:
        # §14.1.2: an int-range is satisfiable only if first-pos < the representation's length.
        return None
    # §14.1.2: a last-pos at or past the end is replaced by length - 1.
    last = length - 1 if spec.last is None else min(_number(spec.last), length - 1)
    return ByteRange(first, last)


def _overlapping(ranges: Sequence[ByteRange]) -> bool:
    ordered = sorted(ranges, key=lambda r: r.start)
    return any(b.start <= a.end for a, b in itertools.pairwise(ordered))


def content_range(r: ByteRange, length: int) -> str:
    """Content-Range field value for one part of a 206 (RFC 9110 §14.4): "bytes 0-9/1000"."""
    return f"bytes {r.start}-{r.end}/{length}"


def unsatisfied_range(length: int) -> str:
    """Content-Range field value for a 416 (RFC 9110 §14.4, §15.5.17): "bytes */1000"."""
    return f"bytes */{length}"


def multipart_plan(
    ranges: Sequence[ByteRange], length: int, content_type: str, boundary: str
) -> list[bytes | ByteRange]:
    """A multipart/byteranges body (RFC 9110 §14.6) as literal chunks around the ranges to copy.

    Literal chunks are merged, so the plan alternates bytes, ByteRange, bytes, ... and ends with the
    close-delimiter. The response's own Content-Type is
    `multipart/byteranges; boundary=<boundary>` and its Content-Length is `plan_length(plan)`.
    """
    if not ranges:
        raise ValueError("a multipart/byteranges body needs at least one range")
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"multipart boundary must be 1-70 RFC 2046 bchars, got {boundary!r}")
    if not content_type.isascii() or not content_type.isprintable():
        raise ValueError(f"part Content-Type must be printable ASCII, got {content_type!r}")
    delimiter = b"--" + boundary.encode("ascii")
    type_line = b"Content-Type: " + content_type.encode("ascii") + b"\r\n"
    plan: list[bytes | ByteRange] = []
    for r in ranges:
        if r.end >= length:
            raise ValueError(f"byte range {r.start}-{r.end} lies past the object length {length}")
        # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter, so the first one
        # may open the body without it. §14.6: each part carries Content-Type and Content-Range.
        range_line = b"Content-Range: " + content_range(r, length).encode("ascii") + b"\r\n"
        head = (b"\r\n" if plan else b"") + delimiter + b"\r\n" + type_line + range_line + b"\r\n"
        plan.extend((head, r))
    # RFC 2046 §5.1.1: close-delimiter = delimiter "--"; the final CRLF starts an empty epilogue.
    plan.append(b"\r\n" + delimiter + b"--\r\n")
    return plan


def plan_length(plan: Sequence[bytes | ByteRange]) -> int:
    """Total body bytes of a multipart plan: its Content-Length."""
    return sum(len(chunk) if isinstance(chunk, bytes) else chunk.length for chunk in plan)
