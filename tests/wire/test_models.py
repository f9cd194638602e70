"""The wire model (oca/wire/): every model survives a JSON round trip, and a body that is not one of them is a
WireError (a 400, naming the field) rather than a KeyError, a TypeError or a wrong value taken on trust."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.errors import BadRequest
from oca.wire.codec import WireError
from oca.wire.fill import (
    PLAN_VERSION,
    SOURCE_KINDS,
    BoxPlan,
    FillSettings,
    PlannedFile,
    PlannedTitle,
    PlanReply,
    Source,
    TierUse,
)
from oca.wire.invalidation import MAX_SEQ, Applied, Invalidation, InvalidationBatch
from oca.wire.inventory import (
    LOOKUP_MAX_BYTES,
    LOOKUP_MAX_KEYS,
    InventoryObject,
    Listing,
    TitleChanges,
    TitleTotals,
    lookup_batches,
)
from oca.wire.prefetch import MAX_PRIORITY, MAX_RATE, JobProgress, PrefetchItem, PrefetchRequest
from oca.wire.status import BoxReport, TierReport
from oca.wire.window import Window

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**53)
keys = st.from_regex(r"titles/[a-z0-9]{1,6}/[a-z0-9]{1,6}\.(ts|m4s|m3u8)", fullmatch=True)
urls = st.from_regex(r"https?://[a-z]{1,8}\.test(:[1-9][0-9]{0,3})?", fullmatch=True)
scores = st.floats(min_value=0, max_value=1e9, allow_nan=False).map(lambda x: round(x, 6))


def sources() -> st.SearchStrategy[Source]:
    return st.builds(Source, names, urls, st.sampled_from(SOURCE_KINDS))


@st.composite
def box_plans(draw: st.DrawFn) -> BoxPlan:
    known = draw(st.lists(sources(), min_size=1, max_size=4, unique_by=lambda s: s.name))
    by_name = {s.name: s for s in known}
    files = draw(st.lists(st.builds(PlannedFile, keys, names, counts, names, names, st.booleans(), st.booleans(),
                                    st.lists(st.sampled_from(sorted(by_name)), max_size=3).map(tuple)), max_size=5))
    tiers = draw(st.lists(st.builds(TierUse, names, counts, counts, counts), max_size=3))
    titles = draw(st.lists(st.builds(PlannedTitle, names, counts, scores, st.booleans(), counts), max_size=4))
    return BoxPlan(draw(names), draw(names), tuple(tiers), tuple(titles), tuple(files),
                   tuple(draw(st.lists(names, max_size=3))), by_name)


settings_values = st.builds(FillSettings, st.floats(0, 1), st.integers(1, 9), st.floats(0, 0.99), st.booleans())
windows = st.one_of(st.none(), st.sampled_from(["02:00-14:00", "22:00-06:00", "always"]))
items = st.builds(PrefetchItem, keys, st.one_of(st.none(), counts), st.one_of(st.none(), names), st.booleans(),
                  st.booleans(), st.lists(sources(), max_size=3).map(tuple))
objects = st.builds(InventoryObject, keys, counts, st.one_of(st.none(), names), st.booleans(),
                    st.one_of(st.none(), names), st.booleans(),
                    st.one_of(st.none(), st.floats(0, 2e9, allow_nan=False)))


def through_json(value: Any) -> Any:
    """What the other end reads: the JSON text, parsed."""
    return json.loads(json.dumps(value.to_json()))


@given(box_plans())
def test_a_box_plan_round_trips(plan: BoxPlan) -> None:
    assert BoxPlan.from_json(through_json(plan)) == plan


@given(box_plans(), windows, st.floats(0, 2e9, allow_nan=False), settings_values)
def test_a_plan_reply_round_trips(plan: BoxPlan, window: str | None, at: float, settings: FillSettings) -> None:
    reply = PlanReply(plan, window, at, settings)
    assert PlanReply.from_json(through_json(reply)) == reply


@given(st.lists(items, min_size=1, max_size=4), st.integers(-MAX_PRIORITY, MAX_PRIORITY), st.integers(0, MAX_RATE))
def test_a_prefetch_request_round_trips(entries: list[PrefetchItem], priority: int, rate: int) -> None:
    request = PrefetchRequest(tuple(entries), priority, rate)
    assert PrefetchRequest.from_json(through_json(request)) == request


@given(st.builds(JobProgress, counts, st.sampled_from(["queued", "running", "done", "cancelled"]),
                 st.integers(-MAX_PRIORITY, MAX_PRIORITY), counts, counts, counts, counts, counts,
                 st.dictionaries(keys, names, max_size=3), counts, st.dictionaries(names, counts, max_size=3)))
def test_job_progress_round_trips(progress: JobProgress) -> None:
    assert JobProgress.from_json(through_json(progress)) == progress


@given(st.lists(objects, max_size=4))
def test_an_inventory_listing_round_trips(listed: list[InventoryObject]) -> None:
    listing = Listing(tuple(listed))
    assert Listing.from_json(through_json(listing)) == listing


@given(counts, st.booleans(), st.dictionaries(names, st.builds(TitleTotals, counts, counts), max_size=4),
       st.lists(names, max_size=3))
def test_title_changes_round_trip(sequence: int, full: bool, titles: dict[str, TitleTotals],
                                  removed: list[str]) -> None:
    changes = TitleChanges(sequence, full, titles, tuple(removed))
    assert TitleChanges.from_json(through_json(changes)) == changes


@pytest.mark.parametrize("text", ["02:00-14:00", "22:00-06:00", "00:00:30-24:00"])
def test_a_window_reads_back_from_its_text(text: str) -> None:
    window = Window.parse(text)
    assert window is not None and Window.parse(str(window)) == window


PLAN = BoxPlan("b1", "s", (TierUse("ssd", 10, 9, 5),), (PlannedTitle("1", 1, 0.5, True, 5),),
               (PlannedFile("titles/1/a.ts", "1", 5, "d", "ssd", True, True, ("origin",)),), (),
               {"origin": Source("origin", "http://o.test", "origin")})


def plan_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = PLAN.to_json()
    change(body)
    return body


@pytest.mark.parametrize(("body", "named"), [
    ([], "expected a JSON object"),
    (plan_with(lambda b: b.update(version=PLAN_VERSION + 1)), "version 2 is not 1"),
    (plan_with(lambda b: b.pop("box")), "fill plan box must be a non-empty string, got None"),
    (plan_with(lambda b: b["files"][0].update(size=-1)), "fill plan files[0].size must be a non-negative integer"),
    (plan_with(lambda b: b["files"][0].update(size=True)), "files[0].size must be a non-negative integer, got True"),
    (plan_with(lambda b: b["files"][0].update(sources=["nowhere"])), "names unknown sources ['nowhere']"),
    (plan_with(lambda b: b["sources"]["origin"].update(kind="cousin")), "sources['origin'].kind must be peer"),
    (plan_with(lambda b: b["titles"][0].update(score="high")), "titles[0].score must be a number"),
    (plan_with(lambda b: b.update(tiers={})), "fill plan tiers must be a list"),
    (plan_with(lambda b: b["files"][0].update(score="high")), "files[0].score must be a number"),
    (plan_with(lambda b: b["files"][0].update(score=-1)), "files[0].score must be a non-negative number"),
])
def test_a_bad_plan_is_a_wire_error_naming_the_field(body: Any, named: str) -> None:
    with pytest.raises(WireError) as caught:
        BoxPlan.from_json(body)
    assert named in str(caught.value)


@pytest.mark.parametrize(("body", "named"), [
    ({"items": []}, "items must be a non-empty list"),
    ({"items": [{"key": "../etc/passwd"}]}, "items[0].key must be a valid content key"),
    ({"items": ["titles/1/a", {"key": "titles/1/b", "size": 2**63}]}, "items[1].size must be a non-negative"),
    ({"items": ["titles/1/a"], "priority": MAX_PRIORITY + 1}, "priority must be an integer from"),
    ({"items": ["titles/1/a"], "rate": "fast"}, "rate (bytes per second)"),
    ({"items": [{"key": "titles/1/a", "sources": [{"name": "x", "url": "ftp://x"}]}]},
     "items[0].sources[0].url must be an http(s) URL"),
])
def test_a_bad_prefetch_request_is_a_400_naming_the_field(body: Any, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        PrefetchRequest.from_json(body)
    assert caught.value.status == 400 and named in str(caught.value)


def test_a_wire_error_is_a_value_error_too() -> None:
    # clients that read an answer catch bad data as ValueError; servers answer its status (400)
    with pytest.raises(ValueError):
        JobProgress.from_json({"id": 1, "state": "exploded"})
    assert WireError("x").status == 400


invalidations = st.builds(Invalidation, st.integers(1, MAX_SEQ), st.just("key"), keys, st.booleans(), names, names,
                          st.floats(0, 2e9, allow_nan=False), st.one_of(st.none(), names))


@given(st.lists(invalidations, max_size=4), st.one_of(st.none(), st.integers(0, MAX_SEQ)))
def test_an_invalidation_batch_round_trips(entries: list[Invalidation], last_seq: int | None) -> None:
    batch = InvalidationBatch(tuple(entries), last_seq)
    assert InvalidationBatch.from_json(through_json(batch)) == batch


@given(st.integers(0, MAX_SEQ))
def test_a_push_answer_round_trips(seq: int) -> None:
    assert Applied.from_json(through_json(Applied(seq))) == Applied(seq)


@pytest.mark.parametrize(("entry", "named"), [
    ({"seq": 0, "scope": "key", "value": "titles/1/a"}, "seq must be an integer from 1"),
    ({"seq": True, "scope": "key", "value": "titles/1/a"}, "seq must be an integer from 1"),
    ({"seq": 3, "scope": "site", "value": "x"}, "invalidation 3 scope must be one of key, prefix, title"),
    ({"seq": 3, "scope": "title", "value": "1/2"}, "invalidation 3: not a valid title id"),
    ({"seq": 3, "scope": "key", "value": "titles/1/a", "soft": "yes"}, "invalidation 3 soft must be true or false"),
])
def test_a_bad_invalidation_is_refused_naming_its_seq(entry: dict[str, Any], named: str) -> None:
    with pytest.raises(WireError) as caught:
        InvalidationBatch.from_json({"invalidations": [{"seq": 1, "scope": "key", "value": "titles/1/a"}, entry]})
    assert named in str(caught.value)


def test_a_planned_file_score_round_trips_and_an_absent_one_means_no_prediction() -> None:
    scored = dataclasses.replace(PLAN, files=(dataclasses.replace(PLAN.files[0], score=2.5),))
    assert BoxPlan.from_json(through_json(scored)) == scored
    assert scored.to_json()["files"][0]["score"] == 2.5
    body = PLAN.to_json()
    assert "score" not in body["files"][0]  # a plan without scores reads as it did before (older readers too)
    assert BoxPlan.from_json(through_json(PLAN)).files[0].score is None


optional_counts = st.one_of(st.none(), counts)
tier_reports = st.builds(TierReport, st.one_of(st.none(), names), optional_counts, optional_counts, optional_counts,
                         st.one_of(st.none(), st.sampled_from(["up", "full", "failed"])), st.one_of(st.none(), names))
box_reports = st.builds(BoxReport, names, st.one_of(st.none(), names), st.booleans(),
                        st.one_of(st.none(), st.floats(0, 1e12, allow_nan=False)), optional_counts, optional_counts,
                        optional_counts, optional_counts, optional_counts, optional_counts,
                        st.lists(tier_reports, max_size=3).map(tuple))


@given(box_reports)
def test_a_box_report_round_trips(report: BoxReport) -> None:
    assert BoxReport.from_json(through_json(report), report.box) == report


def test_a_box_report_of_another_release_reads_what_it_can() -> None:
    # an older box leaves fields out, a newer one adds some or changes a counter's shape: None, never an error
    raw = {"box": "b1", "version": 7, "draining": "yes", "egress_bps": 12, "bytes_out": True, "connections": "3",
           "hit_bytes": 5, "added_later": {"x": 1},
           "tiers": [{"name": "ssd", "capacity": 10, "used": 2.5, "state": "up", "disk": "nvme0"}, {}]}
    report = BoxReport.from_json(raw, "b1")
    assert report == BoxReport("b1", egress_bps=12.0, hit_bytes=5,
                               tiers=(TierReport("ssd", capacity=10, state="up"), TierReport(None)))
    assert BoxReport.from_json({"box": "b1"}) == BoxReport("b1")
    assert BoxReport.from_json(raw | {"tiers": [{"name": "ssd", "state": "failed"}, {"state": "failed"}]}
                               ).failed_tiers == ("ssd", "?")


@pytest.mark.parametrize(("body", "message"), [
    ([1], "/status is not a JSON object"),
    ({"box": "b2"}, "/status is of box 'b2', expected 'b1'"),
    ({}, "/status is of box 'None', expected 'b1'"),
    ({"box": "b1", "tiers": {"ssd": {}}}, "/status tiers is not a list of objects"),
    ({"box": "b1", "tiers": ["ssd"]}, "/status tiers is not a list of objects"),
    ({"box": "b1", "tiers": None}, "/status tiers is not a list of objects"),
])
def test_a_junk_box_report_is_a_wire_error(body: Any, message: str) -> None:
    with pytest.raises(WireError) as caught:
        BoxReport.from_json(body, "b1")
    assert str(caught.value) == message
    with pytest.raises(WireError, match="expected a box id"):
        BoxReport.from_json({"box": 5})


# A /status body as another release may send it: every report field, some of another shape, and fields the
# report does not read (the operator part of /status), nested.
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
_report_fields = st.sampled_from(["version", "draining", "egress_bps", "bytes_out", "connections",
                                  "inventory_sequence", "invalidation_seq", "hit_bytes", "miss_bytes", "uptime"])
_tier_bodies = st.dictionaries(st.sampled_from(["name", "capacity", "used", "objects", "state", "error", "path"]),
                               _json_values, max_size=7)
_status_bodies = st.fixed_dictionaries(
    {"box": st.one_of(st.just("b1"), st.just("b2"), _json_scalars)},
    optional={"tiers": st.one_of(st.lists(_tier_bodies, max_size=3), st.lists(_json_values, max_size=2), _json_values)},
).flatmap(lambda top: st.dictionaries(_report_fields, _json_values, max_size=6).map(lambda rest: rest | top))


def _read(read: Callable[[], BoxReport]) -> BoxReport | str:
    try:
        return read()
    except WireError as exc:
        return f"WireError: {exc}"


@given(_status_bodies, st.sampled_from(["b1", None]))
def test_decoding_a_status_body_reads_what_the_lenient_reader_reads(body: dict[str, Any], box: str | None) -> None:
    # the fast path (msgspec, typed) and the fallback (json + field checks) must never disagree
    text = json.dumps(body).encode()
    assert _read(lambda: BoxReport.decode(text, box)) == _read(lambda: BoxReport.from_json(json.loads(text), box))


@given(box_reports)
def test_a_box_report_decodes_from_its_bytes(report: BoxReport) -> None:
    assert BoxReport.decode(json.dumps(report.to_json()).encode(), report.box) == report


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"box": "b1", "egress_bps": 1e400}', BoxReport("b1", egress_bps=float("inf"))),  # json reads it, msgspec not
    (b'{"box": "b1", "bytes_out": NaN}', BoxReport("b1")),  # not JSON to msgspec: read leniently (NaN is no int)
    (b'{"box": "b1", "bytes_out": 7, "box": "b1", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
    (b"{", None),
    (b"", None),
])
def test_a_status_body_msgspec_refuses_is_read_leniently_or_is_a_wire_error(body: bytes,
                                                                             expected: BoxReport | None) -> None:
    if expected is None:
        with pytest.raises(WireError, match="not JSON"):
            BoxReport.decode(body, "b1")
    else:
        assert BoxReport.decode(body, "b1") == expected


def test_lookup_batches_keep_every_key_in_order_within_the_bodys_bounds() -> None:
    keys = [f"titles/{i}/seg.m4s" for i in range(10_000)]
    batches = list(lookup_batches(keys))
    assert [k for b in batches for k in b] == keys
    assert [len(b) for b in batches] == [LOOKUP_MAX_KEYS, LOOKUP_MAX_KEYS, 10_000 - 2 * LOOKUP_MAX_KEYS]
    long = ["titles/" + "x" * 1000 + f"/{i}" for i in range(1200)]  # bytes bind before the count does
    batches = list(lookup_batches(long))
    assert [k for b in batches for k in b] == long and len(batches) == 3
    assert all(len(json.dumps({"keys": b})) <= LOOKUP_MAX_BYTES + 16 for b in batches)
    assert list(lookup_batches([])) == []
