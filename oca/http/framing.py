"""Request framing on the data port: a request head either announces no content, or it is refused.

The data port answers GET, HEAD and OPTIONS, none of which needs content (RFC 9110 §9.3.1: content in a
GET "has no generally defined semantics"), and it never reads a request body. A request that announces
one is where request smuggling lives: an intermediary and this box disagreeing on where the body ends is
how a second, hidden request gets through. So the rule is the strictest one that still serves players:

- `Transfer-Encoding`, whatever its value, is refused. RFC 9112 §6.1 lets a server answer 501 to a coding
  it does not understand; here no coding is accepted (not even `chunked`), so the answer is the same 400
  for every value, known or not, spelled oddly or not, and for HTTP/1.0 requests that carry one (§6.1:
  their framing "MUST" be treated as faulty).
- `Content-Length` must be one run of decimal digits whose value is 0 (some clients send `0` on a GET).
  Duplicates arrive here joined by ", " (RFC 9110 §5.3) and so fail the digits test: §8.6 allows a
  recipient to accept identical duplicates, and we choose not to.

- `Host` (RFC 9112 §3.2): an HTTP/1.1 request without one, any request with two Host lines, or a Host whose
  value is not `uri-host [":" port]` is answered 400. Two lines arrive joined by ", " and a space is never
  part of a valid Host value, so the value check catches them. HTTP/1.0 may omit Host.

The caller answers 400 and closes the connection without reading past the head (RFC 9112 §6.3: a framing
error must close the connection). llhttp refuses most malformed shapes before this runs (both headers at
once, duplicate Content-Length, invalid characters, bare CR or LF, obs-fold); this check is what makes a
well-formed body on a GET unreadable too. The reasons never quote the request's own bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# RFC 9112 §3.2 Host = uri-host [ ":" port ]; RFC 3986 §3.2.2: IP-literal / IPv4address / reg-name (which may
# be empty), reg-name = *( unreserved / pct-encoded / sub-delims ). No whitespace anywhere.
_HOST = re.compile(r"(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?")

_BEFORE_HOST = frozenset({"0.9", "1.0"})


def check_framing(headers: Mapping[str, str], version: str) -> str | None:
    """None when the request (lower-cased header names, repeated fields joined by ", ") carries no content
    and names its host as RFC 9112 §3.2 asks of `version` ("1.1", "1.0"); otherwise the reason it is
    refused."""
    host = headers.get("host")
    if host is None:
        if version not in _BEFORE_HOST:  # §3.2: an HTTP/1.1 client "MUST" send Host; HTTP/1.0 predates it
            return "Host header missing"
    elif not _HOST.fullmatch(host):
        return "more than one Host header or an invalid Host value"
    if "transfer-encoding" in headers:
        return "request content is not accepted here (Transfer-Encoding)"
    length = headers.get("content-length")
    if length is None:
        return None
    if not (length.isascii() and length.isdigit()):
        return "invalid Content-Length"
    if length.strip("0"):  # not int(): no digit-count limit to trip over
        return "request content is not accepted here (Content-Length above 0)"
    return None
