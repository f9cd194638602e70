"""The control plane's HTTP API (aiohttp): operator routes, the boxes' invalidation pull, and the app itself.

Rules kept here:
- Operator routes need `Authorization: Bearer <operator token>`, compared in constant time; the boxes'
  pull (`GET /v1/invalidations`) takes the box credential or the operator token. The read-only token
  (auth.read_token_file) is taken on every GET (status, metrics, fleet, invalidations, audit, popularity,
  catalog, roll-outs, ...) and is a 403 on every route that writes (oca.httpapi.scoped_auth). With no token configured
  the routes are open (loopback labs only; the service logs a warning at start).
- Every error is JSON {"error": "..."} with the status its OcaError carries; bad input of any kind (query,
  path, body) is a 4xx naming what was wrong. An unexpected exception is logged and answered 500 JSON.
- The operator is named by the `X-OCA-Operator` header (the CLI sends user@host), for the audit trail.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from control.catalog import ingest_source, title_from_json, title_to_json
from control.catalog.codec import check_countries, check_title_id
from control.fill_api import routes as fill_routes
from control.lab_page import lab_page_routes
from control.metrics import METRICS, ControlMetrics
from control.plane import ControlPlane
from control.play import PLANE
from control.play import routes as play_routes
from control.rollout.api import routes as rollout_routes
from control.store import Invalidation
from oca import __version__
from oca.errors import BadRequest, NotFound, OcaError
from oca.httpapi import json_body, operator_of, parse_count, scoped_auth
from oca.wire.invalidation import InvalidationBatch

log = logging.getLogger("oca.control.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = ("/healthz", "/v1/play/", "/v1/steer/")
MAX_WAIT = 300.0


def build_app(plane: ControlPlane) -> web.Application:
    open_paths = OPEN_PATHS if plane.config.lab is None else (*OPEN_PATHS, "/lab")

    @web.middleware
    async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not request.path.startswith(open_paths):
                box_may = request.method == "GET" and (request.path == "/v1/invalidations"
                                                       or request.path.startswith("/v1/fill-plans/"))
                tokens = (plane.operator_token, plane.box_token) if box_may else (plane.operator_token,)
                scoped_auth(request, tokens, plane.read_token if plane.operator_token is not None else None)
            return await handler(request)
        except OcaError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status,
                                     headers={"Access-Control-Allow-Origin": "*"})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"error": exc.reason}, status=exc.status)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": "internal error (logged)"}, status=500)

    metrics = ControlMetrics(plane)
    plane.invalidator.on_applied = metrics.invalidation_applied
    app = web.Application(middlewares=[metrics.middleware, errors_and_auth], client_max_size=64 << 20)
    app[PLANE] = plane
    app[METRICS] = metrics
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/metrics", metrics.handle),  # operator token (control/metrics.py says why)
        *play_routes(),
        *fill_routes(),
        *rollout_routes(),
        web.get("/v1/status", status),
        web.get("/v1/fleet", fleet),
        web.post("/v1/fleet/{box}/drain", drain),
        web.post("/v1/fleet/{box}/undrain", undrain),
        web.post("/v1/invalidations", post_invalidation),
        web.get("/v1/invalidations", list_invalidations),
        web.get("/v1/invalidations/{seq}", get_invalidation),
        web.get("/v1/steering/explain", explain),
        web.get("/v1/popularity", popularity),
        web.get("/v1/catalog", catalog),
        web.get("/v1/catalog/{title}", catalog_title),
        web.post("/v1/catalog/{title}", post_catalog),
        web.get("/v1/audit", audit),
    ])
    if plane.config.lab is not None:
        app.add_routes(lab_page_routes(plane.config.lab))
    return app


# -- helpers ---------------------------------------------------------------------------------------------


def _plane(request: web.Request) -> ControlPlane:
    return request.app[PLANE]


def _int_query(request: web.Request, name: str, default: int, low: int = 0, high: int = 1 << 62) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return parse_count(raw, name, low, min(high, 10**18 - 1))


def _since_query(raw: str | None) -> float | None:
    """`since`: epoch seconds (the audit entries at or after it), finite and not negative."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"since must be epoch seconds, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0 or value > 1e11:
        raise BadRequest(f"since must be epoch seconds, got {raw[:40]!r}")
    return value


def _wait_seconds(raw: object) -> float:
    if raw is None or raw is False:
        return 0.0
    if isinstance(raw, str):
        text = raw
        try:
            raw = float(text)
        except ValueError:
            raise BadRequest(f"wait must be a number of seconds, got {text[:40]!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw < 0:
        raise BadRequest(f"wait must be a number of seconds, got {raw!r}")
    return min(float(raw), MAX_WAIT)


# -- routes ----------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def status(request: web.Request) -> web.Response:
    """This replica: its id, whether it leads roll-outs, and whether its state store answers (while it does
    not, playlists, MPDs and steering go on from memory and writes answer 503)."""
    plane = _plane(request)
    follower = plane.follower
    return web.json_response({
        "version": __version__, "replica": plane.config.replica_id(), "leader": plane.rollouts.leader,
        "state": {"backend": "postgresql" if plane.config.state.url else "sqlite", "ok": follower.error is None,
                  "error": follower.error, "refreshed": follower.refreshed},
        "last_invalidation_seq": plane.invalidator.last_seq,
        "health": {"interval": plane.poller.interval, "rounds": plane.poller.rounds,
                   "last_round_seconds": plane.poller.last_round,
                   "recent_rounds_seconds": [round(r, 4) for r in plane.poller.recent_rounds],
                   "unpolled_boxes": plane.poller.unpolled, "polls": plane.poller.polls,
                   "failed_polls": plane.poller.failed_polls,
                   "skipped_polls": plane.poller.skipped, "inventories_pending": plane.inventory.pending},
        "prefixes": plane.prefixes.as_json()})


async def fleet(request: web.Request) -> web.Response:
    plane = _plane(request)
    health = plane.health()
    boxes = []
    for box in plane.config.fleet.boxes.values():
        h = health[box.id]
        status = plane.poller.status(box.id)
        polls, failed_polls = plane.poller.poll_counts(box.id)
        boxes.append({
            "id": box.id, "site": box.site, "data_url": box.data_url, "admin_url": box.admin_url,
            "healthy": h.healthy, "draining": h.draining, "drained_by_operator": box.id in plane.poller.drained,
            "load": round(h.load, 4), "egress_capacity": box.egress_capacity, "version": h.version,
            "failed_tiers": list(h.failed_tiers), "error": h.error, "last_healthy_poll": h.last_healthy_poll,
            "last_poll": plane.poller.last_poll(box.id), "polls": polls, "failed_polls": failed_polls,
            "tiers": [{"name": t.name, "state": t.state, "capacity": t.capacity, "used": t.used} for t in status.tiers]
            if status else [],
            "connections": status.connections if status else None,
            "egress_bps": status.egress_bps if status else None, "bytes_out": status.bytes_out if status else None,
            "hit_bytes": status.hit_bytes if status else None, "miss_bytes": status.miss_bytes if status else None,
            "invalidation_seq": plane.invalidator.applied.get(box.id, 0),
            "titles": len(plane.inventory.titles_of(box.id)),
        })
    return web.json_response({"version": __version__, "last_invalidation_seq": plane.invalidator.last_seq,
                              "boxes": boxes})


async def _set_drain(request: web.Request, drained: bool) -> web.Response:
    plane = _plane(request)
    box = request.match_info["box"]
    await plane.set_drained(box, drained, operator_of(request))
    return web.json_response({"box": box, "drained": drained})


async def drain(request: web.Request) -> web.Response:
    return await _set_drain(request, True)


async def undrain(request: web.Request) -> web.Response:
    return await _set_drain(request, False)


async def post_invalidation(request: web.Request) -> web.Response:
    plane = _plane(request)
    body = await json_body(request)
    soft, reason, client_id = body.get("soft", False), body.get("reason", ""), body.get("id")
    if not isinstance(soft, bool):
        raise BadRequest(f"soft must be true or false, got {soft!r}")
    if not isinstance(reason, str) or len(reason) > 1000:
        raise BadRequest("reason must be a string of at most 1000 characters")
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= 200):
        raise BadRequest(f"id must be a string of 1 to 200 characters, got {client_id!r}")
    wait = _wait_seconds(body.get("wait"))
    entry, created = await plane.invalidator.submit(body.get("scope"), body.get("value"), soft=soft, reason=reason,
                                                    operator=str(body.get("operator") or operator_of(request)),
                                                    client_id=client_id)
    view = await _progress(plane, entry, wait)
    answer = {**view, "created": created}
    if entry.scope == "title" and await plane.catalog.get(entry.value) is None:  # appended all the same
        answer["warning"] = f"title {entry.value!r} is not in the catalog: the boxes may hold nothing under it"
    return web.json_response(answer, status=201 if created else 200)


async def _progress(plane: ControlPlane, entry: Invalidation, wait: float) -> dict[str, Any]:
    if wait > 0:
        return await plane.invalidator.wait(entry, wait)
    return plane.invalidator.progress(entry)


async def list_invalidations(request: web.Request) -> web.Response:
    plane = _plane(request)
    since = _int_query(request, "since", 0)
    limit = _int_query(request, "limit", 1000, 1, 10000)
    entries = await plane.invalidator.since(since, limit)
    return web.json_response(InvalidationBatch(tuple(entries), plane.invalidator.last_seq).to_json())


async def get_invalidation(request: web.Request) -> web.Response:
    plane = _plane(request)
    raw = request.match_info["seq"]
    entry = await plane.invalidator.get(parse_count(raw, "seq"))
    return web.json_response(await _progress(plane, entry, _wait_seconds(request.query.get("wait"))))


async def explain(request: web.Request) -> web.Response:
    plane = _plane(request)
    ip, title_id = request.query.get("ip", ""), request.query.get("title", "")
    if not ip:
        raise BadRequest("ip is required")
    title = await plane.catalog.require(check_title_id(title_id))
    try:
        decision = plane.decide(title, ip, new_session=True)  # what a session starting now is given
    except ValueError as exc:
        raise BadRequest(f"ip: {exc}") from None
    return web.json_response({"title": title.id, "ip": ip, **decision.as_json()})


async def popularity(request: web.Request) -> web.Response:
    plane = _plane(request)
    site = request.query.get("site") or None
    if site is not None and site not in plane.config.fleet.sites and site != "unlocated":
        raise NotFound(f"unknown site {site[:64]!r}")
    limit = _int_query(request, "limit", 100, 1, 100_000)
    now, view = plane.clock(), plane.popularity_view()
    scores = view.scores(now=now, site=site, limit=limit)
    return web.json_response({"time": now, "half_life": view.half_life, "site": site, "sites": view.sites(),
                              "titles": [{"title": s.title, "score": round(s.score, 6)} for s in scores]})


async def catalog(request: web.Request) -> web.Response:
    titles = _plane(request).catalog.titles()
    return web.json_response({"titles": [{
        "id": t.id, "renditions": len(t.renditions), "files": len(t.files), "size": t.size,
        "countries": sorted(t.countries), "hls": t.hls_master is not None, "dash": t.dash_manifest is not None,
        "ingested_at": t.ingested_at} for t in titles]})


async def catalog_title(request: web.Request) -> web.Response:
    title = await _plane(request).catalog.require(check_title_id(request.match_info["title"]))
    return web.json_response(title_to_json(title))


async def post_catalog(request: web.Request) -> web.Response:
    """Body {"title": <record>, "mpd": <MPD text or null>} (the CLI ingests locally), or {"source": URL,
    "countries": [...]} (the control plane fetches the package from the origin)."""
    plane = _plane(request)
    title_id = check_title_id(request.match_info["title"])
    body = await json_body(request)
    if "source" in body:
        source = body["source"]
        if not isinstance(source, str) or not source.startswith(("http://", "https://")):
            raise BadRequest(f"source must be an http(s) URL, got {str(source)[:200]!r}")
        countries = body.get("countries")
        ingested = await ingest_source(source, title_id, session=plane.http, now=plane.clock(),
                                       countries=None if countries is None else check_countries(countries))
        title, mpd_text = ingested.title, ingested.mpd
    else:
        title = title_from_json(body.get("title"))
        mpd_text = body.get("mpd")
        if mpd_text is not None and not isinstance(mpd_text, str):
            raise BadRequest("mpd must be the MPD text or null")
        if title.id != title_id:
            raise BadRequest(f"title id in the body ({title.id!r}) is not the one in the path ({title_id!r})")
        if (mpd_text is None) != (title.dash_manifest is None):
            raise BadRequest("mpd text is required exactly when the title has a dash_manifest")
    await plane.catalog.put(title, mpd_text)
    await plane.blocking(lambda: plane.store.add_audit(
        time=plane.clock(), operator=operator_of(request), action="catalog", subject=title.id,
        detail={"files": len(title.files), "size": title.size, "countries": sorted(title.countries)}))
    return web.json_response(title_to_json(title), status=201)


async def audit(request: web.Request) -> web.Response:
    plane = _plane(request)
    limit = _int_query(request, "limit", 100, 1, 10000)
    filters: dict[str, str] = {}
    for name in ("action", "subject", "operator"):
        value = request.query.get(name)
        if value:
            if len(value) > 256:
                raise BadRequest(f"{name} must be at most 256 characters")
            filters[name] = value
    since = _since_query(request.query.get("since"))
    entries = await plane.blocking(lambda: plane.store.audit(limit, since=since, **filters))
    return web.json_response({"entries": [e.json() for e in entries]})
