"""Content keys from request-targets and from the CLI."""

from __future__ import annotations

import os.path
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.errors import BadRequest
from oca.keys import MAX_KEY_BYTES, is_valid_key, key_from_target

SEG = "titles/81239481/720p/seg_00001.m4s"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/" + SEG.encode(), (SEG, "")),
        (b"/" + SEG.encode() + b"?CMCD=br%3D3200%2Cbs", (SEG, "CMCD=br%3D3200%2Cbs")),
        (b"/" + SEG.encode() + b"?", (SEG, "")),
        (b"/a?b?c=/../", ("a", "b?c=/../")),  # the query never enters the key
        # absolute-form (RFC 9112 §3.2.2)
        (b"http://cdn.example/" + SEG.encode(), (SEG, "")),
        (b"HTTPS://cdn.example:8443/" + SEG.encode() + b"?x=1", (SEG, "x=1")),
        (b"http://user@cdn.example/a/b", ("a/b", "")),
        # unreserved escapes are decoded once
        (b"/titles/%38%31/seg%5F1.m4s", ("titles/81/seg_1.m4s", "")),
        (b"/a%2db%7Ec%41", ("a-b~cA", "")),
        # the whole key alphabet, literally
        (b"/a-._~!$&'()*+,;=:@z", ("a-._~!$&'()*+,;=:@z", "")),
        (b"/a.b/c..d/e.", ("a.b/c..d/e.", "")),
        (b"/" + b"a" * MAX_KEY_BYTES, ("a" * MAX_KEY_BYTES, "")),
    ],
)
def test_key_from_target(target: bytes, expected: tuple[str, str]) -> None:
    assert key_from_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (b"", "neither origin-form"),
        (b"/", "empty key"),
        (b"http://host", "empty key"),
        (b"http://host?x=1", "empty key"),
        (b"*", "asterisk-form"),
        (b"cdn.example:443", "neither origin-form"),
        (b"ftp://host/a", "neither origin-form"),
        (b"titles/1/a.m4s", "neither origin-form"),
        (b"http:///a", "empty host"),
        # dot segments and hidden files
        (b"/..", "'..' segment"),
        (b"/a/../b", "'..' segment"),
        (b"/a/./b", "'.' segment"),
        (b"/a/..", "'..' segment"),
        (b"/.hidden", "hidden segment"),
        (b"/a/.git/config", "hidden segment"),
        (b"/a/.%2E/b", "percent-encodes '.'"),
        (b"/a/%2e%2e/b", "percent-encodes '.'"),
        (b"http://h/a/../b", "'..' segment"),
        # empty segments
        (b"//a", "empty segment"),
        (b"/a//b", "empty segment"),
        (b"/a/", "empty segment"),
        # encoded structure, double encoding, backslashes
        (b"/a%2Fb", "percent-encodes '/'"),
        (b"/a%2fb", "percent-encodes '/'"),
        (b"/a%5Cb", "percent-encodes '\\\\'"),
        (b"/a%252e%252e/b", "percent-encodes '%'"),
        (b"/a\\b", "backslash"),
        (b"/a\\..\\b", "backslash"),
        # other escapes
        (b"/a%20b", "%20"),
        (b"/a%00b", "%00"),
        (b"/a%0Ab", "%0A"),
        (b"/a%21b", "%21"),
        (b"/a%C3%A9", "%C3"),
        (b"/a%", "invalid percent-escape"),
        (b"/a%4", "invalid percent-escape"),
        (b"/a%GGb", "invalid percent-escape"),
        (b"/a%-1b", "invalid percent-escape"),
        # raw bytes that are not visible ASCII
        (b"/a\x00b", "0x00"),
        (b"/a\tb", "0x09"),
        (b"/a\x7fb", "0x7f"),
        (b"/a b", "0x20"),
        (b"/caf\xc3\xa9", "non-ASCII byte 0xc3"),
        (b"/a?q=\xff", "non-ASCII byte 0xff"),
        (b"/a?q=\x01", "0x01"),
        (b"/a#frag", "fragment"),
        # characters outside the key alphabet
        (b"/a\"b", "'\"'"),
        (b"/a<b>", "'<'"),
        (b"/a{b}", "'{'"),
        (b"/a|b", "'|'"),
        (b"/a^b", "'^'"),
        (b"/a`b", "'`'"),
        (b"/a[b]", "'['"),
        # length
        (b"/" + b"a" * (MAX_KEY_BYTES + 1), "at most 1024"),
        (b"/" + b"%41" * (MAX_KEY_BYTES + 1), "at most 1024"),
        (b"/" + b"a" * 100_000, "at most 1024"),
    ],
)
def test_key_from_target_rejects(target: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)) as caught:
        key_from_target(target)
    assert caught.value.status == 400
    assert len(str(caught.value)) < 300  # the echoed target is cut short


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        (SEG, True),
        ("a", True),
        ("a-._~!$&'()*+,;=:@z/b", True),
        ("a" * MAX_KEY_BYTES, True),
        ("", False),
        ("/" + SEG, False),
        (SEG + "/", False),
        ("a//b", False),
        ("a/../b", False),
        ("./a", False),
        ("a/.hidden", False),
        ("a\\b", False),
        ("a%2Fb", False),  # CLI keys are already decoded: "%" never appears
        ("a b", False),
        ("a\x00b", False),
        ("café", False),
        ("a" * (MAX_KEY_BYTES + 1), False),
    ],
)
def test_is_valid_key(key: str, valid: bool) -> None:
    assert is_valid_key(key) is valid


# --- properties -------------------------------------------------------------------------------

_PIECES = [
    "a", "Z", "0", "-", ".", "_", "~", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=", ":", "@",
    "/", "//", "..", "./", "%2e", "%2E", "%2f", "%2F", "%25", "%5c", "%41", "%7e", "%00", "%", "%g",
    "\\", "?", "#", " ", "\x00", "\x7f", "é", "http://h",
]


@st.composite
def _targets(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    pieces = draw(st.lists(st.sampled_from(_PIECES), max_size=30))
    return ("/" + "".join(pieces)).encode()


@given(_targets())
def test_accepted_keys_are_normalised(target: bytes) -> None:
    try:
        key, query = key_from_target(target)
    except BadRequest:
        return
    assert key and not key.startswith("/")
    assert "\x00" not in key and "\\" not in key and "%" not in key
    assert ".." not in key.split("/") and "." not in key.split("/")
    assert os.path.normpath(key) == key
    assert is_valid_key(key)
    assert query.isascii()


@given(st.text(max_size=60))
def test_is_valid_key_agrees_with_normpath(key: str) -> None:
    if is_valid_key(key):
        assert os.path.normpath(key) == key
        assert key_from_target(b"/" + key.encode()) == (key, "")


@given(_targets())
def test_fast_path_agrees_with_the_full_rules(target: bytes) -> None:
    from oca.keys import _key_from_target_slowly

    try:
        fast: tuple[str, str] | str = key_from_target(target)
    except BadRequest:
        fast = "rejected"
    try:
        slow: tuple[str, str] | str = _key_from_target_slowly(target)
    except BadRequest:
        slow = "rejected"
    assert fast == slow
