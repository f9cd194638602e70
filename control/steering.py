"""Steering: which boxes serve one player's session, in order, and why. Pure: values in, a Decision out.

`SteeringIndex.build(fleet)` precomputes everything that depends on the fleet alone (the announced-prefix and
coverage tables, each site's boxes, parent chains, a 3-d tree of site positions: control.nearest);
`steer(...)` then ranks one session in tens of microseconds. control.prefix_data builds it from the prefix
files with `build_from`. The nightly fill planner places titles with the same `rendezvous_order`, so a session
is steered to the box its title was pre-positioned on.

Rules kept here (issue 4, "Steering"):
- Locating the client: (1) the longest announced prefix holding its address -> the boxes announcing it,
  then the other boxes of their site; (2) otherwise the longest coverage prefix -> the nearest site by
  great-circle distance from the coverage entry's location (sites without boxes never win); (3) the parent
  chain of that site, nearest tier first; (4) the origin, always last. No match at all: the configured
  default site's chain if there is one, else the origin alone (`matched_by="none"`); the explain says which.
- Country: the coverage entry's, else (prefix match without coverage) the announcing box's site's. A title
  whose licence excludes the country gets status 451 and no pathways (the API answers 451); an unlocated
  client has no country, so a title with a country list gets 451 too (`Title.licensed_in(None)` is False).
- Within a tier a box is eligible when healthy, not draining and `load < overload_threshold`; a box with no
  health report yet counts as unhealthy. Eligible boxes are ordered live holders of the title, then partial
  holders, then the rest, each group in rendezvous (highest-random-weight) order of the title over the boxes.
- Avoid (issue 4, "Manifests"): `avoid` maps box id -> when the session's player reported leaving it.
  Such a box stays eligible but is ranked after every other eligible box of every tier (before the origin)
  until its `last_healthy_poll` is later than that time: dash.js returns to a box at every steering reload
  that lists it first, so a dead box must not come back first before a fresh poll has seen it healthy.
- Slow (issue 18, control.signals): `slow` maps box id -> why players find it slow. Such a box stays
  eligible but is ranked after every other eligible box (with the avoided ones, before the origin). The
  play API passes it for new sessions only, so a session is never moved by it.
- At most `max_pathways` boxes are offered, then the origin (ORIGIN_PATHWAY, fleet.origin_url).
- A malformed client address raises ValueError (the API answers 400). Nothing else here raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from control.model import ORIGIN_PATHWAY, BoxHealth, CoverageArea, Fleet, Inventory, Title
from control.nearest import SiteTree
from control.prefixes import PrefixTable, parse_address

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
DEFAULT_MAX_PATHWAYS = 4
_NEAREST_CACHE_MAX = 1 << 16

# How the client was located (Decision.matched_by).
BY_PREFIX = "prefix"
BY_COVERAGE = "coverage"
BY_DEFAULT = "default"
BY_NONE = "none"

OK = 200
UNAVAILABLE_FOR_LEGAL_REASONS = 451  # RFC 7725


# --- rendezvous hashing -------------------------------------------------------------------------------


def rendezvous_weight(title_id: str, box_id: str) -> int:
    """The title's weight on a box: a stable 64-bit hash (same on every host and Python version)."""
    return xxhash.xxh64_intdigest(f"{title_id}\x1f{box_id}".encode())


def rendezvous_order(title_id: str, box_ids: Iterable[str]) -> list[str]:
    """Boxes in highest-random-weight order for the title (ties, vanishingly rare, by box id).

    Removing a box moves only the titles that ranked it first; the fill planner uses this to place titles.
    """
    return sorted(box_ids, key=lambda box: (-rendezvous_weight(title_id, box), box))


# --- values --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pathway:
    """One pathway offered to the player: a box (its id is the pathway id) or the origin."""

    id: str
    site: str | None  # None for the origin
    data_url: str  # no trailing slash; players fetch <data_url>/t/<jwt>/titles/...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One box considered for the session, with why it was or was not offered."""

    box_id: str
    site: str
    tier: str  # "announcing", "site <id>", "parent <id>", "nearest <id>", "default <id>"
    reason: str
    rank: int | None = None  # 1-based position among the pathways, None when not offered


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200, or 451 when the title may not play in the client's country
    pathways: tuple[Pathway, ...]  # in priority order, origin last; empty when status is 451
    client_site: str | None
    country: str | None
    matched_by: str  # BY_PREFIX, BY_COVERAGE, BY_DEFAULT or BY_NONE
    matched_prefix: str | None
    candidates: tuple[Candidate, ...]
    note: str  # one line: how the client was located and the outcome

    @property
    def allowed(self) -> bool:
        return self.status == OK

    @property
    def pathway_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.pathways)

    def as_json(self) -> dict[str, Any]:
        """The explain view (`GET /v1/steering/explain`, `oca steer explain --json`)."""
        return {
            "status": self.status, "client_site": self.client_site, "country": self.country,
            "matched_by": self.matched_by, "matched_prefix": self.matched_prefix, "note": self.note,
            "pathways": [{"id": p.id, "site": p.site, "data_url": p.data_url} for p in self.pathways],
            "candidates": [{"box": c.box_id, "site": c.site, "tier": c.tier, "rank": c.rank, "reason": c.reason}
                           for c in self.candidates],
        }


# --- the index --------------------------------------------------------------------------------------------


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class SteeringIndex:
    """What one decision needs from the fleet, computed once per fleet (re)load. Read-only afterwards,
    except for a bounded memo of the nearest site per coverage location (a pure function of the fleet)."""

    __slots__ = ("_nearest", "_sites", "announced", "box_site", "chains", "coverage", "default_site", "fleet",
                 "origin", "site_boxes")

    def __init__(self, fleet: Fleet, announced: PrefixTable[tuple[str, ...]], coverage: PrefixTable[CoverageArea],
                 default_site: str | None) -> None:
        self.fleet = fleet
        self.announced = announced
        self.coverage = coverage
        self.default_site = default_site
        self.origin = Pathway(ORIGIN_PATHWAY, None, fleet.origin_url.rstrip("/"))
        self.box_site = {box.id: box.site for box in fleet.boxes.values()}
        site_boxes: dict[str, list[str]] = {}
        for box in fleet.boxes.values():
            site_boxes.setdefault(box.site, []).append(box.id)
        self.site_boxes = {site: tuple(sorted(ids)) for site, ids in site_boxes.items()}
        self.chains = {site: _chain(fleet, site) for site in fleet.sites}
        self._sites = SiteTree.build((site.id, site.latitude, site.longitude) for site in fleet.sites.values()
                                     if site.id in self.site_boxes)
        self._nearest: dict[tuple[float, float], str | None] = {}

    @classmethod
    def build(cls, fleet: Fleet, *, default_site: str | None = None) -> SteeringIndex:
        """From the boxes' own prefixes and the fleet's coverage. ValueError names a malformed or duplicated
        prefix, or an unknown default site."""
        announcers: dict[str, list[str]] = {}
        for box in fleet.boxes.values():
            for prefix in box.prefixes:
                announcers.setdefault(prefix, []).append(box.id)
        return cls.build_from(fleet, announcers, fleet.coverage, default_site=default_site)

    @classmethod
    def build_from(cls, fleet: Fleet, announcers: Mapping[str, Sequence[str]], coverage: Iterable[CoverageArea],
                   *, default_site: str | None = None) -> SteeringIndex:
        """From prefix -> announcing box ids and coverage areas (control.prefix_data reads them from files)."""
        if default_site is not None and default_site not in fleet.sites:
            raise ValueError(f"default site {default_site!r}: not a site of the fleet")
        announced = PrefixTable.build((prefix, tuple(sorted(ids))) for prefix, ids in announcers.items())
        covered = PrefixTable.build((area.prefix, area) for area in coverage)
        return cls(fleet, announced, covered, default_site)

    def nearest_site(self, latitude: float, longitude: float) -> str | None:
        """The site with boxes nearest to a point (ties by site id), or None when no site has boxes."""
        key = (latitude, longitude)
        if key in self._nearest:
            return self._nearest[key]
        best = self._sites.nearest(latitude, longitude)
        if len(self._nearest) >= _NEAREST_CACHE_MAX:
            self._nearest.clear()
        self._nearest[key] = best
        return best


def _chain(fleet: Fleet, site_id: str) -> tuple[str, ...]:
    """The site then its parents, nearest first; stops at a repeat (the config loader rejects cycles)."""
    chain: list[str] = []
    current: str | None = site_id
    while current is not None and current in fleet.sites and current not in chain:
        chain.append(current)
        current = fleet.sites[current].parent
    return tuple(chain)


# --- one decision ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientLocation:
    matched_by: str
    prefix: str | None
    site: str | None
    country: str | None
    tiers: tuple[tuple[str, tuple[str, ...]], ...]  # (tier label, box ids), nearest first
    note: str


def locate(index: SteeringIndex, client_ip: str) -> ClientLocation:
    """Where the client is and which tiers of boxes may serve it. ValueError on a malformed address."""
    ip = parse_address(client_ip)
    announced = index.announced.lookup(ip)
    covered = index.coverage.lookup(ip)
    if announced is not None:
        boxes = announced.value
        sites = list(dict.fromkeys(index.box_site[b] for b in boxes))
        country = covered.value.country if covered is not None else index.fleet.sites[sites[0]].country
        tiers: list[tuple[str, tuple[str, ...]]] = [("announcing", boxes)]
        for site in sites:
            rest = tuple(b for b in index.site_boxes.get(site, ()) if b not in boxes)
            if rest:
                tiers.append((f"site {site}", rest))
        tiers += _parent_tiers(index, sites)
        note = f"{client_ip} in announced prefix {announced.prefix} ({', '.join(boxes)}) at site {sites[0]}"
        return ClientLocation(BY_PREFIX, announced.prefix, sites[0], country, tuple(tiers), note)
    if covered is not None:
        area = covered.value
        nearest = index.nearest_site(area.latitude, area.longitude)
        if nearest is None:
            return ClientLocation(BY_COVERAGE, covered.prefix, None, area.country, (),
                                  f"{client_ip} in coverage prefix {covered.prefix}; no site has boxes")
        near = index.fleet.sites[nearest]
        km = great_circle_km(area.latitude, area.longitude, near.latitude, near.longitude)
        tiers = [(f"nearest {nearest}", index.site_boxes[nearest]), *_parent_tiers(index, [nearest])]
        note = (f"{client_ip} in coverage prefix {covered.prefix} ({area.country}); "
                f"nearest site {nearest} at {km:.0f} km")
        return ClientLocation(BY_COVERAGE, covered.prefix, nearest, area.country, tuple(tiers), note)
    default = index.default_site
    if default is not None:
        tiers = [(f"default {default}", index.site_boxes.get(default, ())), *_parent_tiers(index, [default])]
        return ClientLocation(BY_DEFAULT, None, default, None, tuple(t for t in tiers if t[1]),
                              f"{client_ip} matches no announced or coverage prefix: default site {default}, "
                              "country unknown")
    return ClientLocation(BY_NONE, None, None, None, (),
                          f"{client_ip} matches no announced or coverage prefix and no default site is set: "
                          "origin only")


def _parent_tiers(index: SteeringIndex, sites: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    seen = set(sites)
    tiers = []
    for site in sites:
        for parent in index.chains.get(site, ())[1:]:
            if parent not in seen:
                seen.add(parent)
                if index.site_boxes.get(parent):
                    tiers.append((f"parent {parent}", index.site_boxes[parent]))
    return tiers


def steer(index: SteeringIndex, health: Mapping[str, BoxHealth], inventory: Inventory, title: Title,
          client_ip: str, *, now: float, avoid: Mapping[str, float] | None = None,
          overload_threshold: float = 0.9, max_pathways: int = DEFAULT_MAX_PATHWAYS,
          slow: Mapping[str, str] | None = None) -> Decision:
    """Rank the pathways for one session of `title` from `client_ip` (see the module rules)."""
    where = locate(index, client_ip)
    if not title.licensed_in(where.country):
        note = f"{where.note}; title {title.id} is not licensed in {where.country or 'an unknown country'}"
        return Decision(UNAVAILABLE_FOR_LEGAL_REASONS, (), where.site, where.country, where.matched_by,
                        where.prefix, (), note)
    avoid = avoid or {}
    slow = slow or {}
    chosen: list[str] = []
    late: list[str] = []  # eligible but avoided or slow: after every other eligible box
    reasons: dict[str, tuple[str, str, str]] = {}  # box -> (tier, reason if chosen, reason if not offered)
    order: list[str] = []
    for tier, boxes in where.tiers:
        ranked = _rank_tier(title.id, boxes, inventory)
        for box in ranked:
            if box in reasons:
                continue
            order.append(box)
            refusal = _refusal(health.get(box), overload_threshold)
            if refusal is not None:
                reasons[box] = (tier, refusal, refusal)
                continue
            holding = _holding(inventory, box, title.id)
            left = avoid.get(box)
            last = health[box].last_healthy_poll
            if left is not None and (last is None or last <= left):
                ago = f"{now - left:.1f}s ago" if now >= left else f"at {left:.3f}"
                why = f"player left it {ago}, no healthy poll since"
                reasons[box] = (tier, f"avoided, ranked after the others: {why}; {holding}", f"avoided: {why}")
                late.append(box)
            elif box in slow:
                why = slow[box]
                reasons[box] = (tier, f"ranked after the others: {why}; {holding}", f"slow: {why}")
                late.append(box)
            else:
                reasons[box] = (tier, holding, f"not offered: max_pathways={max_pathways} reached; {holding}")
                chosen.append(box)
    offered = (chosen + late)[:max(0, max_pathways)]
    rank = {box: i + 1 for i, box in enumerate(offered)}
    candidates = []
    for box in order:
        tier, if_chosen, if_not = reasons[box]
        position = rank.get(box)
        reason = f"chosen #{position}: {if_chosen}" if position is not None else if_not
        candidates.append(Candidate(box, index.box_site[box], tier, reason, position))
    fleet_boxes = index.fleet.boxes
    pathways = (*(Pathway(b, fleet_boxes[b].site, fleet_boxes[b].data_url.rstrip("/")) for b in offered),
                index.origin)
    outcome = f"{len(offered)} box(es) then origin" if offered else "origin only"
    return Decision(OK, pathways, where.site, where.country, where.matched_by, where.prefix, tuple(candidates),
                    f"{where.note}; {outcome}")


def _refusal(health: BoxHealth | None, overload_threshold: float) -> str | None:
    """Why a box may not take new sessions, or None when it may."""
    if health is None:
        return "no health report yet"
    if not health.healthy:
        return f"unhealthy ({health.error})" if health.error else "unhealthy"
    if health.draining:
        return "draining"
    if health.load >= overload_threshold:
        return f"overloaded {health.load:.2f} ≥ {overload_threshold:.2f}"
    return None


def _holding(inventory: Inventory, box: str, title_id: str) -> str:
    if inventory.live(box, title_id):
        return "holds the title, live"
    if inventory.holds(box, title_id):
        return "holds part of the title"
    return "not holding the title, fills on miss"


def _rank_tier(title_id: str, boxes: Sequence[str], inventory: Inventory) -> list[str]:
    """Live holders, then partial holders, then the rest; rendezvous order within each group."""
    def key(box: str) -> tuple[int, int, str]:
        group = 0 if inventory.live(box, title_id) else 1 if inventory.holds(box, title_id) else 2
        return group, -rendezvous_weight(title_id, box), box
    return sorted(boxes, key=key)
