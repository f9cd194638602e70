"""The control plane's fill routes: a box's nightly fill plan, and where each title is live.

Rules kept here:
- `GET /v1/fill-plans/<box>` (operator token or the fleet's box credential, see control/api.py) plans from the
  live state: the catalog, the popularity scores now, the tier capacities of each box's last good /status,
  what the boxes hold (titles live on a box count as all their files held) and which boxes are healthy.
  Only the box's site and its parent chain are planned (sources never come from elsewhere).
- A box the control plane has no /status from yet has no known budget: 503 naming the box, so its runner
  retries on its next run instead of filling blind. An unknown box is 404.
- Planning is CPU work: it runs in a worker thread, off the event loop that answers players.
- Titles are placed whole and every file carries a score (issue 19, "fill-aware"): the title's popularity
  spread over its files by control/fill_plan.py's PRIOR_WATCH (the control plane counts session starts per
  title, not requests per file, so the watch curve is a prior). The fill job sends the scores to the box.
- `GET /v1/fleet/titles` (operator): per title, each box's objects and bytes and whether the title is live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from aiohttp import web

from control.fill_plan import PRIOR_WATCH, TierCapacity, plan_fleet
from control.model import Fleet, Inventory, Title
from control.plane import ControlPlane
from control.play import PLANE
from oca.errors import NotFound, OcaError
from oca.wire.fill import FillSettings, PlanReply
from oca.wire.status import TierReport


class NotReady(OcaError):
    status = 503


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/fill-plans/{box}", fill_plan), web.get("/v1/fleet/titles", live_titles)]


def settings_of(plane: ControlPlane) -> FillSettings:
    fill = plane.config.fill
    return FillSettings(head_share=fill.head_share, replication=fill.replication, headroom=fill.headroom,
                        pin=fill.pin)


def tier_capacities(tiers: Iterable[TierReport]) -> list[TierCapacity]:
    """A box's /status tiers (fastest first) as TierCapacity; entries without a usable capacity are skipped."""
    return [TierCapacity(t.label, t.capacity, not t.failed) for t in tiers if t.capacity is not None and t.capacity > 0]


def held_files(titles: Mapping[str, Title], inventory: Inventory) -> dict[str, frozenset[str]]:
    """Box -> content paths known to be there: every file of each title live on the box."""
    return {box: frozenset(f.path for t in sorted(live) if t in titles for f in titles[t].files)
            for box, live in inventory.complete.items()}


def _planned_sites(fleet: Fleet, site: str) -> set[str]:
    sites: set[str] = set()
    current: str | None = site
    while current is not None and current in fleet.sites and current not in sites:
        sites.add(current)
        current = fleet.sites[current].parent
    return sites


async def fill_plan(request: web.Request) -> web.Response:
    plane: ControlPlane = request.app[PLANE]
    box_id = request.match_info["box"]
    fleet = plane.config.fleet
    if box_id not in fleet.boxes:
        raise NotFound(f"unknown box {box_id[:64]!r}")
    status = plane.poller.status(box_id)
    if status is None or not tier_capacities(status.tiers):
        raise NotReady(f"no /status with tier capacities from box {box_id!r} yet: its budget is unknown; "
                       "try again after its next health poll")
    sites = _planned_sites(fleet, fleet.boxes[box_id].site)
    boxes = {b: box for b, box in fleet.boxes.items() if box.site in sites}
    part = Fleet({s: fleet.sites[s] for s in sites}, boxes, (), fleet.origin_url)
    now, view = plane.clock(), plane.popularity_view()
    popularity = {site: {s.title: s.score for s in view.scores(now=now, site=site)} for site in sites}
    tiers = {}
    for b in boxes:
        box_status = plane.poller.status(b)
        if box_status is not None:
            tiers[b] = tier_capacities(box_status.tiers)
    titles = {t.id: t for t in plane.catalog.titles()}
    holdings = held_files(titles, plane.inventory.snapshot())
    available = [b for b, h in plane.health().items() if h.healthy and b in boxes]
    settings = settings_of(plane)
    plan = await asyncio.to_thread(plan_fleet, part, list(titles.values()), popularity, tiers, holdings=holdings,
                                   available=available, settings=settings, score_with=PRIOR_WATCH)
    reply = PlanReply(plan.boxes[box_id], plane.config.fill.window, now, settings)
    return web.json_response(reply.to_json())


async def live_titles(request: web.Request) -> web.Response:
    plane: ControlPlane = request.app[PLANE]
    inventory = plane.inventory.snapshot()
    box_ids = sorted(plane.config.fleet.boxes)
    held = {b: (plane.inventory.titles_of(b), plane.inventory.bytes_of(b)) for b in box_ids}
    titles = []
    for title in plane.catalog.titles():
        where = {}
        for b in box_ids:
            objects, sizes = held[b]
            if objects.get(title.id):
                where[b] = {"objects": objects[title.id], "bytes": sizes.get(title.id),
                            "live": inventory.live(b, title.id)}
        titles.append({"id": title.id, "files": len(title.files), "size": title.size, "boxes": where,
                       "live": [b for b in box_ids if inventory.live(b, title.id)]})
    return web.json_response({"boxes": [{"id": b, "site": plane.config.fleet.boxes[b].site} for b in box_ids],
                              "titles": titles})
