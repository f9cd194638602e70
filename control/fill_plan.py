"""The nightly fill plan: which files each box should hold, on which tier, fetched from where. Pure: values in,
a FillPlan out; no I/O, no clock. Each box's part is the wire model's BoxPlan (oca/wire/fill.py), which the
fill job on the box reads from `GET /v1/fill-plans/<box>`.

Rules kept here (issue 6, "Fill plan"):
- Deterministic: the same inputs give an equal plan, whatever the order of the mappings and sequences they
  come in (everything is sorted; popularity sums run in sorted order; ties rank by title id).
- Per site, titles licensed in the site's country are ranked by the site's decayed popularity (then by the
  fleet-wide score, then by title id; titles nobody watched rank last, by id). The head is the shortest prefix
  of the ranked titles with a positive score whose scores add up to at least `head_share` of the site's total:
  head titles go on every box of the site. Every other title goes on `replication` boxes of the site, the
  first ones in `rendezvous_order(title, site boxes)` (the steering's own hashing, so a session is steered to
  the box its title was placed on) that have room for it; a box without room is passed over for the next one.
- Titles are placed whole (a title is "live" on a box only when every file is there), in rank order, head
  first; a title that does not fit what is left of a box's budget is left off that box and later, smaller
  titles may still fit (greedy first fit). A head title is therefore on every box of its site whenever the
  box's budget holds the whole head.
- Budgets: each tier's capacity times (1 - headroom), floored; failed tiers have none. Files land on the first
  tier (hot: head titles, while it has room) or the last tier (the box stores new objects there); middle
  tiers only receive demoted objects, so the plan never counts them. No tier's budget is ever exceeded.
- Sources, per file: peers (same site) that hold it, then peers planned to hold the title that rank before
  this box in the title's rendezvous order over its planned holders (the first night nobody holds anything:
  the first box fills from upstream, the next ones from it), then, per parent site nearest first, its boxes
  that hold or are planned to hold the title (else the parent's first box in rendezvous order, which pulls
  the file through once for all its children), then the origin. Boxes not in `available` are never sources.
- Every planned file is pinned (pre-positioned objects stay until the next plan) unless `pin` is off.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.model import ORIGIN_PATHWAY, Fleet, Title
from control.steering import rendezvous_order
from oca.wire.fill import (
    ORIGIN,
    PARENT,
    PEER,
    PLAN_VERSION,
    BoxPlan,
    FillSettings,
    PlannedFile,
    PlannedTitle,
    Source,
    TierUse,
)

DEFAULT_SETTINGS = FillSettings()
_PARENT_FALLBACK = 1  # boxes of a parent site asked when none of them holds or plans the title


# --- inputs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierCapacity:
    """One storage tier of a box as its /status reports it, fastest first."""

    name: str
    capacity: int  # bytes
    up: bool = True  # False for a failed tier: no budget

    def budget(self, headroom: float) -> int:
        return math.floor(self.capacity * (1.0 - headroom)) if self.up and self.capacity > 0 else 0


# --- the plan (the wire model's BoxPlan per box: oca/wire/fill.py) ---------------------------------------


@dataclass(frozen=True, slots=True)
class FillPlan:
    settings: FillSettings
    boxes: Mapping[str, BoxPlan] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION, "settings": self.settings.to_json(),
                "boxes": {box: self.boxes[box].to_json() for box in sorted(self.boxes)}}


# --- planning -------------------------------------------------------------------------------------------


def plan_fleet(fleet: Fleet, titles: Iterable[Title], popularity: Mapping[str, Mapping[str, float]],
               tiers: Mapping[str, Sequence[TierCapacity]], *, holdings: Mapping[str, Collection[str]] | None = None,
               available: Collection[str] | None = None, settings: FillSettings = DEFAULT_SETTINGS) -> FillPlan:
    """The plan of every box of the fleet.

    popularity: site -> title -> decayed score. tiers: box -> its tiers fastest first (a box missing here has
    no budget and gets an empty plan). holdings: box -> content paths it is known to hold. available: boxes
    that may be asked for files (healthy ones); None = every box.
    """
    catalog = sorted({t.id: t for t in titles}.values(), key=lambda t: t.id)
    holdings = holdings or {}
    held = {box: frozenset(keys) for box, keys in holdings.items()}
    usable = frozenset(fleet.boxes) if available is None else frozenset(available) & frozenset(fleet.boxes)
    site_boxes: dict[str, list[str]] = {}
    for box in sorted(fleet.boxes):
        site_boxes.setdefault(fleet.boxes[box].site, []).append(box)
    totals = _fleet_scores(popularity)
    placements: dict[str, _Placement] = {}
    for site_id in sorted(site_boxes):
        placements.update(_place_site(fleet, site_id, site_boxes[site_id], catalog,
                                      popularity.get(site_id, {}), totals, tiers, settings))
    holders: dict[str, list[str]] = {}  # title -> boxes planned to hold it
    for box in sorted(placements):
        for title_id in placements[box].titles:
            holders.setdefault(title_id, []).append(box)
    origin = Source(ORIGIN_PATHWAY, fleet.origin_url.rstrip("/"), ORIGIN)
    plans = {box: _box_plan(fleet, box, placements[box], holders, held, usable, site_boxes, origin, settings)
             for box in sorted(placements)}
    return FillPlan(settings, plans)


@dataclass
class _Placement:
    """One box's titles and files while a site is being placed (internal, mutable)."""

    tiers: list[TierCapacity]
    budgets: list[int]
    used: list[int]
    titles: dict[str, PlannedTitle] = field(default_factory=dict)  # in placement (rank) order
    files: list[tuple[str, str, int, str, int, bool]] = field(default_factory=list)  # key, title, size, digest,
    left_out: list[str] = field(default_factory=list)                                 # tier index, hot

    def fit(self, title: Title, hot: bool) -> list[tuple[int, bool]] | None:
        """Tier index and hot flag per file (in path order), or None when the title does not fit."""
        if not self.tiers:
            return None
        first, last = 0, len(self.tiers) - 1
        free = {first: self.budgets[first] - self.used[first], last: self.budgets[last] - self.used[last]}
        chosen = []
        for f in sorted(title.files, key=lambda f: f.path):
            for index in ((first, last) if hot else (last,)):
                if f.size <= free[index]:
                    free[index] -= f.size
                    chosen.append((index, hot and index == first))
                    break
            else:
                return None
        return chosen

    def take(self, title: Title, rank: int, score: float, head: bool, chosen: list[tuple[int, bool]]) -> None:
        self.titles[title.id] = PlannedTitle(title.id, rank, score, head, title.size)
        for f, (index, hot) in zip(sorted(title.files, key=lambda f: f.path), chosen, strict=True):
            self.used[index] += f.size
            self.files.append((f.path, title.id, f.size, f.digest, index, hot))


def _fleet_scores(popularity: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for site in sorted(popularity):
        for title in sorted(popularity[site]):
            totals[title] = totals.get(title, 0.0) + max(0.0, float(popularity[site][title]))
    return totals


def rank_titles(titles: Sequence[Title], scores: Mapping[str, float], totals: Mapping[str, float],
                country: str) -> list[tuple[Title, float]]:
    """Titles licensed in `country`, most popular at the site first (then fleet-wide, then by id)."""
    licensed = [t for t in titles if t.licensed_in(country)]
    ranked = [(t, max(0.0, float(scores.get(t.id, 0.0)))) for t in licensed]
    ranked.sort(key=lambda pair: (-pair[1], -totals.get(pair[0].id, 0.0), pair[0].id))
    return ranked


def head_count(scores: Sequence[float], share: float) -> int:
    """How many of the ranked titles (scores highest first) form the head: the shortest prefix of positive
    scores adding up to at least `share` of the total. 0 when nothing has a score or share is 0."""
    positive = [s for s in scores if s > 0]
    total = sum(positive)
    if total <= 0 or share <= 0:
        return 0
    running = 0.0
    for n, score in enumerate(positive, start=1):
        running += score
        if running >= share * total * (1 - 1e-12):
            return n
    return len(positive)


def _place_site(fleet: Fleet, site_id: str, boxes: list[str], catalog: Sequence[Title],
                scores: Mapping[str, float], totals: Mapping[str, float],
                tiers: Mapping[str, Sequence[TierCapacity]], settings: FillSettings) -> dict[str, _Placement]:
    site = fleet.sites[site_id]
    placements = {}
    for box in boxes:
        box_tiers = list(tiers.get(box, ()))
        budgets = [t.budget(settings.headroom) for t in box_tiers]
        placements[box] = _Placement(box_tiers, budgets, [0] * len(box_tiers))
    ranked = rank_titles(catalog, scores, totals, site.country)
    heads = head_count([score for _, score in ranked], settings.head_share)
    replicas = min(settings.replication, len(boxes))
    for rank, (title, score) in enumerate(ranked, start=1):
        head = rank <= heads
        placed = 0
        for box in rendezvous_order(title.id, boxes):
            if not head and placed >= replicas:
                break
            placement = placements[box]
            chosen = placement.fit(title, hot=head)
            if chosen is None:
                if head:
                    placement.left_out.append(title.id)
                continue
            placement.take(title, rank, score, head, chosen)
            placed += 1
    return placements


def _box_plan(fleet: Fleet, box: str, placement: _Placement, holders: Mapping[str, list[str]],
              held: Mapping[str, frozenset[str]], usable: frozenset[str], site_boxes: Mapping[str, list[str]],
              origin: Source, settings: FillSettings) -> BoxPlan:
    site = fleet.boxes[box].site
    chain = _parents(fleet, site)
    sources: dict[str, Source] = {origin.name: origin}
    per_title: dict[str, _TitleSources] = {}
    files = []
    for key, title_id, size, digest, index, hot in placement.files:
        candidates = per_title.get(title_id)
        if candidates is None:
            candidates = per_title[title_id] = _title_sources(fleet, box, site, chain, title_id, holders, usable,
                                                              site_boxes)
        order = candidates.order(key, held)
        for name, kind in order:
            sources.setdefault(name, Source(name, fleet.boxes[name].data_url.rstrip("/"), kind))
        files.append(PlannedFile(key, title_id, size, digest, placement.tiers[index].name, hot, settings.pin,
                                 (*(name for name, _ in order), origin.name)))
    tier_use = tuple(TierUse(tier.name, tier.capacity, placement.budgets[i], placement.used[i])
                     for i, tier in enumerate(placement.tiers))
    return BoxPlan(box, site, tier_use, tuple(placement.titles.values()), tuple(files), tuple(placement.left_out),
                   sources)


def _parents(fleet: Fleet, site_id: str) -> list[str]:
    chain: list[str] = []
    current = fleet.sites[site_id].parent
    while current is not None and current in fleet.sites and current not in chain and current != site_id:
        chain.append(current)
        current = fleet.sites[current].parent
    return chain


@dataclass(frozen=True, slots=True)
class _TitleSources:
    """The candidate sources of one title's files for one box, before per-file holdings are applied."""

    peers: tuple[str, ...]  # usable boxes of the site, in the title's rendezvous order
    before: tuple[str, ...]  # usable peers planned to hold the title that rank before this box
    parents: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # per parent site: (ranked usable, planned)

    def order(self, key: str, held: Mapping[str, frozenset[str]]) -> list[tuple[str, str]]:
        holding = [b for b in self.peers if key in held.get(b, ())]
        order = [(b, PEER) for b in holding]
        order += [(b, PEER) for b in self.before if b not in holding]
        for ranked, planned in self.parents:
            chosen = [b for b in ranked if key in held.get(b, ())]
            chosen += [b for b in planned if b not in chosen]
            order += [(b, PARENT) for b in (chosen or ranked[:_PARENT_FALLBACK])]
        return order


def _title_sources(fleet: Fleet, box: str, site: str, chain: list[str], title_id: str,
                   holders: Mapping[str, list[str]], usable: frozenset[str],
                   site_boxes: Mapping[str, list[str]]) -> _TitleSources:
    planned = frozenset(holders.get(title_id, ()))
    peers = rendezvous_order(title_id, [b for b in site_boxes[site] if b != box and b in usable])
    site_planned = rendezvous_order(title_id, [b for b in planned if fleet.boxes[b].site == site])
    before = site_planned[:site_planned.index(box)] if box in site_planned else site_planned
    parents = []
    for parent in chain:
        ranked = rendezvous_order(title_id, [b for b in site_boxes.get(parent, ()) if b in usable])
        parents.append((tuple(ranked), tuple(b for b in ranked if b in planned)))
    return _TitleSources(tuple(peers), tuple(b for b in before if b in usable), tuple(parents))
