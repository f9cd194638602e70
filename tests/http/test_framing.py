"""check_framing: which request heads announce content or misname their host (refused) and which do not
(served)."""

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
    assert check_framing({"host": "cdn.example", **headers}, "1.1") is None


@pytest.mark.parametrize("headers, reason", REFUSED)
def test_heads_announcing_content_are_refused_with_a_reason(headers: dict[str, str], reason: str) -> None:
    refusal = check_framing({"host": "cdn.example", **headers}, "1.1")
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("headers, _reason", REFUSED)
def test_reasons_never_quote_the_request(headers: dict[str, str], _reason: str) -> None:
    refusal = check_framing({"host": "cdn.example", **headers}, "1.1")
    assert refusal is not None
    for value in headers.values():
        if value and not value.isdigit():
            assert value not in refusal.lower()


@pytest.mark.parametrize("host, version", [
    ("cdn.example", "1.1"),
    ("cdn.example:8080", "1.1"),
    ("127.0.0.11:8080", "1.1"),
    ("[::1]:8080", "1.1"),
    ("", "1.1"),  # RFC 9112 §3.2: empty when the target URI has no authority
    ("xn--bcher-kva.example", "1.1"),
    (None, "1.0"),  # HTTP/1.0 may omit Host
])
def test_a_request_naming_one_host_passes(host: str | None, version: str) -> None:
    headers = {} if host is None else {"host": host}
    assert check_framing(headers, version) is None


@pytest.mark.parametrize("host, version, reason", [
    (None, "1.1", "Host header missing"),
    ("a.example, b.example", "1.1", "more than one Host"),  # two Host lines, joined by the connection
    ("a.example, a.example", "1.1", "more than one Host"),
    ("a.example, b.example", "1.0", "more than one Host"),  # HTTP/1.0 may omit Host, not send two
    (", ", "1.1", "more than one Host"),
    ("a.example/path", "1.1", "invalid"),
    ("a example", "1.1", "invalid"),
    ("a.example:80x", "1.1", "invalid"),
])
def test_a_request_without_exactly_one_valid_host_is_refused(host: str | None, version: str, reason: str) -> None:
    headers = {} if host is None else {"host": host}
    refusal = check_framing(headers, version)
    assert refusal is not None and reason in refusal
    assert host is None or host not in refusal
