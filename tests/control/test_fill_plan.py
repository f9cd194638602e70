"""The fill plan on a small fleet: ranking, head on every box, rendezvous spread, budgets, tiers, source order."""

from __future__ import annotations

import json

import pytest

from control.fill_plan import (
    BoxPlan,
    FillSettings,
    TierCapacity,
    head_count,
    plan_fleet,
)
from control.model import Box, CatalogFile, Fleet, Site, Title
from control.steering import rendezvous_order

SITES = {
    "ix": Site("ix", 52.0, 4.0, "NL"),
    "a": Site("a", 52.1, 4.1, "NL", parent="ix"),
    "b": Site("b", 51.0, 3.0, "BE"),
}
BOX_IDS = ["a-1", "a-2", "a-3", "ix-1", "ix-2", "b-1"]
BOXES = {b: Box(b, b.split("-")[0], f"http://{b}.test:8080/", f"http://{b}.test:8081", 10**10) for b in BOX_IDS}
FLEET = Fleet(SITES, BOXES, (), "http://origin.test/")


def title(tid: str, files: int = 3, size: int = 100, countries: frozenset[str] = frozenset()) -> Title:
    return Title(tid, (), tuple(CatalogFile(f"titles/{tid}/r/f{i}", size, f"d-{tid}-{i}") for i in range(files)),
                 countries=countries)


TITLES = [title(f"t{i:02d}") for i in range(10)]
BIG = {b: [TierCapacity("ssd", 2000), TierCapacity("hdd", 100_000)] for b in BOX_IDS}
# site a: t00 and t01 are 60% of the demand (head at 0.5), the rest trail off
POPULARITY = {"a": {"t00": 40.0, "t01": 20.0, "t02": 10.0, "t03": 10.0, "t04": 10.0, "t05": 10.0},
              "ix": {"t09": 5.0}}


def plan(**kwargs: object) -> dict[str, BoxPlan]:
    args: dict[str, object] = {"holdings": None, "available": None, "settings": FillSettings()}
    args.update(kwargs)
    tiers = args.pop("tiers", BIG)
    return dict(plan_fleet(FLEET, args.pop("titles", TITLES), args.pop("popularity", POPULARITY),  # type: ignore[arg-type]
                           tiers, **args).boxes)  # type: ignore[arg-type]


def titles_of(p: BoxPlan) -> list[str]:
    return [t.id for t in p.titles]


@pytest.mark.parametrize(("scores", "share", "expected"), [
    ([30, 20, 10, 10], 0.5, 2),  # 30 < 35, 50 >= 35
    ([50, 30, 20], 0.5, 1),  # exactly half
    ([10, 10, 10, 10], 1.0, 4),
    ([10, 0, 0], 0.9, 1),  # only titles with a score form the head
    ([0, 0], 0.5, 0),
    ([5, 5], 0.0, 0),
])
def test_head_is_the_shortest_prefix_covering_the_share(scores: list[float], share: float, expected: int) -> None:
    assert head_count(scores, share) == expected


def test_head_titles_are_on_every_box_of_the_site_and_hot() -> None:
    plans = plan()
    for box in ("a-1", "a-2", "a-3"):
        assert titles_of(plans[box])[:2] == ["t00", "t01"]
        head_files = [f for f in plans[box].files if f.title in ("t00", "t01")]
        assert head_files and all(f.hot and f.tier == "ssd" and f.pin for f in head_files)
        assert all(not f.hot and f.tier == "hdd" for f in plans[box].files if f.title not in ("t00", "t01"))


def test_tail_titles_go_on_r_boxes_in_rendezvous_order() -> None:
    plans = plan()
    site = ["a-1", "a-2", "a-3"]
    for t in TITLES[2:]:
        holders = sorted(b for b in site if t.id in titles_of(plans[b]))
        assert holders == sorted(rendezvous_order(t.id, site)[:2]), t.id


def test_files_are_in_rank_order_then_path() -> None:
    p = plan()["a-1"]
    ranks = {t.id: t.rank for t in p.titles}
    keys = [(ranks[f.title], f.key) for f in p.files]
    assert keys == sorted(keys)
    assert [t.id for t in p.titles if t.head] == ["t00", "t01"]


def test_a_title_not_licensed_in_the_site_country_is_not_placed() -> None:
    nl_only = title("nl", countries=frozenset({"NL"}))
    plans = plan(titles=[*TITLES, nl_only], popularity={"b": {"nl": 100.0}, "a": {"nl": 100.0}})
    assert "nl" not in titles_of(plans["b-1"])
    assert all("nl" in titles_of(plans[b]) for b in ("a-1", "a-2", "a-3"))


def test_budgets_with_headroom_are_never_exceeded_and_bigger_titles_give_way() -> None:
    small = {b: [TierCapacity("ssd", 500), TierCapacity("hdd", 1000)] for b in BOX_IDS}
    plans = plan(tiers=small)
    for p in plans.values():
        for tier in p.tiers:
            assert tier.budget == int(tier.capacity * 0.9)
            assert tier.planned == sum(f.size for f in p.files if f.tier == tier.name) <= tier.budget
    # the ssd budget (450) holds the first head title (300) and one file of the second; the rest of the
    # second goes to the hdd (not hot): the title is still placed whole
    a1 = plans["a-1"]
    assert {f.tier for f in a1.files if f.title == "t00"} == {"ssd"}
    assert [(f.tier, f.hot) for f in a1.files if f.title == "t01"] == [("ssd", True), ("hdd", False), ("hdd", False)]
    assert a1.tiers[1].planned <= 900 and "t05" not in titles_of(a1)


def test_a_head_title_that_does_not_fit_is_left_out_and_reported() -> None:
    tiny = {b: [TierCapacity("only", 400)] for b in BOX_IDS}  # budget 360: one title of 300
    plans = plan(tiers=tiny)
    assert titles_of(plans["a-1"]) == ["t00"]
    assert plans["a-1"].left_out == ("t01",)


def test_a_failed_tier_has_no_budget_and_a_box_without_status_gets_nothing() -> None:
    tiers = dict(BIG)
    tiers["a-1"] = [TierCapacity("ssd", 2000, up=False), TierCapacity("hdd", 100_000)]
    del tiers["a-2"]
    plans = plan(tiers=tiers)
    assert all(f.tier == "hdd" and not f.hot for f in plans["a-1"].files)
    assert plans["a-2"].files == () and plans["a-2"].tiers == ()
    # with a-2 out, the tail still gets two replicas on a-1 and a-3
    for t in TITLES[2:]:
        assert t.id in titles_of(plans["a-1"]) and t.id in titles_of(plans["a-3"])


def test_first_night_the_first_box_fills_from_upstream_the_next_from_it() -> None:
    plans = plan()
    site = ["a-1", "a-2", "a-3"]
    order = rendezvous_order("t00", site)  # a head title: all three plan it
    for position, box in enumerate(order):
        f = next(f for f in plans[box].files if f.title == "t00")
        peers = [s for s in f.sources if plans[box].sources[s].kind == "peer"]
        assert peers == order[:position]
        kinds = [plans[box].sources[s].kind for s in f.sources]
        assert kinds == ["peer"] * position + ["parent"] * (len(kinds) - position - 1) + ["origin"]
        assert f.sources[-1] == "origin"


def test_holders_come_first_then_parents_planned_or_first_by_rendezvous() -> None:
    key = "titles/t00/r/f0"
    order = rendezvous_order("t00", ["a-1", "a-2", "a-3"])
    last = order[-1]
    plans = plan(holdings={last: {key}})
    first = plans[order[0]]
    f = next(f for f in first.files if f.key == key)
    assert f.sources[0] == last  # it holds the file: asked first, even by the first-ranked box
    # parents: nobody at ix plans t00 (only t09 is popular there, and both ix boxes take every title of the
    # catalog while budget lasts) -> whatever ix plans, the parent entries are ix boxes in rendezvous order
    parents = [s for s in f.sources if first.sources[s].kind == "parent"]
    assert parents and all(p.startswith("ix-") for p in parents)
    assert parents == [b for b in rendezvous_order("t00", ["ix-1", "ix-2"]) if b in parents]
    # an unavailable box is never a source
    plans = plan(holdings={last: {key}}, available=[b for b in BOX_IDS if b != last])
    f = next(f for f in plans[order[0]].files if f.key == key)
    assert last not in f.sources


def test_parent_without_plan_or_holding_gives_its_first_rendezvous_box() -> None:
    tiers = dict(BIG)
    tiers["ix-1"] = tiers["ix-2"] = []  # no budget at ix: nothing planned there
    plans = plan(tiers=tiers)
    f = plans["a-1"].files[0]
    parents = [s for s in f.sources if plans["a-1"].sources[s].kind == "parent"]
    assert parents == rendezvous_order(f.title, ["ix-1", "ix-2"])[:1]


def test_same_inputs_same_plan_and_json_round_trips() -> None:
    one = plan_fleet(FLEET, TITLES, POPULARITY, BIG)
    two = plan_fleet(FLEET, list(reversed(TITLES)), {k: dict(reversed(list(v.items())))
                                                      for k, v in reversed(list(POPULARITY.items()))}, BIG)
    assert one == two
    assert json.dumps(one.to_json(), sort_keys=True) == json.dumps(two.to_json(), sort_keys=True)
    for box, p in one.boxes.items():
        again = BoxPlan.from_json(json.loads(json.dumps(p.to_json())))
        assert again.files == p.files and again.sources == p.sources and again.tiers == p.tiers, box


@pytest.mark.parametrize("broken", [
    {}, {"version": 2}, {"version": 1, "box": "x"},
    {"version": 1, "box": "x", "site": "s", "tiers": [], "titles": [], "sources": {},
     "files": [{"key": "k", "title": "t", "size": 1, "digest": "d", "tier": "t", "hot": False, "pin": True,
                "sources": ["nowhere"]}]},
])
def test_a_malformed_plan_is_a_value_error(broken: object) -> None:
    with pytest.raises(ValueError, match="fill plan"):
        BoxPlan.from_json(broken)


def test_bad_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="head_share"):
        FillSettings(head_share=1.5)
    with pytest.raises(ValueError, match="replication"):
        FillSettings(replication=0)
    with pytest.raises(ValueError, match="headroom"):
        FillSettings(headroom=1.0)
