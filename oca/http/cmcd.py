"""Reads Common Media Client Data (CTA-5004 v1, CTA-5004-A v2) for the access log.

CMCD travels as the `CMCD` query parameter (percent-encoded) or in the headers CMCD-Request,
CMCD-Object, CMCD-Status and CMCD-Session. Either way the payload is an RFC 8941 dictionary:
`br=3200,bs,ot=v,sid="6e2f",pr=1.08,v=2,bl=(21300 9800)`.

Rules kept here:
- Never raises. Unlike RFC 8941, which fails a whole field on one error, each malformed member is
  skipped alone: a log line should keep what the player got right.
- At most 4 KiB of each source is read and at most 64 keys are kept; a member cut by the 4 KiB
  limit is dropped rather than logged truncated.
- Values become JSON-friendly Python: integers -> int, decimals -> float, strings and tokens -> str,
  booleans and bare keys -> bool, inner lists -> list. A value carrying RFC 8941 parameters
  (`3200;v`) becomes {"value": 3200, "params": {"v": True}}. Byte sequences (`:...:`), which
  CMCD never uses, are skipped.
- Keys may hold upper-case letters (CTA-5004's own custom-key example is
  `com.example-myNumericKey`), which RFC 8941 keys do not allow.
- When sources repeat a key the later wins: query first, then the headers in the order above.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from urllib.parse import unquote

MAX_SOURCE_CHARS = 4096
MAX_KEYS = 64
QUERY_PARAMETER = "CMCD"
HEADERS = ("cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session")

# RFC 8941 §3.1.2 key, widened to upper case (see above).
_KEY = re.compile(r"[A-Za-z*][A-Za-z0-9_\-.*]*")
# RFC 8941 §3.3.4: sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" )
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
# RFC 8941 §3.3.1 and §3.3.2: at most 15 integer digits; a decimal has 12 + up to 3 digits.
_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_MAX_INTEGER_DIGITS = 15
_MAX_DECIMAL_DIGITS = (12, 3)


class _Malformed(Exception):
    """Raised inside one member's parse; caught before it can leave this module."""


def parse_cmcd(query: str | None, headers: Mapping[str, str]) -> dict[str, object]:
    """All CMCD keys of a request, from its query string and its four CMCD headers."""
    sources = list(_query_payloads(query or ""))
    sources += [field for name in HEADERS if (field := headers.get(name)) is not None]
    result: dict[str, object] = {}
    for source in sources:
        for key, value in _members(source):
            if key in result or len(result) < MAX_KEYS:
                result[key] = value
    return result


def strip_cmcd(query: str) -> str:
    """`query` without its CMCD parameter(s), other parameters untouched and in order."""
    return "&".join(p for p in query.split("&") if p.partition("=")[0] != QUERY_PARAMETER)


def _query_payloads(query: str) -> Iterator[str]:
    # CTA-5004 §2 (query argument mode): the value is the URL-encoded header payload. RFC 3986 gives "+"
    # no meaning, so only %XX escapes are decoded.
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == QUERY_PARAMETER:
            yield unquote(value, errors="replace")


def _members(text: str) -> Iterator[tuple[str, object]]:
    truncated = len(text) > MAX_SOURCE_CHARS
    pieces = _split_members(text[:MAX_SOURCE_CHARS])
    if truncated:
        pieces.pop()
    for piece in pieces:
        member = _parse_member(piece.strip(" \t"))
        if member is not None:
            yield member


def _split_members(text: str) -> list[str]:
    """Split at the commas that separate dictionary members, i.e. those outside quoted strings."""
    pieces: list[str] = []
    start = 0
    in_string = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_string:
            escaped = char == "\\"
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char == ",":
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return pieces


def _parse_member(text: str) -> tuple[str, object] | None:
    """One `key`, `key;params`, `key=item` or `key=(inner list)`; None when malformed."""
    if not text:
        return None  # an empty member, as in "a=1,,b=2"
    try:
        parser = _Parser(text)
        key = parser.key()
        if parser.take("="):
            value = parser.inner_list() if parser.peek() == "(" else parser.item()
        else:
            # RFC 8941 §3.2: a member without "=" is the boolean true, possibly with parameters.
            value = _with_params(True, parser.parameters())
        if parser.pos != len(text):
            raise _Malformed
    except _Malformed:
        return None
    return key, value


def _with_params(value: object, params: dict[str, object]) -> object:
    return {"value": value, "params": params} if params else value


class _Parser:
    """An RFC 8941 §4.2 parser over one member's text; every method raises _Malformed on error."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def skip_spaces(self) -> None:
        while self.take(" "):
            pass

    def match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise _Malformed
        self.pos = m.end()
        return m

    def key(self) -> str:
        return self.match(_KEY).group()

    def inner_list(self) -> object:
        # RFC 8941 §3.1.1: "(" *SP [ sf-item *( 1*SP sf-item ) *SP ] ")" parameters
        self.take("(")
        items: list[object] = []
        while True:
            self.skip_spaces()
            if self.take(")"):
                return _with_params(items, self.parameters())
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise _Malformed

    def item(self) -> object:
        value = self.bare_item()
        return _with_params(value, self.parameters())

    def parameters(self) -> dict[str, object]:
        # RFC 8941 §3.1.2: *( ";" *SP key [ "=" bare-item ] ); a repeated key keeps the last value.
        params: dict[str, object] = {}
        while self.take(";"):
            self.skip_spaces()
            key = self.key()
            params[key] = self.bare_item() if self.take("=") else True
        return params

    def bare_item(self) -> object:
        char = self.peek()
        if char == "-" or "0" <= char <= "9":
            return self.number()
        if char == '"':
            return self.string()
        if char == "?":
            return self.boolean()
        return self.match(_TOKEN).group()

    def number(self) -> int | float:
        m = self.match(_NUMBER)
        whole, fraction = m.group(1), m.group(2)
        if fraction is None:
            if len(whole) > _MAX_INTEGER_DIGITS:
                raise _Malformed
            return int(m.group())
        if len(whole) > _MAX_DECIMAL_DIGITS[0] or len(fraction) > _MAX_DECIMAL_DIGITS[1]:
            raise _Malformed
        return float(m.group())

    def string(self) -> str:
        # RFC 8941 §3.3.3: printable ASCII; only \" and \\ are escapes.
        self.take('"')
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                char = self.peek()
                if char not in ('"', "\\"):
                    raise _Malformed
                self.pos += 1
            elif not " " <= char <= "~":
                raise _Malformed
            out.append(char)
        raise _Malformed  # no closing quote

    def boolean(self) -> bool:
        # RFC 8941 §3.3.6: "?" followed by "0" or "1".
        self.take("?")
        if self.take("1"):
            return True
        if self.take("0"):
            return False
        raise _Malformed
