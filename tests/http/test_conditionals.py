"""Conditional requests (RFC 9110 §13) and HTTP-dates (§5.6.7)."""

from __future__ import annotations

import calendar
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.http.conditionals import (
    Precondition,
    evaluate_preconditions,
    http_date,
    if_range_allows_partial,
    is_entity_tag,
    parse_http_date,
)

ETAG = '"3f2a"'
LM = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
LM_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"

PROCEED, NOT_MODIFIED, FAILED = Precondition.PROCEED, Precondition.NOT_MODIFIED, Precondition.FAILED


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, PROCEED),
        # If-Match: strong comparison, "*" matches any current representation (§13.1.1)
        ("GET", {"if-match": ETAG}, PROCEED),
        ("GET", {"if-match": '"x", "3f2a"'}, PROCEED),
        ("GET", {"if-match": "*"}, PROCEED),
        ("GET", {"if-match": '"x"'}, FAILED),
        ("GET", {"if-match": 'W/"3f2a"'}, FAILED),
        ("GET", {"if-match": ""}, FAILED),
        ("GET", {"if-match": "garbage"}, FAILED),
        ("PUT", {"if-match": '"x"'}, FAILED),
        # If-Unmodified-Since, only without If-Match (§13.1.4)
        ("GET", {"if-unmodified-since": LM_DATE}, PROCEED),
        ("GET", {"if-unmodified-since": AFTER}, PROCEED),
        ("GET", {"if-unmodified-since": BEFORE}, FAILED),
        ("GET", {"if-unmodified-since": "yesterday"}, PROCEED),
        ("GET", {"if-unmodified-since": f"{BEFORE}, {BEFORE}"}, PROCEED),
        ("GET", {"if-match": ETAG, "if-unmodified-since": BEFORE}, PROCEED),
        ("GET", {"if-match": '"x"', "if-unmodified-since": AFTER}, FAILED),
        # If-None-Match: weak comparison; 304 for GET/HEAD, 412 otherwise (§13.1.2)
        ("GET", {"if-none-match": ETAG}, NOT_MODIFIED),
        ("HEAD", {"if-none-match": ETAG}, NOT_MODIFIED),
        ("GET", {"if-none-match": 'W/"3f2a"'}, NOT_MODIFIED),
        ("GET", {"if-none-match": '"a", W/"3f2a"'}, NOT_MODIFIED),
        ("GET", {"if-none-match": '"a",,"3f2a"'}, NOT_MODIFIED),
        ("GET", {"if-none-match": "*"}, NOT_MODIFIED),
        ("POST", {"if-none-match": ETAG}, FAILED),
        ("DELETE", {"if-none-match": "*"}, FAILED),
        ("get", {"if-none-match": ETAG}, FAILED),  # methods are case-sensitive (§9.1)
        ("GET", {"if-none-match": '"x"'}, PROCEED),
        ("GET", {"if-none-match": '"3F2A"'}, PROCEED),  # opaque-tags are case-sensitive
        ("GET", {"if-none-match": "3f2a"}, PROCEED),  # unquoted: not an entity-tag
        ("GET", {"if-none-match": 'w/"3f2a"'}, PROCEED),  # the weak prefix is case-sensitive
        ("GET", {"if-none-match": '"a" "3f2a"'}, PROCEED),  # no comma: junk matches nothing
        # If-Modified-Since: GET/HEAD only, only without If-None-Match (§13.1.3)
        ("GET", {"if-modified-since": LM_DATE}, NOT_MODIFIED),
        ("GET", {"if-modified-since": AFTER}, NOT_MODIFIED),
        ("HEAD", {"if-modified-since": AFTER}, NOT_MODIFIED),
        ("GET", {"if-modified-since": BEFORE}, PROCEED),
        ("POST", {"if-modified-since": AFTER}, PROCEED),
        ("GET", {"if-modified-since": "not a date"}, PROCEED),
        ("GET", {"if-modified-since": "Sunday, 06-Nov-94 08:49:37 GMT"}, NOT_MODIFIED),
        ("GET", {"if-modified-since": "Sun Nov  6 08:49:37 1994"}, NOT_MODIFIED),
        ("GET", {"if-none-match": '"x"', "if-modified-since": AFTER}, PROCEED),
        ("GET", {"if-none-match": ETAG, "if-modified-since": BEFORE}, NOT_MODIFIED),
        # precedence: If-Match failure wins over If-None-Match
        ("GET", {"if-match": '"x"', "if-none-match": ETAG}, FAILED),
        ("GET", {"if-unmodified-since": BEFORE, "if-none-match": ETAG}, FAILED),
        ("GET", {"if-match": ETAG, "if-none-match": ETAG}, NOT_MODIFIED),
    ],
)
def test_evaluate_preconditions(method: str, headers: dict[str, str], expected: Precondition) -> None:
    assert evaluate_preconditions(method, headers, ETAG, LM) is expected


def test_weak_own_etag_never_matches_if_match() -> None:
    assert evaluate_preconditions("GET", {"if-match": 'W/"3f2a"'}, 'W/"3f2a"', LM) is FAILED
    assert evaluate_preconditions("GET", {"if-none-match": '"3f2a"'}, 'W/"3f2a"', LM) is NOT_MODIFIED


def test_malformed_own_etag_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="entity-tag"):
        evaluate_preconditions("GET", {}, "3f2a", LM)


@pytest.mark.parametrize(
    ("if_range", "expected"),
    [
        (None, True),
        (ETAG, True),
        (f" {ETAG} ", True),
        ('"other"', False),
        ('W/"3f2a"', False),  # a weak tag never matches (§13.1.5)
        ('"3f2a", "x"', False),  # one validator only
        ('"3f2a', False),
        (LM_DATE, True),
        ("Sunday, 06-Nov-94 08:49:37 GMT", True),
        (BEFORE, False),
        (AFTER, False),  # only an exact match counts
        ("not a date", False),
        ("", False),
    ],
)
def test_if_range_allows_partial(if_range: str | None, expected: bool) -> None:
    assert if_range_allows_partial(if_range, ETAG, LM) is expected


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (LM, LM_DATE),
        (LM + 0.999, LM_DATE),
        (951782400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ],
)
def test_http_date(epoch: float, expected: str) -> None:
    assert http_date(epoch) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (LM_DATE, LM),
        ("Sunday, 06-Nov-94 08:49:37 GMT", LM),
        ("Sun Nov  6 08:49:37 1994", LM),
        ("Sun Nov 06 08:49:37 1994", LM),
        (" Sun, 06 Nov 1994 08:49:37 GMT\t", LM),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
        ("Tue, 29 Feb 2000 00:00:00 GMT", 951782400),
        ("Wednesday, 01-Jan-30 00:00:00 GMT", calendar.timegm((2030, 1, 1, 0, 0, 0))),
        ("Thursday, 01-Jan-70 00:00:00 GMT", 0),
        ("Mon, 06 Nov 1994 08:49:37 GMT", LM),  # day name not cross-checked
        ("Sat, 31 Dec 2016 23:59:60 GMT", calendar.timegm((2017, 1, 1, 0, 0, 0))),  # leap second
        # invalid
        ("", None),
        ("sun, 06 Nov 1994 08:49:37 GMT", None),  # case-sensitive (§5.6.7)
        ("Sun, 06 nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 gmt", None),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
        ("Sun, 6 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 94 08:49:37 GMT", None),
        ("Sun,  06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 31 Nov 1994 08:49:37 GMT", None),
        ("Sun, 29 Feb 1900 08:49:37 GMT", None),
        ("Sun, 00 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Nov 1994 08:60:00 GMT", None),
        ("Sun, 06 Nov 1994 08:49:61 GMT", None),
        ("Sun, 06 Nov 0000 08:49:37 GMT", None),
        ("Sun, \uff106 Nov 1994 08:49:37 GMT", None),  # FULLWIDTH DIGIT ZERO
        ("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", None),
        ("1994-11-06T08:49:37Z", None),
        ("784111777", None),
    ],
)
def test_parse_http_date(value: str, expected: int | None) -> None:
    assert parse_http_date(value) == expected


@given(st.integers(-62135596800, 253402300799))
def test_http_date_round_trips(epoch: int) -> None:
    text = http_date(epoch)
    assert parse_http_date(text) == epoch
    if epoch >= 0:  # the standard library agrees on the format
        assert text == email.utils.formatdate(epoch, usegmt=True)


@given(st.text(max_size=80))
def test_parse_http_date_never_raises(value: str) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, int)


_header_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["*", ETAG, 'W/"3f2a"', '"x"', LM_DATE, BEFORE, AFTER, "", ",,"]),
)


@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
    st.dictionaries(
        st.sampled_from(["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]),
        _header_values,
    ),
    st.one_of(st.none(), _header_values),
)
def test_never_raise_on_client_input(method: str, headers: dict[str, str], if_range: str | None) -> None:
    result = evaluate_preconditions(method, headers, ETAG, LM)
    if method not in ("GET", "HEAD"):
        assert result is not Precondition.NOT_MODIFIED
    assert isinstance(if_range_allows_partial(if_range, ETAG, LM), bool)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"if-match": ETAG}, FAILED),  # §13.1.1: no entity-tag of ours to match
    ({"if-match": "*"}, PROCEED),  # ... but a current representation exists
    ({"if-none-match": ETAG}, PROCEED),
    ({"if-none-match": "*"}, NOT_MODIFIED),
    ({"if-modified-since": LM_DATE}, PROCEED),  # no modification date: the condition cannot be evaluated
    ({"if-unmodified-since": BEFORE}, PROCEED),
])
def test_a_representation_without_validators(headers: dict[str, str], expected: Precondition) -> None:
    assert evaluate_preconditions("GET", headers, None, None) is expected
    assert if_range_allows_partial(ETAG, None, None) is False
    assert if_range_allows_partial(LM_DATE, None, None) is False
    assert if_range_allows_partial(ETAG, ETAG, None) is True
    assert if_range_allows_partial(LM_DATE, None, LM) is True


@pytest.mark.parametrize(("value", "expected"), [
    (ETAG, True), ('W/"3f2a"', True), ('""', True), ("3f2a", False), ('"a" "b"', False), ('"a\r\nX: 1"', False),
])
def test_is_entity_tag(value: str, expected: bool) -> None:
    assert is_entity_tag(value) is expected
