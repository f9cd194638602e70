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
- Per-file prediction (issue 19, "fill-aware"), when a WatchModel is given: each file's score is its title's
  popularity times the share of the title's requests that file is expected to get (its rendition's share of
  requests times the watch-depth curve at its position, normalised over the rendition's positions; the curve
  is the title's own, shrunk toward every title's by how many starts the title had: learn_watch). Files,
  not titles, are then placed in score order (ties by key), each on the same boxes its title would go to
  (head: every box of the site, hot; else the title's first `replication` boxes in rendezvous order with room
  for the file), and each planned file carries its score. A title is then usually partly placed: the
  minutes viewers watch most of many titles beat every minute of a few (most viewers never reach the end).
  Without a WatchModel, titles are placed whole as above and files carry no score.
- `score_with` (a WatchModel, e.g. PRIOR_WATCH): titles are placed whole as above (so a title can be live on
  a box and steering can prefer it) and every planned file still carries file_scores' prediction, which the
  box's eviction uses (oca/storage/planned.py). The control plane's API plans so: it knows each title's
  popularity from session starts but not yet per-file requests, so its watch curve is the prior below.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from control.model import ORIGIN_PATHWAY, CatalogFile, Fleet, Title
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


# --- per-file prediction ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchModel:
    """How a title's requests spread over its files, learned from a day's requests (learn_watch).

    depth[p]: of the sessions of a rendition that has a file at position p (its files in path order), the
    share of requests at p relative to position 0 (depth[0] = 1; viewers quit, so it falls). renditions:
    rendition id -> its share of all requests. titles: title id -> the same curve for that title alone, its
    own requests shrunk toward `depth` by how many starts it had (learn_watch); a title not there uses
    `depth`."""

    depth: tuple[float, ...]
    renditions: Mapping[str, float]
    titles: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def at(self, position: int, title: str = "") -> float:
        depth = self.titles.get(title, self.depth)
        if not depth:
            return 1.0
        return depth[min(position, len(depth) - 1)]


def prior_watch(half_life: int = 300, positions: int = 3000) -> WatchModel:
    """A watch curve before any per-file requests are known: viewers leave at a constant rate, half of them
    gone by position `half_life` (300: 20 minutes of 4 s segments), renditions shared equally. Only the shape
    matters for eviction order within and across titles (scores scale with the title's popularity)."""
    return WatchModel(tuple(0.5 ** (p / half_life) for p in range(positions)), {})


PRIOR_WATCH = prior_watch()


def _rendition_files(title: Title) -> dict[str, list[tuple[str, int]]]:
    """Rendition id -> its files' (path, size) in path order (the position of a segment); keys are
    titles/<title>/<rendition>/<file>, so the rendition is the third path part ("" when there is none)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for f in sorted(title.files, key=lambda f: f.path):
        parts = f.path.split("/")
        out.setdefault(parts[2] if len(parts) > 3 else "", []).append((f.path, f.size))
    return out


# Starts (requests at position 0) that weigh as much as the pooled curve in a title's own curve: a title with
# as many starts as this is predicted half from its own day, half from every title's. Requests of one session
# are consecutive positions, so a title's evidence is its sessions, not its requests: with a few starts which
# minutes were read is chance (the pooled curve knows better); with thousands, the title's own curve is its
# shape (episodes watched to the credits, a film abandoned at the same scene).
PRIOR_STARTS = 50.0  # 10 measured 0.1-0.2 points lower on the replay's two sparsest traces (README)


def _depth(at: Mapping[int, int], first_by_length: Mapping[int, int]) -> list[float]:
    """depth[p] = requests at p / requests at position 0 of the renditions that have a position p (so short
    renditions do not pull the tail down), scaled so depth[0] = 1."""
    longest = max(first_by_length, default=0)
    depth = []
    base = sum(first_by_length.values())
    for p in range(longest):
        base -= first_by_length.get(p, 0)  # renditions of length p have no position p
        depth.append(at.get(p, 0) / base if base > 0 else 0.0)
    if depth and depth[0] > 0:
        depth = [d / depth[0] for d in depth]
    return depth


def learn_watch(titles: Iterable[Title], requests: Mapping[str, int],
                prior_starts: float = PRIOR_STARTS) -> WatchModel:
    """The watch model of a day: `requests` is content path -> requests that day (unknown paths ignored).

    The pooled curve (`depth`) is _depth over every title's renditions. Each title with requests at position 0
    also gets its own curve: _depth over its renditions, blended with the pooled one as
    w * own + (1 - w) * pooled, w = starts / (starts + prior_starts) (a shrinkage estimate: the more sessions
    a title had, the more its own day says how far its viewers get)."""
    at: dict[int, int] = {}  # position -> requests there
    first_by_length: dict[int, int] = {}  # rendition length -> requests at its position 0
    per_rendition: dict[str, int] = {}
    own: dict[str, tuple[dict[int, int], dict[int, int]]] = {}  # title -> its (at, first_by_length)
    total = 0
    for title in sorted(titles, key=lambda t: t.id):
        title_at: dict[int, int] = {}
        title_first: dict[int, int] = {}
        for rendition, files in sorted(_rendition_files(title).items()):
            counts = [max(0, int(requests.get(path, 0))) for path, _ in files]
            for p, n in enumerate(counts):
                if n:
                    at[p] = at.get(p, 0) + n
                    title_at[p] = title_at.get(p, 0) + n
            first_by_length[len(files)] = first_by_length.get(len(files), 0) + counts[0]
            title_first[len(files)] = title_first.get(len(files), 0) + counts[0]
            per_rendition[rendition] = per_rendition.get(rendition, 0) + sum(counts)
            total += sum(counts)
        if sum(title_first.values()) > 0:
            own[title.id] = (title_at, title_first)
    depth = _depth(at, first_by_length)
    per_title = {}
    for title_id, (title_at, title_first) in own.items():
        starts = sum(title_first.values())
        weight = starts / (starts + prior_starts) if prior_starts > 0 else 1.0
        mine = _depth(title_at, title_first)
        pooled = depth[:len(mine)] + [depth[-1] if depth else 1.0] * (len(mine) - len(depth))
        per_title[title_id] = tuple(weight * m + (1.0 - weight) * d for m, d in zip(mine, pooled, strict=True))
    shares = {r: n / total for r, n in sorted(per_rendition.items())} if total else {}
    return WatchModel(tuple(depth), shares, per_title)


def file_scores(title: Title, popularity: float, watch: WatchModel) -> dict[str, float]:
    """Content path -> expected requests: popularity x rendition share x depth at the file's position,
    normalised over the rendition's positions (a title's scores add up to its popularity times the share of
    its renditions). A rendition the model never saw gets an equal share of what the seen ones leave."""
    renditions = _rendition_files(title)
    unseen = [r for r in renditions if r not in watch.renditions]
    left = max(0.0, 1.0 - sum(watch.renditions.values()))
    scores = {}
    for rendition, files in sorted(renditions.items()):
        share = watch.renditions.get(rendition, left / len(unseen) if unseen else 0.0)
        weights = [watch.at(p, title.id) for p in range(len(files))]
        norm = sum(weights)
        for (path, _), w in zip(files, weights, strict=True):
            scores[path] = popularity * share * w / norm if norm > 0 else 0.0
    return scores


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
               available: Collection[str] | None = None, settings: FillSettings = DEFAULT_SETTINGS,
               watch: WatchModel | None = None, score_with: WatchModel | None = None) -> FillPlan:
    """The plan of every box of the fleet.

    popularity: site -> title -> decayed score. tiers: box -> its tiers fastest first (a box missing here has
    no budget and gets an empty plan). holdings: box -> content paths it is known to hold. available: boxes
    that may be asked for files (healthy ones); None = every box. watch: place files by predicted requests
    (learn_watch) instead of whole titles. score_with: place whole titles, each file scored by this model.
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
        place = (partial(_place_site, score_with=score_with) if watch is None
                 else partial(_place_site_files, watch=watch))
        placements.update(place(fleet, site_id, site_boxes[site_id], catalog, popularity.get(site_id, {}),
                                totals, tiers, settings))
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
    # key, title, size, digest, tier index, hot, score (None when titles are placed whole)
    files: list[tuple[str, str, int, str, int, bool, float | None]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

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

    def take(self, title: Title, rank: int, score: float, head: bool, chosen: list[tuple[int, bool]],
             file_score: Mapping[str, float] | None = None) -> None:
        self.titles[title.id] = PlannedTitle(title.id, rank, score, head, title.size)
        for f, (index, hot) in zip(sorted(title.files, key=lambda f: f.path), chosen, strict=True):
            self.used[index] += f.size
            self.files.append((f.path, title.id, f.size, f.digest, index, hot,
                               None if file_score is None else file_score.get(f.path, 0.0)))

    def fit_file(self, size: int, hot: bool) -> tuple[int, bool] | None:
        """Tier index and hot flag of one file, or None when it does not fit (hot: first tier, else last)."""
        if not self.tiers:
            return None
        first, last = 0, len(self.tiers) - 1
        for index in ((first, last) if hot else (last,)):
            if size <= self.budgets[index] - self.used[index]:
                return index, hot and index == first
        return None

    def take_file(self, title: Title, rank: int, score: float, head: bool, f: CatalogFile, file_score: float,
                  chosen: tuple[int, bool]) -> None:
        if title.id not in self.titles:
            self.titles[title.id] = PlannedTitle(title.id, rank, score, head, title.size)
        index, hot = chosen
        self.used[index] += f.size
        self.files.append((f.path, title.id, f.size, f.digest, index, hot, file_score))


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
                tiers: Mapping[str, Sequence[TierCapacity]], settings: FillSettings, *,
                score_with: WatchModel | None = None) -> dict[str, _Placement]:
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
        per_file = None if score_with is None else file_scores(title, score, score_with)
        for box in rendezvous_order(title.id, boxes):
            if not head and placed >= replicas:
                break
            placement = placements[box]
            chosen = placement.fit(title, hot=head)
            if chosen is None:
                if head:
                    placement.left_out.append(title.id)
                continue
            placement.take(title, rank, score, head, chosen, per_file)
            placed += 1
    return placements


def _place_site_files(fleet: Fleet, site_id: str, boxes: list[str], catalog: Sequence[Title],
                      scores: Mapping[str, float], totals: Mapping[str, float],
                      tiers: Mapping[str, Sequence[TierCapacity]], settings: FillSettings, *,
                      watch: WatchModel) -> dict[str, _Placement]:
    """_place_site, file by file in predicted-requests order (the module's "per-file prediction" rule)."""
    site = fleet.sites[site_id]
    placements = {}
    for box in boxes:
        box_tiers = list(tiers.get(box, ()))
        placements[box] = _Placement(box_tiers, [t.budget(settings.headroom) for t in box_tiers], [0] * len(box_tiers))
    ranked = rank_titles(catalog, scores, totals, site.country)
    heads = head_count([score for _, score in ranked], settings.head_share)
    replicas = min(settings.replication, len(boxes))
    candidates = []  # (-file score, key, title rank): the order files are placed in
    by_rank: dict[int, tuple[Title, float, dict[str, CatalogFile]]] = {}
    for rank, (title, score) in enumerate(ranked, start=1):
        if score <= 0:
            continue  # nobody watched it: no prediction to place it by
        by_rank[rank] = (title, score, {f.path: f for f in title.files})
        candidates += [(-s, path, rank) for path, s in file_scores(title, score, watch).items() if s > 0]
    candidates.sort()
    order = {rank: rendezvous_order(by_rank[rank][0].id, boxes) for rank in by_rank}
    for negative, path, rank in candidates:
        title, score, files = by_rank[rank]
        head = rank <= heads
        placed = 0
        for box in order[rank]:
            if not head and placed >= replicas:
                break
            chosen = placements[box].fit_file(files[path].size, head)
            if chosen is None:
                continue
            placements[box].take_file(title, rank, score, head, files[path], -negative, chosen)
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
    for key, title_id, size, digest, index, hot, score in placement.files:
        candidates = per_title.get(title_id)
        if candidates is None:
            candidates = per_title[title_id] = _title_sources(fleet, box, site, chain, title_id, holders, usable,
                                                              site_boxes)
        order = candidates.order(key, held)
        for name, kind in order:
            sources.setdefault(name, Source(name, fleet.boxes[name].data_url.rstrip("/"), kind))
        files.append(PlannedFile(key, title_id, size, digest, placement.tiers[index].name, hot, settings.pin,
                                 (*(name for name, _ in order), origin.name), score))
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
