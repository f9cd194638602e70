"""Properties of the fill plan over random fleets, catalogs, popularity and budgets (hypothesis).

- Every plan fits each box's budgets (capacity minus headroom, per tier); a failed tier holds nothing.
- Deterministic: the same inputs twice give equal plans, and so do the same inputs shuffled.
- Every head title is on every box of its site when the box's budget holds the whole head (budgets are
  drawn both above and below the head's size); below it, a head title missing from a box is reported in
  the box's `left_out`, and is missing only because it did not fit.
- Every file lists the origin last, never the box itself, and only boxes of its site (peers) or of its
  parent chain (parents).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from control.fill_plan import FillPlan, FillSettings, TierCapacity, head_count, plan_fleet, rank_titles
from control.model import Box, CatalogFile, Fleet, Site, Title


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    n_sites = draw(st.integers(1, 4))
    sites = {}
    for i in range(n_sites):
        parent = f"s{draw(st.integers(0, i - 1))}" if i > 0 and draw(st.booleans()) else None
        sites[f"s{i}"] = Site(f"s{i}", 50.0, 4.0, draw(st.sampled_from(["NL", "BE"])), parent)
    boxes = {}
    for site in sites:
        for j in range(draw(st.integers(0, 4))):
            box = f"{site}-b{j}"
            boxes[box] = Box(box, site, f"http://{box}:8080", f"http://{box}:8081", 10**9)
    titles = []
    for t in range(draw(st.integers(0, 25))):
        sizes = draw(st.lists(st.integers(1, 5000), min_size=1, max_size=5))
        countries = draw(st.sampled_from([frozenset(), frozenset({"NL"}), frozenset({"BE", "NL"})]))
        titles.append(Title(f"t{t}", (), tuple(CatalogFile(f"titles/t{t}/r/f{k}", size, f"d{t}.{k}")
                                               for k, size in enumerate(sizes)), countries=countries))
    popularity = {site: {t.id: draw(st.floats(0, 100, allow_nan=False)) for t in titles if draw(st.booleans())}
                  for site in sites}
    settings = FillSettings(head_share=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0])),
                            replication=draw(st.integers(1, 3)), headroom=draw(st.sampled_from([0.0, 0.1, 0.25])))
    tiers = {}
    for box in boxes:
        if draw(st.integers(0, 9)) == 0:
            continue  # no /status yet: no budget
        count = draw(st.integers(1, 3))
        tiers[box] = [TierCapacity(f"tier{k}", draw(st.integers(0, 60_000)), up=draw(st.integers(0, 9)) > 0)
                      for k in range(count)]
    all_keys = [f.path for t in titles for f in t.files]
    holdings = {box: frozenset(k for k in all_keys if draw(st.integers(0, 5)) == 0) for box in boxes}
    available = [b for b in boxes if draw(st.integers(0, 5)) > 0]
    return {"fleet": Fleet(sites, boxes, (), "http://origin"), "titles": titles, "popularity": popularity,
            "tiers": tiers, "holdings": holdings, "available": available, "settings": settings}


def make(world: dict[str, Any]) -> FillPlan:
    return plan_fleet(world["fleet"], world["titles"], world["popularity"], world["tiers"],
                      holdings=world["holdings"], available=world["available"], settings=world["settings"])


def shuffled(world: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = random.Random(seed)

    def mix(mapping: dict[str, Any]) -> dict[str, Any]:
        items = list(mapping.items())
        rng.shuffle(items)
        return dict(items)

    fleet: Fleet = world["fleet"]
    titles = list(world["titles"])
    rng.shuffle(titles)
    return {**world, "fleet": Fleet(mix(dict(fleet.sites)), mix(dict(fleet.boxes)), (), fleet.origin_url),
            "titles": titles, "popularity": mix({s: mix(v) for s, v in world["popularity"].items()}),
            "tiers": mix(world["tiers"]), "holdings": mix({b: set(v) for b, v in world["holdings"].items()}),
            "available": sorted(world["available"], key=lambda _: rng.random())}


@given(worlds(), st.integers(0, 1000))
def test_plans_fit_budgets_and_are_deterministic(world: dict[str, Any], seed: int) -> None:
    plan = make(world)
    assert plan == make(world)
    assert plan == make(shuffled(world, seed))
    settings: FillSettings = world["settings"]
    for box, p in plan.boxes.items():
        tiers = world["tiers"].get(box, [])
        assert [t.name for t in p.tiers] == [t.name for t in tiers]
        for tier, use in zip(tiers, p.tiers, strict=True):
            planned = sum(f.size for f in p.files if f.tier == tier.name)
            assert use.planned == planned <= use.budget == tier.budget(settings.headroom)
            assert use.budget <= tier.capacity * (1 - settings.headroom) + 1e-6
            if not tier.up:
                assert planned == 0
        # titles whole, keys unique
        keys = [f.key for f in p.files]
        assert len(keys) == len(set(keys))
        catalog = {t.id: t for t in world["titles"]}
        for t in p.titles:
            assert sorted(f.key for f in p.files if f.title == t.id) == sorted(f.path for f in catalog[t.id].files)


@given(worlds())
def test_sources_end_with_the_origin_and_stay_in_the_site_chain(world: dict[str, Any]) -> None:
    plan = make(world)
    fleet: Fleet = world["fleet"]
    for box, p in plan.boxes.items():
        site = fleet.boxes[box].site
        chain, current = [], fleet.sites[site].parent
        while current is not None:
            chain.append(current)
            current = fleet.sites[current].parent
        for f in p.files:
            assert f.sources[-1] == "origin" and box not in f.sources
            assert len(set(f.sources)) == len(f.sources)
            for name in f.sources[:-1]:
                assert name in world["available"]
                source = p.sources[name]
                where = fleet.boxes[name].site
                assert (source.kind, where == site) in (("peer", True), ("parent", False))
                assert where == site or where in chain


@given(worlds())
def test_head_titles_are_on_every_box_of_their_site_when_the_budget_allows(world: dict[str, Any]) -> None:
    plan = make(world)
    fleet: Fleet = world["fleet"]
    settings: FillSettings = world["settings"]
    totals: dict[str, float] = {}
    for scores in world["popularity"].values():
        for t, s in scores.items():
            totals[t] = totals.get(t, 0.0) + s
    for site_id, site in fleet.sites.items():
        ranked = rank_titles(world["titles"], world["popularity"].get(site_id, {}), totals, site.country)
        head = [t for t, _ in ranked[:head_count([s for _, s in ranked], settings.head_share)]]
        head_files = sorted((f for t in head for f in t.files), key=lambda f: f.size)
        for box, b in fleet.boxes.items():
            if b.site != site_id:
                continue
            p = plan.boxes[box]
            placed = {t.id for t in p.titles}
            tiers = world["tiers"].get(box, [])
            budgets = [t.budget(settings.headroom) for t in tiers]
            last_budget = budgets[-1] if budgets else 0
            if sum(f.size for f in head_files) <= last_budget:
                assert all(t.id in placed for t in head), (box, [t.id for t in head], placed)
            for t in head:
                assert (t.id in placed) != (t.id in p.left_out)
