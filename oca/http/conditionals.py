"""Evaluates conditional request headers (RFC 9110 §13) and reads and writes HTTP-dates (§5.6.7).

Rules kept here:
- Preconditions are evaluated in the order of §13.2.2: If-Match, else If-Unmodified-Since; then
  If-None-Match, else (GET/HEAD only) If-Modified-Since. If-Range is separate, for the Range step.
- If-Match and If-Range use the strong comparison, If-None-Match the weak one (§8.8.3.2).
- Client input never raises: an unparsable entity-tag list matches nothing, an invalid date makes
  its header ignored (§13.1.3, §13.1.4) and an unusable If-Range means "send the whole object".
- Header names in `headers` are lower case; `etag` is our entity-tag as sent, e.g. `"3f2a"`;
  `last_modified` is in whole seconds since the epoch, as Last-Modified carries it. Either may be None
  (an object fetched from an origin that sent none): no entity-tag then matches ours, only "*" does, and a
  date condition cannot be evaluated, so it is ignored (§13.1.3, §13.1.4).
"""

from __future__ import annotations

import calendar
import enum
import math
import re
import time
from collections.abc import Mapping

_OWS = " \t"
_SAFE_METHODS = ("GET", "HEAD")  # methods are case-sensitive (§9.1)

# §8.8.3: entity-tag = [ weak ] opaque-tag; weak = %s"W/"; etagc = %x21 / %x23-7E / obs-text.
# An opaque-tag may contain commas, so lists are scanned tag by tag rather than split on ",".
_ENTITY_TAG = re.compile(r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")')
# One §5.6.1 list element: OWS, an optional entity-tag, OWS, then "," or the end of the field.
_LIST_ELEMENT = re.compile(r'[ \t]*(?:(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*)?(,|\Z)')

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# §5.6.7: the three accepted forms; HTTP-date is case-sensitive and "GMT" is literal. The groups
# of each pattern are day, month, year, hour, minute, second.
_IMF_FIXDATE = re.compile(rf"(?:{'|'.join(_DAYS)}), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"(?:{'|'.join(_LONG_DAYS)}), ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME = re.compile(rf"(?:{'|'.join(_DAYS)}) {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")


class Precondition(enum.Enum):
    PROCEED = "proceed"  # go on to Range evaluation and the normal 200/206
    NOT_MODIFIED = "not_modified"  # 304 (GET/HEAD only)
    FAILED = "failed"  # 412 Precondition Failed


def evaluate_preconditions(
    method: str, headers: Mapping[str, str], etag: str | None, last_modified: int | None
) -> Precondition:
    """The outcome of the request's preconditions against our current representation (§13.2.2)."""
    ours = None if etag is None else _own_tag(etag)
    if_match = headers.get("if-match")
    if if_match is not None:
        # §13.2.2 step 1; §13.1.1: "*" is true because a current representation exists.
        if not _any_match(if_match, ours, strong=True):
            return Precondition.FAILED
    else:
        # §13.2.2 step 2; §13.1.4: ignored when not a valid HTTP-date.
        since = _header_date(headers.get("if-unmodified-since"))
        if since is not None and last_modified is not None and last_modified > since:
            return Precondition.FAILED
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        # §13.2.2 step 3; §13.1.2: a match (weak comparison, or "*") makes the condition false.
        if _any_match(if_none_match, ours, strong=False):
            return Precondition.NOT_MODIFIED if method in _SAFE_METHODS else Precondition.FAILED
    elif method in _SAFE_METHODS:
        # §13.2.2 step 4; §13.1.3: only for GET/HEAD and only without If-None-Match.
        since = _header_date(headers.get("if-modified-since"))
        if since is not None and last_modified is not None and last_modified <= since:
            return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def if_range_allows_partial(if_range: str | None, etag: str | None, last_modified: int | None) -> bool:
    """True when Range may be honoured under this If-Range (§13.1.5); absent header: True."""
    if if_range is None:
        return True
    value = if_range.strip(_OWS)
    if value.startswith(("W/", '"')):
        # §13.1.5: an entity-tag must be a strong match; a weak tag never is (§8.8.3.2).
        tag = _ENTITY_TAG.fullmatch(value)
        return tag is not None and etag is not None and _match(_tag(tag), _own_tag(etag), strong=True)
    # §13.1.5: an HTTP-date must exactly match Last-Modified; anything else is false.
    return last_modified is not None and parse_http_date(value) == last_modified


def is_entity_tag(value: str) -> bool:
    """Whether `value` is one RFC 9110 entity-tag (§8.8.3), weak or strong: what an upstream ETag must be
    before it is compared or passed on."""
    return _ENTITY_TAG.fullmatch(value) is not None


def http_date(epoch_seconds: float) -> str:
    """IMF-fixdate (§5.6.7) for a moment: "Sun, 06 Nov 1994 08:49:37 GMT"."""
    t = time.gmtime(math.floor(epoch_seconds))
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch of an HTTP-date in any of the three forms of §5.6.7; None if invalid.

    The day name is not checked against the date. For the obsolete two-digit rfc850 year we use
    the POSIX pivot (69-99 -> 19xx, 00-68 -> 20xx) instead of §5.6.7's 50-years-ahead window,
    which needs a clock; they differ only for years near the pivot, which no live client sends.
    """
    value = value.strip(_OWS)
    if m := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = m.groups()
    elif m := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = m.groups()
    elif m := _RFC850.fullmatch(value):
        day, month, short_year, hour, minute, second = m.groups()
        year = str((1900 if int(short_year) >= 69 else 2000) + int(short_year))
    else:
        return None
    return _epoch(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second))


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
    # §5.6.7: day 01-31 within the month, hour 00-23, minute 00-59, second 00-60 (leap second).
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _header_date(value: str | None) -> int | None:
    return None if value is None else parse_http_date(value)


# An entity-tag as (weak, opaque-tag with its quotes).
_Tag = tuple[bool, str]


def _tag(m: re.Match[str]) -> _Tag:
    return (m.group(1) is not None, m.group(2))


def _own_tag(etag: str) -> _Tag:
    m = _ENTITY_TAG.fullmatch(etag)
    if m is None:
        raise ValueError(f"our ETag must be an RFC 9110 entity-tag such as '\"abc\"', got {etag!r}")
    return _tag(m)


def _match(a: _Tag, b: _Tag, *, strong: bool) -> bool:
    # §8.8.3.2: strong comparison needs both tags strong; weak comparison ignores the W/ flag.
    return a[1] == b[1] and not (strong and (a[0] or b[0]))


def _any_match(field: str, ours: _Tag | None, *, strong: bool) -> bool:
    """Whether `"*" / #entity-tag` (§13.1.1, §13.1.2) matches our tag (None: we have none, so only "*"
    matches: a current representation exists); garbage matches nothing."""
    value = field.strip(_OWS)
    if value == "*":
        return True
    tags = _tag_list(value)
    return tags is not None and ours is not None and any(_match(tag, ours, strong=strong) for tag in tags)


def _tag_list(value: str) -> list[_Tag] | None:
    """The entity-tags of a §5.6.1 list (empty elements allowed), or None if any element is junk."""
    tags: list[_Tag] = []
    pos = 0
    while True:
        m = _LIST_ELEMENT.match(value, pos)
        if m is None:
            return None
        if m.group(2) is not None:
            tags.append(_tag(m))
        if not m.group(3):  # end of the field
            return tags
        pos = m.end()
