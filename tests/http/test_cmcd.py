"""CMCD parsing for the access log (CTA-5004, CTA-5004-A)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.http.cmcd import MAX_KEYS, MAX_SOURCE_CHARS, parse_cmcd, strip_cmcd

SID = "6e2fb550-c457-11e9-bb97-0800200c9a66"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # CTA-5004 style members
        ("br=3200,bs,d=4004,mtp=25400,ot=v,rtp=15000,sf=d,st=v,tb=6000", {
            "br": 3200, "bs": True, "d": 4004, "mtp": 25400, "ot": "v", "rtp": 15000, "sf": "d",
            "st": "v", "tb": 6000,
        }),
        (f'sid="{SID}",cid="faec5fc2",nor="..%2F300kbps%2Fsegment35.m4v",nrr="12323-48763"', {
            "sid": SID, "cid": "faec5fc2", "nor": "..%2F300kbps%2Fsegment35.m4v", "nrr": "12323-48763",
        }),
        ("pr=1.08,pr2=-0.5,dl=0,neg=-12", {"pr": 1.08, "pr2": -0.5, "dl": 0, "neg": -12}),
        ("su=?1,bs=?0", {"su": True, "bs": False}),
        ('s="a\\"b\\\\c"', {"s": 'a"b\\c'}),
        ('s="has, a comma",n=1', {"s": "has, a comma", "n": 1}),
        ("com.example-myNumericKey=500", {"com.example-myNumericKey": 500}),
        ("*k=1,k*.-_9=2", {"*k": 1, "k*.-_9": 2}),
        ("t=a:b/c*d", {"t": "a:b/c*d"}),
        # CTA-5004-A (v2): version and inner lists
        ("v=2,br=(1000 2000),nor=(\"a.m4s\" \"b.m4s\"),e=(ps t)", {
            "v": 2, "br": [1000, 2000], "nor": ["a.m4s", "b.m4s"], "e": ["ps", "t"],
        }),
        ("x=(),y=( 1  2 )", {"x": [], "y": [1, 2]}),
        ("bl=(21300;a 9800;v)", {"bl": [
            {"value": 21300, "params": {"a": True}}, {"value": 9800, "params": {"v": True}},
        ]}),
        ("x=(1 2);p=?0", {"x": {"value": [1, 2], "params": {"p": False}}}),
        ("bs;x=1;y=\"z\"", {"bs": {"value": True, "params": {"x": 1, "y": "z"}}}),
        ("br=3200; q", {"br": {"value": 3200, "params": {"q": True}}}),
        # list syntax: OWS after commas, empty members, a repeated key keeps the last value
        ("br=1,  bl=2 ,\tmtp=3", {"br": 1, "bl": 2, "mtp": 3}),
        ("br=1,,bl=2,", {"br": 1, "bl": 2}),
        ("br=1,br=2", {"br": 2}),
        # malformed members are skipped alone
        ("br=abc def,bl=100", {"bl": 100}),
        ("br = 1,bl=2", {"bl": 2}),
        ("pr=1.2345,bl=2", {"bl": 2}),
        ("pr=1234567890123.5,bl=2", {"bl": 2}),
        ("br=1234567890123456,bl=2", {"bl": 2}),
        ("br=123456789012345", {"br": 123456789012345}),
        ("br=1.,bl=2", {"bl": 2}),
        ("br=-,bl=2", {"bl": 2}),
        ("br=\u0661\u0662,bl=2", {"bl": 2}),  # Arabic-Indic digits
        ('s="bad\\q",bl=2', {"bl": 2}),
        ('s="tab\there",bl=2', {"bl": 2}),
        ('s="é",bl=2', {"bl": 2}),
        ("x=?2,y=?,bl=2", {"bl": 2}),
        ("x=:YWJj:,bl=2", {"bl": 2}),  # byte sequences are not logged
        ("=5,1k=2,Ék=3,bl=2", {"bl": 2}),
        ("x=(1 2,bl=2", {"bl": 2}),
        ("x=(1,2),bl=2", {"bl": 2}),
        ("x=(1(2)),bl=2", {"bl": 2}),
        ("x=((1)),bl=2", {"bl": 2}),
        ("x=1;,bl=2", {"bl": 2}),
        ('s="never closed,bl=2', {}),  # the open string swallows the rest, as in RFC 8941
        ("", {}),
        (",,,", {}),
    ],
)
def test_header_payloads(payload: str, expected: dict[str, object]) -> None:
    assert parse_cmcd(None, {"cmcd-request": payload}) == expected


def test_all_four_headers_and_query_merge() -> None:
    headers = {
        "cmcd-request": "bl=21300,mtp=25400",
        "cmcd-object": "br=3200,d=4004,ot=v",
        "cmcd-status": "bs,rtp=15000",
        "cmcd-session": f'sid="{SID}",st=v',
        "cmcd-other": "ignored=1",
    }
    assert parse_cmcd("CMCD=nor%3D%22next.m4s%22", headers) == {
        "nor": "next.m4s", "bl": 21300, "mtp": 25400, "br": 3200, "d": 4004, "ot": "v", "bs": True,
        "rtp": 15000, "sid": SID, "st": "v",
    }


def test_headers_win_over_query() -> None:
    assert parse_cmcd("CMCD=br%3D1", {"cmcd-object": "br=2"}) == {"br": 2}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (None, {}),
        ("", {}),
        ("a=1&b=2", {}),
        ("CMCD=br%3D3200%2Cbs%2Csid%3D%22abc%22", {"br": 3200, "bs": True, "sid": "abc"}),
        ("token=xyz&CMCD=br%3D3200&other=1", {"br": 3200}),
        ("CMCD=br%3D3200%2Cnor%3D%22a%2Bb%22", {"br": 3200, "nor": "a+b"}),
        ("CMCD=nor%3D%22a+b%22", {"nor": "a+b"}),  # "+" is not a space outside HTML forms
        ("CMCD=br%3D1&CMCD=bl%3D2", {"br": 1, "bl": 2}),
        ("CMCD=br=3200,bs", {"br": 3200, "bs": True}),  # unencoded, as some players send
        ("CMCD", {}),
        ("CMCD=", {}),
        ("cmcd=br%3D1", {}),  # the parameter name is case-sensitive
        ("CMCD=br%3D1%2Cs%3D%22%C3%A9%22", {"br": 1}),  # non-ASCII string skipped
        ("CMCD=br%3D1%2Cs%3D%22%FF%22", {"br": 1}),  # invalid UTF-8 skipped
        ("CMCD=br%3D1%ZZ", {}),
    ],
)
def test_query(query: str | None, expected: dict[str, object]) -> None:
    assert parse_cmcd(query, {}) == expected


def test_key_cap() -> None:
    payload = ",".join(f"k{i}={i}" for i in range(100))
    result = parse_cmcd(None, {"cmcd-request": payload, "cmcd-object": "k0=-1,extra=1"})
    assert len(result) == MAX_KEYS
    assert result["k0"] == -1  # known keys still update
    assert "k64" not in result and "extra" not in result


def test_size_cap_drops_the_member_it_cuts() -> None:
    head = "a=1,"
    filler = "s=\"" + "x" * (MAX_SOURCE_CHARS - len(head) - 10) + "\","
    payload = head + filler + "b=123456789,c=2"
    assert len(payload) > MAX_SOURCE_CHARS
    result = parse_cmcd(None, {"cmcd-request": payload})
    assert result.keys() == {"a", "s"}


def test_huge_input_is_cheap() -> None:
    assert parse_cmcd("CMCD=" + "9" * 1_000_000, {"cmcd-request": "(" * 1_000_000}) == {}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("CMCD=br%3D3200", ""),
        ("a=1&CMCD=br%3D3200&b=2", "a=1&b=2"),
        ("CMCD=x&a=1&CMCD=y", "a=1"),
        ("CMCD&a=1", "a=1"),
        ("a=1&b=CMCD", "a=1&b=CMCD"),
        ("cmcd=1&CMCDX=2", "cmcd=1&CMCDX=2"),
        ("a=1&&b=2", "a=1&&b=2"),
    ],
)
def test_strip_cmcd(query: str, expected: str) -> None:
    assert strip_cmcd(query) == expected


# --- properties -------------------------------------------------------------------------------


@given(st.text(max_size=300), st.text(max_size=300))
def test_never_raises(query: str, header: str) -> None:
    result = parse_cmcd(query, {"cmcd-request": header, "cmcd-session": query})
    assert len(result) <= MAX_KEYS


@given(st.text(alphabet=st.sampled_from(list('abc=,;()"\\?:- 019.*')), max_size=200))
def test_never_raises_on_syntax_soup(header: str) -> None:
    parse_cmcd("CMCD=" + quote(header), {"cmcd-status": header})


_keys = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,8}", fullmatch=True)
_tokens = st.from_regex(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]{0,8}", fullmatch=True)


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Each strategy yields (wire text, parsed value).
_integers = st.integers(-(10**15) + 1, 10**15 - 1).map(lambda i: (str(i), i))
_decimals = st.from_regex(r"-?[0-9]{1,12}\.[0-9]{1,3}", fullmatch=True).map(lambda t: (t, float(t)))
_strings = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(
    lambda t: (_string(t), t)
)
_token_values = _tokens.map(lambda t: (t, t))
_items = st.one_of(_integers, _decimals, _strings, _token_values)
_inner_lists = st.lists(st.one_of(_integers, _strings, _token_values), max_size=5).map(
    lambda items: ("(" + " ".join(w for w, _ in items) + ")", [v for _, v in items])
)


@st.composite
def _dictionaries(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    members = draw(st.dictionaries(_keys, st.one_of(_items, _inner_lists, st.booleans()), max_size=10))
    wire: list[str] = []
    expected: dict[str, Any] = {}
    for key, value in members.items():
        if value is True:
            wire.append(key)
            expected[key] = True
        elif value is False:
            wire.append(f"{key}=?0")
            expected[key] = False
        else:
            text, parsed = value
            wire.append(f"{key}={text}")
            expected[key] = parsed
    return ",".join(wire), expected


@given(_dictionaries())
def test_round_trip_header(generated: tuple[str, dict[str, Any]]) -> None:
    wire, expected = generated
    assert parse_cmcd(None, {"cmcd-object": wire}) == expected


@given(_dictionaries())
def test_round_trip_query(generated: tuple[str, dict[str, Any]]) -> None:
    wire, expected = generated
    assert parse_cmcd("a=1&CMCD=" + quote(wire, safe="") + "&b=2", {}) == expected
