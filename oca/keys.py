"""Content keys: the one normalised name of a cached object, shared by the box and the control plane.

A key is a relative path such as `titles/81239481/720p/seg_00001.m4s`. It becomes a file name on
disk, so its rules are strict and there is exactly one spelling per object:
- The alphabet is RFC 3986 `pchar` without `%`: letters, digits, `-._~!$&'()*+,;=:@`, and `/` only
  as the segment separator. Nothing else, so no space, backslash, control byte or non-ASCII.
- At most 1024 bytes; no empty segment (`//`, trailing `/`), no `.` or `..` segment, and no segment
  starting with `.` (hidden files stay out of reach).
- From a request-target, percent-escapes of unreserved letters, digits, `-`, `_` and `~` are decoded
  once (RFC 3986 §6.2.2.2 makes them equivalent). Any other escape is refused: decoding `%2F`, `%2E`,
  `%5C` or `%25` would let a path hide its structure (`%252e` double-encoding included), and the
  rest would put a character outside the alphabet, or reserved-character ambiguity, into the key.
Every refusal raises BadRequest (400) naming the problem.
"""

from __future__ import annotations

import re

from oca.errors import BadRequest

MAX_KEY_BYTES = 1024

_UNRESERVED_DECODABLE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_STRUCTURAL = {ord("/"): "/", ord("."): ".", ord("\\"): "\\", ord("%"): "%"}
# Longest raw path that could still decode to an acceptable key (every byte written as %XX).
_MAX_RAW_PATH = 3 * MAX_KEY_BYTES + 1
# The common case in one regex match: an origin-form path already in normal form (no escapes, no empty,
# dot or hidden segment) and a query of visible ASCII without '#'. Anything else takes the full rules below,
# which give the same answer for what this accepts (tests/test_keys.py checks that on generated targets).
_SEGMENT = rb"[A-Za-z0-9\-_~!$&'()*+,;=:@][A-Za-z0-9\-._~!$&'()*+,;=:@]*"
_NORMAL_TARGET = re.compile(rb"/(" + _SEGMENT + rb"(?:/" + _SEGMENT + rb")*)(?:\?([\x21\x22\x24-\x7e]*))?")


def key_from_target(target: bytes) -> tuple[str, str]:
    """(key, query) from a raw HTTP request-target in origin-form or absolute-form.

    `/titles/1/seg_00001.m4s?CMCD=br%3D3200` -> ("titles/1/seg_00001.m4s", "CMCD=br%3D3200").
    The query is returned as sent (it never enters the key); it must be visible ASCII.
    """
    match = _NORMAL_TARGET.fullmatch(target)
    if match is not None and match.end(1) <= MAX_KEY_BYTES + 1:
        return match.group(1).decode("ascii"), (match.group(2) or b"").decode("ascii")
    return _key_from_target_slowly(target)


def _key_from_target_slowly(target: bytes) -> tuple[str, str]:
    path, query = _split_target(target)
    if len(path) > _MAX_RAW_PATH:
        raise BadRequest(f"request path is {len(path)} bytes; a key may have at most {MAX_KEY_BYTES}")
    key = _decode_path(path)[1:]
    problem = _key_problem(key)
    if problem:
        raise BadRequest(f"request path {_show(path)}: {problem}")
    return key, query


def is_valid_key(key: str) -> bool:
    """True when `key` is already a normalised key, as an operator types it on the CLI."""
    return _key_problem(key) is None


def _split_target(target: bytes) -> tuple[bytes, str]:
    for byte in target:
        if byte < 0x21 or byte > 0x7E:
            # RFC 9112 §3.2 / RFC 3986 §2: a request-target is visible ASCII; the rest is escaped.
            kind = "non-ASCII" if byte > 0x7E else "control or space"
            raise BadRequest(f"request-target has a {kind} byte 0x{byte:02x}: {_show(target)}")
    if b"#" in target:
        # RFC 9112 §3.2: a request-target carries no fragment.
        raise BadRequest(f"request-target has a fragment: {_show(target)}")
    if target == b"*":
        # RFC 9112 §3.2.4: asterisk-form is only for a server-wide OPTIONS.
        raise BadRequest("asterisk-form request-target '*' names no object")
    if not target.startswith(b"/"):
        target = _absolute_path(target)
    path, _, query = target.partition(b"?")
    return path, query.decode("ascii")


def _absolute_path(target: bytes) -> bytes:
    """The path and query of an absolute-form target (RFC 9112 §3.2.2: a server MUST accept it)."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        # RFC 9112 §3.2.3: authority-form (host:port) is only for CONNECT.
        raise BadRequest(
            f"request-target {_show(target)} is neither origin-form nor an http(s) absolute-form URI"
        )
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    if cut == 0:
        # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid and MUST be rejected.
        raise BadRequest(f"request-target {_show(target)} has an empty host")
    remainder = rest[cut:]
    # RFC 9112 §3.2.2 / RFC 3986 §3.3: an empty path is the root, "/".
    return remainder if remainder.startswith(b"/") else b"/" + remainder


def _decode_path(path: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(path):
        byte = path[i]
        if byte == ord("%"):
            escape = path[i + 1 : i + 3]
            if len(escape) != 2 or not set(escape) <= _HEX:
                raise BadRequest(f"request path has an invalid percent-escape: {_show(path)}")
            byte = int(escape, 16)
            if byte in _STRUCTURAL:
                raise BadRequest(
                    f"request path percent-encodes {_STRUCTURAL[byte]!r} (%{escape.decode()}): {_show(path)}"
                )
            if byte not in _UNRESERVED_DECODABLE:
                raise BadRequest(
                    f"request path percent-encodes a character keys may not hold (%{escape.decode()}): "
                    f"{_show(path)}"
                )
            i += 3
        elif byte == ord("\\"):
            raise BadRequest(f"request path has a backslash: {_show(path)}")
        else:
            i += 1
        out.append(byte)
    return out.decode("ascii")


def _key_problem(key: str) -> str | None:
    """Why `key` is not a normalised key, or None when it is."""
    if not key:
        return "empty key"
    if len(key) > MAX_KEY_BYTES:
        return f"key is {len(key)} bytes; at most {MAX_KEY_BYTES} allowed"
    bad = next((c for c in key if c not in _KEY_CHARS), None)
    if bad is not None:
        return f"key has the character {bad!r}, not allowed in keys"
    for segment in key.split("/"):
        if not segment:
            return "key has an empty segment (leading, trailing or doubled '/')"
        if segment in (".", ".."):
            return f"key has a {segment!r} segment"
        if segment.startswith("."):
            return f"key has a hidden segment {segment!r}"
    return None


def _show(raw: bytes) -> str:
    """A request-target for an error message: printable and at most ~100 characters."""
    text = repr(raw[:100])[2:-1]
    return text + ("..." if len(raw) > 100 else "")
