"""check_framing: which request heads announce content (refused) and which do not (served)."""

from __future__ import annotations

import pytest

from oca.http.framing import check_framing

ACCEPTED = [
    {},
    {"host": "cdn.example"},
    {"host": "cdn.example", "range": "bytes=0-99", "user-agent": "player/1.0"},
    {"content-length": "0"},
    {"content-length": "000"},
    {"te": "trailers"},  # the TE request header is about the response, not this request's framing
]

REFUSED = [
    ({"transfer-encoding": "chunked"}, "Transfer-Encoding"),
    ({"transfer-encoding": "CHUNKED"}, "Transfer-Encoding"),
    ({"transfer-encoding": "xchunked"}, "Transfer-Encoding"),
    ({"transfer-encoding": "chunked, identity"}, "Transfer-Encoding"),
    ({"transfer-encoding": "identity"}, "Transfer-Encoding"),
    ({"transfer-encoding": "gzip, chunked"}, "Transfer-Encoding"),
    ({"transfer-encoding": ""}, "Transfer-Encoding"),
    ({"transfer-encoding": "chunked", "content-length": "0"}, "Transfer-Encoding"),
    ({"content-length": "5", "transfer-encoding": "chunked"}, "Transfer-Encoding"),
    ({"content-length": "1"}, "Content-Length above 0"),
    ({"content-length": "0001"}, "Content-Length above 0"),
    ({"content-length": "99999999999999999999999999999999"}, "Content-Length above 0"),
    ({"content-length": "9" * 5000}, "Content-Length above 0"),  # beyond int()'s digit limit: no crash
    ({"content-length": "0, 0"}, "invalid Content-Length"),  # a duplicate, joined by the connection
    ({"content-length": "5, 5"}, "invalid Content-Length"),
    ({"content-length": "0,5"}, "invalid Content-Length"),
    ({"content-length": ""}, "invalid Content-Length"),
    ({"content-length": " 0"}, "invalid Content-Length"),
    ({"content-length": "-1"}, "invalid Content-Length"),
    ({"content-length": "+0"}, "invalid Content-Length"),
    ({"content-length": "0x0"}, "invalid Content-Length"),
    ({"content-length": "1e3"}, "invalid Content-Length"),
    ({"content-length": "\u0660"}, "invalid Content-Length"),  # ARABIC-INDIC DIGIT ZERO: a digit, not ASCII
    ({"content-length": "\u00b2"}, "invalid Content-Length"),  # SUPERSCRIPT TWO
]


@pytest.mark.parametrize("headers", ACCEPTED)
def test_heads_without_content_pass(headers: dict[str, str]) -> None:
    assert check_framing(headers) is None


@pytest.mark.parametrize("headers, reason", REFUSED)
def test_heads_announcing_content_are_refused_with_a_reason(headers: dict[str, str], reason: str) -> None:
    refusal = check_framing(headers)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("headers, _reason", REFUSED)
def test_reasons_never_quote_the_request(headers: dict[str, str], _reason: str) -> None:
    refusal = check_framing(headers)
    assert refusal is not None
    for value in headers.values():
        if value and not value.isdigit():
            assert value not in refusal.lower()
