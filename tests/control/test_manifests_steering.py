"""The steering manifest JSON and the player's steering query: keys and values, forgiving parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from control.manifests import SteeringQuery, parse_steering_query, reports_leaving, steering_manifest
from control.manifests.common import PATHWAY_ID_RE
from control.manifests.query import MAX_THROUGHPUT

# --- the steering manifest --------------------------------------------------------------------------------


def test_the_manifest_has_the_keys_players_read() -> None:
    doc = json.loads(steering_manifest(["lon-2", "fra-1", "origin"], ttl=10, reload_uri="http://c/v1/steer/s1"))
    assert doc == {"VERSION": 1, "TTL": 10, "RELOAD-URI": "http://c/v1/steer/s1",
                   "PATHWAY-PRIORITY": ["lon-2", "fra-1", "origin"]}


def test_reload_uri_is_left_out_when_not_given() -> None:
    assert set(json.loads(steering_manifest(["origin"]))) == {"VERSION", "TTL", "PATHWAY-PRIORITY"}


@pytest.mark.parametrize(("priority", "ttl", "words"), [
    ([], 10, "empty"),
    (["a", "a"], 10, "twice"),
    (["a b"], 10, "'a b'"),
    (['a"'], 10, "characters"),
    (["a"], 0, "TTL 0"),
    (["a"], 2.5, "TTL 2.5"),
    (["a"], True, "TTL True"),
])
def test_bad_manifest_arguments_raise_value_error(priority: list[str], ttl: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        steering_manifest(priority, ttl=ttl)


# --- the query --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "protocol", "pathways", "throughputs"), [
    ({"_HLS_pathway": "lon-2", "_HLS_throughput": "5140000"}, "hls", ("lon-2",), (5140000,)),
    ({"_HLS_pathway": '"lon-2"'}, "hls", ("lon-2",), ()),  # quoted
    ({"_HLS_pathway": "%22lon-2%22"}, "hls", ("lon-2",), ()),  # still percent-encoded
    ({"_HLS_pathway": " lon-2 ", "_HLS_throughput": "12.7"}, "hls", ("lon-2",), (12,)),
    ({"_HLS_pathway": "."}, None, (), ()),  # hls.js before it knows a pathway
    ({"_HLS_pathway": "lon 2"}, None, (), ()),
    ({"_HLS_pathway": "lon-2", "_HLS_throughput": "-5"}, "hls", ("lon-2",), ()),
    ({"_HLS_pathway": "lon-2", "_HLS_throughput": "nan"}, "hls", ("lon-2",), ()),
    ({"_HLS_pathway": "lon-2", "_HLS_throughput": "1e400"}, "hls", ("lon-2",), ()),
    ({"_HLS_pathway": "lon-2", "_HLS_throughput": "fast"}, "hls", ("lon-2",), ()),
    ({"_DASH_pathway": '"lon-2,fra-1"', "_DASH_throughput": "9000000,4000000"}, "dash", ("lon-2", "fra-1"),
     (9000000, 4000000)),
    ({"_DASH_pathway": "lon-2,fra-1"}, "dash", ("lon-2", "fra-1"), ()),  # unquoted
    ({"_DASH_pathway": '"lon-2"', "_DASH_throughput": ""}, "dash", ("lon-2",), ()),
    ({"_DASH_pathway": '" lon-2 , ,bad!,fra-1,lon-2"'}, "dash", ("lon-2", "fra-1"), ()),  # junk and repeats dropped
    ({"_DASH_pathway": '"a,b,c"', "_DASH_throughput": "1,2"}, "dash", ("a", "b", "c"), (1, 2)),  # c unmeasured
    ({"_DASH_pathway": '"a,b"', "_DASH_throughput": "1,x"}, "dash", ("a", "b"), ()),  # misaligned: dropped
    # dash.js 5 leaves an empty entry for a pathway it has not measured, so positions line up
    ({"_DASH_pathway": '"a,b,c"', "_DASH_throughput": ",10,15"}, "dash", ("a", "b", "c"), (None, 10, 15)),
    ({"_DASH_pathway": '"a,b"', "_DASH_throughput": "5000,"}, "dash", ("a", "b"), (5000,)),  # as older players
    # nothing measured: no throughput, not a tuple of Nones (found by the property below)
    ({"_DASH_pathway": '"a"', "_DASH_throughput": ","}, "dash", ("a",), ()),
    ({"_DASH_pathway": '"a,b,c"', "_DASH_throughput": ",,"}, "dash", ("a", "b", "c"), ()),
    # _HLS_throughput is one number: a list there is unreadable, not its first entry
    ({"_HLS_pathway": "a", "_HLS_throughput": ","}, "hls", ("a",), ()),
    ({"_HLS_pathway": "a", "_HLS_throughput": "5,6"}, "hls", ("a",), ()),
    ({"_DASH_pathway": '"a"', "_DASH_throughput": "1,2,3"}, "dash", ("a",), (1,)),
    ({"_DASH_pathway": '""'}, None, (), ()),
    ({"_HLS_pathway": "a", "_DASH_pathway": '"b"'}, "hls", ("a",), ()),
    ({}, None, (), ()),
    ({"CMCD": "br=3200", "session": "s1"}, None, (), ()),
    ({"_HLS_pathway": "a" * 5000}, None, (), ()),
])
def test_steering_query_cases(query: dict[str, str], protocol: str | None, pathways: tuple[str, ...],
                              throughputs: tuple[int | None, ...]) -> None:
    assert parse_steering_query(query) == SteeringQuery(protocol, pathways, throughputs)


def test_non_string_values_are_ignored() -> None:
    weird: dict[str, Any] = {"_HLS_pathway": 7, "_DASH_pathway": ["a"], "_HLS_throughput": None}
    assert parse_steering_query(weird) == SteeringQuery(None)


def test_current_and_throughput_of_a_pathway() -> None:
    query = parse_steering_query({"_DASH_pathway": '"a,b,c"', "_DASH_throughput": "30,,20"})
    assert query.current is None  # a DASH list names the pathways used, not the one in use
    assert (query.throughput("a"), query.throughput("b"), query.throughput("c"), query.throughput("z")) == \
        (30, None, 20, None)
    assert parse_steering_query({"_DASH_pathway": '"a"'}).current is None
    assert parse_steering_query({"_HLS_pathway": "a"}).current == "a"
    assert SteeringQuery(None).current is None


@pytest.mark.parametrize(("query", "first", "left"), [
    ({"_HLS_pathway": "fra-1"}, "lon-2", True),
    ({"_HLS_pathway": '"lon-2"'}, "lon-2", False),
    # DASH: the pathways used since the last reload; holding the one we ranked first, in any place, is no
    # leaving (dash.js 5 lists the pathway it came from first when it follows us from fra-1 to lon-2)
    ({"_DASH_pathway": '"fra-1,lon-2"'}, "lon-2", False),
    ({"_DASH_pathway": '"lon-2,fra-1"'}, "lon-2", False),
    ({"_DASH_pathway": '"fra-1"'}, "lon-2", True),
    ({"_DASH_pathway": '"fra-1,mad-1"', "_DASH_throughput": "9000000,"}, "lon-2", True),
    ({}, "lon-2", False),  # no report, e.g. DASH queryBeforeStart: nothing left
    ({"_HLS_pathway": "."}, "lon-2", False),
])
def test_reports_leaving(query: dict[str, str], first: str, left: bool) -> None:
    assert reports_leaving(parse_steering_query(query), first) is left


KEYS = st.sampled_from(["_HLS_pathway", "_HLS_throughput", "_DASH_pathway", "_DASH_throughput", "other"])
VALUES = st.one_of(st.text(max_size=80), st.text(alphabet='ab-_.,"% 0123456789e+', max_size=40),
                   st.lists(st.sampled_from(["a", "b-1", "x y", "", '"', "."]), max_size=6).map(",".join))


@given(st.dictionaries(KEYS, VALUES))
@example({"_DASH_pathway": "a", "_DASH_throughput": ","})  # parsed to (None,) once
@example({"_HLS_pathway": "a", "_HLS_throughput": ","})
def test_garbage_never_raises_and_what_comes_out_is_valid(query: dict[str, str]) -> None:
    result = parse_steering_query(query)
    assert result.protocol in (None, "hls", "dash")
    assert (result.protocol is None) == (not result.pathways)
    assert all(PATHWAY_ID_RE.fullmatch(p) and p != "." for p in result.pathways)
    assert len(set(result.pathways)) == len(result.pathways)
    assert len(result.throughputs) <= len(result.pathways)
    # None is an unmeasured pathway (dash.js 5), and only ever before a measured one
    assert all(t is None or (isinstance(t, int) and 0 <= t <= MAX_THROUGHPUT) for t in result.throughputs)
    assert not result.throughputs or result.throughputs[-1] is not None
    if result.protocol == "hls":
        assert len(result.pathways) == 1
