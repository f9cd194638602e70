"""Steering decisions on a small fleet: where the client is, which boxes, in which order, and why."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgspec
import pytest

from control.model import ORIGIN_PATHWAY, Box, BoxHealth, CoverageArea, Fleet, Inventory, Rendition, Site, Title
from control.steering import (
    BY_COVERAGE,
    BY_DEFAULT,
    BY_NONE,
    BY_PREFIX,
    Decision,
    SteeringIndex,
    great_circle_km,
    rendezvous_order,
    steer,
)

NOW = 1000.0
SITES = {
    "fra": Site("fra", 50.11, 8.68, "DE"),
    "ams": Site("ams", 52.37, 4.90, "NL", parent="fra"),
    "lon": Site("lon", 51.51, -0.13, "GB", parent="fra"),
    "dub": Site("dub", 53.35, -6.26, "IE", parent="lon"),  # no boxes: never the nearest site
    "mad": Site("mad", 40.42, -3.70, "ES"),
}
ANNOUNCES = {"ams-1": ("100.64.1.0/24",), "ams-2": ("100.64.0.0/16",), "lon-1": ("2001:db8:10::/48",),
             "mad-1": ("192.0.2.0/24",)}
BOX_IDS = ["ams-1", "ams-2", "ams-3", "lon-1", "lon-2", "lon-3", "fra-1", "fra-2", "mad-1", "mad-2"]
BOXES = {b: Box(b, b.split("-")[0], f"http://{b}.test:8080/", f"http://{b}.test:8081", 10**10, ANNOUNCES.get(b, ()))
         for b in BOX_IDS}
COVERAGE = (
    CoverageArea("100.64.0.0/10", 52.30, 4.80, "NL"),
    CoverageArea("198.51.100.0/24", 53.35, -6.26, "IE"),  # Dublin: nearest site with boxes is lon
    CoverageArea("203.0.113.0/24", 40.00, -3.00, "ES"),
    CoverageArea("2001:db8::/32", 51.50, -0.10, "GB"),
)
FLEET = Fleet(SITES, BOXES, COVERAGE, "http://origin.test/")
INDEX = SteeringIndex.build(FLEET)
HEALTHY = {b: BoxHealth(b, True, load=0.2, last_healthy_poll=NOW - 1) for b in BOX_IDS}
VIDEO = (Rendition("720p", "video", 3_000_000, "avc1.64001f", (1280, 720), playlist="titles/t/720p/index.m3u8"),)
ANYWHERE = Title("81239481", VIDEO, ())
NL_ONLY = Title("55500001", VIDEO, (), countries=frozenset({"NL"}))


def decide(ip: str, *, title: Title = ANYWHERE, health: dict[str, BoxHealth] | None = None,
           inventory: Inventory | None = None, index: SteeringIndex = INDEX, **kwargs: Any) -> Decision:
    return steer(index, HEALTHY if health is None else health, inventory or Inventory(), title, ip, now=NOW,
                 **kwargs)


def with_health(**changes: dict[str, Any]) -> dict[str, BoxHealth]:
    """HEALTHY with some fields changed: with_health(lon_1={"draining": True})."""
    health = dict(HEALTHY)
    for name, fields in changes.items():
        box = name.replace("_", "-")
        health[box] = msgspec.structs.replace(health[box], **fields)
    return health


# --- where the client is -------------------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "matched_by", "prefix", "site", "country", "first"), [
    ("100.64.1.5", BY_PREFIX, "100.64.1.0/24", "ams", "NL", "ams-1"),  # longest announced prefix wins
    ("100.64.9.9", BY_PREFIX, "100.64.0.0/16", "ams", "NL", "ams-2"),
    ("2001:db8:10::5", BY_PREFIX, "2001:db8:10::/48", "lon", "GB", "lon-1"),  # country from coverage
    ("192.0.2.77", BY_PREFIX, "192.0.2.0/24", "mad", "ES", "mad-1"),  # no coverage: the box's site country
    ("100.80.0.1", BY_COVERAGE, "100.64.0.0/10", "ams", "NL", None),
    ("198.51.100.7", BY_COVERAGE, "198.51.100.0/24", "lon", "IE", None),  # dub has no boxes
    ("203.0.113.9", BY_COVERAGE, "203.0.113.0/24", "mad", "ES", None),
    ("2001:db8:99::1", BY_COVERAGE, "2001:db8::/32", "lon", "GB", None),
    ("::ffff:100.64.1.5", BY_PREFIX, "100.64.1.0/24", "ams", "NL", "ams-1"),
    ("8.8.8.8", BY_NONE, None, None, None, ORIGIN_PATHWAY),
])
def test_the_client_is_located_by_announced_prefix_then_coverage(ip: str, matched_by: str, prefix: str | None,
                                                                  site: str | None, country: str | None,
                                                                  first: str | None) -> None:
    decision = decide(ip)
    assert (decision.matched_by, decision.matched_prefix, decision.client_site, decision.country) == \
        (matched_by, prefix, site, country)
    assert decision.allowed
    if first is not None:
        assert decision.pathways[0].id == first
    if site is not None:
        assert decision.pathways[0].site == site


def test_an_announcing_box_comes_before_its_site_then_the_parent_tier() -> None:
    decision = decide("100.64.1.5", max_pathways=10)
    ams_rest = rendezvous_order(ANYWHERE.id, ["ams-2", "ams-3"])
    fra = rendezvous_order(ANYWHERE.id, ["fra-1", "fra-2"])
    assert decision.pathway_ids == ("ams-1", *ams_rest, *fra, ORIGIN_PATHWAY)
    assert [c.tier for c in decision.candidates] == ["announcing", "site ams", "site ams", "parent fra", "parent fra"]


def test_coverage_picks_the_nearest_site_and_its_parent_chain() -> None:
    decision = decide("198.51.100.7", max_pathways=10)
    assert [p.site for p in decision.pathways] == ["lon", "lon", "lon", "fra", "fra", None]
    assert "nearest site lon" in decision.note
    assert decision.pathways[-1].id == ORIGIN_PATHWAY


def test_a_site_without_parent_goes_straight_to_origin() -> None:
    assert decide("203.0.113.9", max_pathways=10).pathway_ids == (
        *rendezvous_order(ANYWHERE.id, ["mad-1", "mad-2"]), ORIGIN_PATHWAY)


def test_nearest_is_by_great_circle_distance() -> None:
    dublin, lon, ams = SITES["dub"], SITES["lon"], SITES["ams"]
    assert great_circle_km(dublin.latitude, dublin.longitude, lon.latitude, lon.longitude) < \
        great_circle_km(dublin.latitude, dublin.longitude, ams.latitude, ams.longitude)
    assert 460 < great_circle_km(lon.latitude, lon.longitude, dublin.latitude, dublin.longitude) < 470
    assert INDEX.nearest_site(53.35, -6.26) == "lon"
    assert INDEX.nearest_site(-33.9, 151.2) in {"mad", "fra", "ams", "lon"}  # far away still gets a site


def test_an_unknown_client_gets_origin_only_or_the_default_site() -> None:
    decision = decide("8.8.8.8")
    assert decision.pathway_ids == (ORIGIN_PATHWAY,)
    assert decision.pathways[0].data_url == "http://origin.test"
    assert "origin only" in decision.note
    with_default = SteeringIndex.build(FLEET, default_site="fra")
    decision = decide("8.8.8.8", index=with_default)
    assert decision.matched_by == BY_DEFAULT
    assert decision.pathway_ids == (*rendezvous_order(ANYWHERE.id, ["fra-1", "fra-2"]), ORIGIN_PATHWAY)
    with pytest.raises(ValueError, match="default site 'nowhere'"):
        SteeringIndex.build(FLEET, default_site="nowhere")


@pytest.mark.parametrize("ip", ["", "not-an-ip", "100.64.1", "100.64.1.256", "2001:db8::zz", "100.64.1.5/32"])
def test_a_malformed_client_address_raises_value_error(ip: str) -> None:
    with pytest.raises(ValueError, match="client address"):
        decide(ip)


# --- licences ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "status"), [
    ("100.64.1.5", 200),  # NL
    ("100.80.0.1", 200),  # NL by coverage
    ("198.51.100.7", 451),  # IE
    ("192.0.2.77", 451),  # ES from the announcing box's site
    ("8.8.8.8", 451),  # country unknown: a restricted title does not play
])
def test_a_title_not_licensed_in_the_clients_country_is_451(ip: str, status: int) -> None:
    decision = decide(ip, title=NL_ONLY)
    assert decision.status == status
    if status == 451:
        assert not decision.allowed
        assert decision.pathways == ()
        assert "not licensed" in decision.note


# --- health, load, drain --------------------------------------------------------------------------------


def test_a_whole_site_out_of_service_falls_back_to_the_parent() -> None:
    health = with_health(lon_1={"healthy": False, "error": "connect timeout"}, lon_2={"draining": True},
                         lon_3={"load": 0.93})
    decision = decide("198.51.100.7", health=health)
    assert decision.pathway_ids == (*rendezvous_order(ANYWHERE.id, ["fra-1", "fra-2"]), ORIGIN_PATHWAY)
    reasons = {c.box_id: c.reason for c in decision.candidates}
    assert reasons["lon-1"] == "unhealthy (connect timeout)"
    assert reasons["lon-2"] == "draining"
    assert reasons["lon-3"] == "overloaded 0.93 ≥ 0.90"
    assert all(reasons[b].startswith("chosen #") for b in ("fra-1", "fra-2"))


@pytest.mark.parametrize(("load", "threshold", "offered"), [
    (0.89, 0.9, True), (0.90, 0.9, False), (1.7, 0.9, False), (0.95, 0.99, True)])
def test_overload_is_load_at_or_over_the_threshold(load: float, threshold: float, offered: bool) -> None:
    health = with_health(mad_1={"load": load}, mad_2={"healthy": False})
    decision = decide("203.0.113.9", health=health, overload_threshold=threshold)
    assert ("mad-1" in decision.pathway_ids) is offered


def test_a_box_without_a_health_report_is_not_offered() -> None:
    health = {b: h for b, h in HEALTHY.items() if b != "mad-1"}
    decision = decide("203.0.113.9", health=health)
    assert "mad-1" not in decision.pathway_ids
    assert {c.box_id: c.reason for c in decision.candidates}["mad-1"] == "no health report yet"


def test_origin_is_always_the_last_pathway() -> None:
    rng = random.Random(3)
    for _ in range(200):
        health = {b: msgspec.structs.replace(h, healthy=rng.random() > 0.3, draining=rng.random() < 0.2,
                                             load=rng.random()) for b, h in HEALTHY.items()}
        ip = rng.choice(["100.64.1.5", "198.51.100.7", "203.0.113.9", "2001:db8:10::5", "8.8.8.8"])
        decision = decide(ip, health=health, max_pathways=rng.randint(0, 6))
        assert decision.pathways[-1].id == ORIGIN_PATHWAY
        assert [p.id for p in decision.pathways].count(ORIGIN_PATHWAY) == 1
        assert len(set(decision.pathway_ids)) == len(decision.pathways)


@pytest.mark.parametrize("max_pathways", [0, 1, 2, 3])
def test_max_pathways_caps_the_boxes_not_the_origin(max_pathways: int) -> None:
    decision = decide("198.51.100.7", max_pathways=max_pathways)
    assert len(decision.pathways) == max_pathways + 1
    not_offered = [c for c in decision.candidates if c.rank is None]
    assert all(f"max_pathways={max_pathways} reached" in c.reason for c in not_offered)


# --- holders and rendezvous hashing -------------------------------------------------------------------


def test_holders_come_first_live_before_partial() -> None:
    inventory = Inventory(holding={"lon-3": frozenset({ANYWHERE.id}), "lon-2": frozenset({ANYWHERE.id})},
                          complete={"lon-3": frozenset({ANYWHERE.id})})
    decision = decide("198.51.100.7", inventory=inventory, max_pathways=3)
    assert decision.pathway_ids == ("lon-3", "lon-2", "lon-1", ORIGIN_PATHWAY)
    reasons = [c.reason for c in decision.candidates][:3]
    assert reasons == ["chosen #1: holds the title, live", "chosen #2: holds part of the title",
                       "chosen #3: not holding the title, fills on miss"]


def test_without_holders_a_site_is_in_rendezvous_order() -> None:
    for n in range(50):
        title = dataclasses.replace(ANYWHERE, id=f"title-{n}")
        decision = decide("198.51.100.7", title=title, max_pathways=3)
        assert list(decision.pathway_ids[:3]) == rendezvous_order(title.id, ["lon-1", "lon-2", "lon-3"])


def test_removing_a_box_moves_only_the_titles_it_had() -> None:
    boxes = [f"box-{i}" for i in range(8)]
    titles = [f"t{i}" for i in range(2000)]
    before = {t: rendezvous_order(t, boxes) for t in titles}
    after = {t: rendezvous_order(t, [b for b in boxes if b != "box-3"]) for t in titles}
    for t in titles:
        assert after[t] == [b for b in before[t] if b != "box-3"]  # relative order of the rest is kept
    moved = [t for t in titles if before[t][0] != after[t][0]]
    assert moved and all(before[t][0] == "box-3" for t in moved)
    share = {b: sum(before[t][0] == b for t in titles) for b in boxes}
    assert min(share.values()) > 150  # spread, not piled on one box (2000 / 8 = 250 expected)


def test_rendezvous_order_is_stable_across_calls_and_input_order() -> None:
    assert rendezvous_order("81239481", ["a", "b", "c", "d"]) == rendezvous_order("81239481", ["d", "c", "b", "a"])
    assert rendezvous_order("x", []) == []


# --- avoid until a fresh poll ----------------------------------------------------------------------------


def test_a_box_the_player_left_is_ranked_last_until_a_fresh_healthy_poll() -> None:
    first = decide("198.51.100.7").pathway_ids[0]
    stale = with_health(**{first.replace("-", "_"): {"last_healthy_poll": NOW - 5}})
    decision = decide("198.51.100.7", health=stale, avoid={first: NOW - 3}, max_pathways=10)
    assert decision.pathway_ids[-2:] == (first, ORIGIN_PATHWAY)
    reason = {c.box_id: c.reason for c in decision.candidates}[first]
    assert reason.startswith(f"chosen #{len(decision.pathways) - 1}: avoided")
    assert "player left it 3.0s ago, no healthy poll since" in reason
    fresh = with_health(**{first.replace("-", "_"): {"last_healthy_poll": NOW - 1}})
    assert decide("198.51.100.7", health=fresh, avoid={first: NOW - 3}).pathway_ids[0] == first


def test_a_poll_at_the_very_moment_the_player_left_is_not_fresh() -> None:
    first = decide("203.0.113.9").pathway_ids[0]
    health = with_health(**{first.replace("-", "_"): {"last_healthy_poll": NOW - 3}})
    assert decide("203.0.113.9", health=health, avoid={first: NOW - 3}).pathway_ids[0] != first
    never = with_health(**{first.replace("-", "_"): {"last_healthy_poll": None}})
    assert decide("203.0.113.9", health=never, avoid={first: NOW - 3}).pathway_ids[0] != first


def test_an_avoided_box_is_dropped_before_the_others_when_pathways_are_capped() -> None:
    first = decide("203.0.113.9").pathway_ids[0]
    stale = with_health(**{first.replace("-", "_"): {"last_healthy_poll": NOW - 10}})
    decision = decide("203.0.113.9", health=stale, avoid={first: NOW - 3}, max_pathways=1)
    assert first not in decision.pathway_ids
    assert {c.box_id: c.reason for c in decision.candidates}[first].startswith("avoided: player left it")


# --- slow (players' throughput, control.signals) ---------------------------------------------------------


def test_a_slow_box_stays_eligible_but_is_ranked_after_the_others() -> None:
    first = decide("198.51.100.7").pathway_ids[0]
    why = "players report slow throughput (12% of its peers')"
    decision = decide("198.51.100.7", slow={first: why}, max_pathways=10)
    assert decision.pathway_ids[-2:] == (first, ORIGIN_PATHWAY)
    assert {c.box_id: c.reason for c in decision.candidates}[first].startswith(
        f"chosen #{len(decision.pathways) - 1}: ranked after the others: {why}")
    capped = decide("198.51.100.7", slow={first: why}, max_pathways=1)
    assert first not in capped.pathway_ids
    assert {c.box_id: c.reason for c in capped.candidates}[first] == f"slow: {why}"
    assert decide("198.51.100.7", slow={}).pathway_ids == decide("198.51.100.7").pathway_ids


# --- the explain view -------------------------------------------------------------------------------------


def test_the_explain_view_lists_every_candidate_with_a_reason() -> None:
    health = with_health(lon_1={"healthy": False})
    decision = decide("198.51.100.7", health=health, max_pathways=2)
    view = decision.as_json()
    assert set(view) == {"status", "client_site", "country", "matched_by", "matched_prefix", "note", "pathways",
                         "candidates"}
    assert [p["id"] for p in view["pathways"]][-1] == ORIGIN_PATHWAY
    assert {c["box"] for c in view["candidates"]} == {"lon-1", "lon-2", "lon-3", "fra-1", "fra-2"}
    by_box = {c["box"]: c for c in view["candidates"]}
    assert by_box["lon-1"]["reason"] == "unhealthy" and by_box["lon-1"]["rank"] is None
    assert sorted(c["rank"] for c in view["candidates"] if c["rank"]) == [1, 2]
    assert all(c["reason"] for c in view["candidates"])
