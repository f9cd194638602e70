"""Device-facing routes: a session's HLS multivariant playlist or DASH MPD, and its steering manifest.

Rules kept here (issue 4, "Manifests"; DESIGN.md, Manifests):
- `GET /v1/play/<title>/master.m3u8` and `/manifest.mpd` start a session: steer the client (its address is
  the connection's peer, or the last entry of `steering.client_ip_header` behind a load balancer), sign one
  token scoped to the title, list the chosen boxes as pathways (origin last) and point the steering URI at
  `/v1/steer/<session>`. A malformed title id is 400, an unknown title
  or a protocol the title was not packaged for 404, a title not licensed in the client's country 451.
- `GET /v1/steer/<session>` is recomputed live on every reload. It never answers 404 or 410 for a
  well-formed session id: an unknown title (or a title no longer licensed here) gets the last priority
  this replica sent, else the origin alone. Unreadable query parameters are ignored.
- Leaving: when the player's report leaves out the pathway we ranked first (`_HLS_pathway` names another;
  `_DASH_pathway`, the pathways used since the last reload, does not hold it), that box is ranked after the
  others for this session until it passes a fresh health poll (sessions.SessionMemory.reload,
  steering.steer's `avoid`). The order of a DASH list means nothing here (ETSI TS 103 998; issue 13).
- Every answer is per session: `Cache-Control: no-store`, and CORS open (players run in browsers).
"""

from __future__ import annotations

import logging

from aiohttp import web

from control.catalog.codec import check_title_id
from control.manifests import PathwayBase, parse_steering_query, steering_manifest
from control.metrics import METRICS
from control.model import Title
from control.plane import ControlPlane
from control.sessions import SessionMemory, new_session_id, parse_session_id
from control.steering import Decision
from oca.errors import BadRequest, NotFound, OcaError

steer_log = logging.getLogger("oca.control.steering")

PLANE = web.AppKey("plane", ControlPlane)
HLS_TYPE = "application/vnd.apple.mpegurl"
DASH_TYPE = "application/dash+xml"
STEERING_TYPE = "application/json"
_HEADERS = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}


class UnavailableForLegalReasons(OcaError):
    status = 451


def client_ip(request: web.Request) -> str:
    """The player's address: the peer's, or the last entry of the configured header (set by our own load
    balancer, which appends the address it saw; earlier entries are the client's word and not trusted)."""
    header = request.app[PLANE].config.steering.client_ip_header
    if header:
        value = request.headers.get(header, "")
        if value:
            return value.rsplit(",", 1)[-1].strip()
    return request.remote or ""


def _steering_uri(plane: ControlPlane, session_id: str) -> str:
    return f"{plane.config.base_url()}/v1/steer/{session_id}"


async def _start(request: web.Request) -> tuple[ControlPlane, Title, Decision, str, list[PathwayBase], str]:
    plane = request.app[PLANE]
    title = await plane.catalog.require(check_title_id(request.match_info["title"]))
    ip = client_ip(request)
    try:
        decision = plane.decide(title, ip, new_session=True)
    except ValueError as exc:
        raise BadRequest(f"client address: {exc}") from None
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.decision(decision, "dash" if request.path.endswith(".mpd") else "hls")
    if not decision.allowed:
        raise UnavailableForLegalReasons(decision.note)
    now = plane.clock()
    session_id = new_session_id(title.id, now)
    if metrics is not None:
        metrics.session_active(session_id, now)
    token = plane.token(title.id, ip)
    pathways = [PathwayBase.of(p, plane.token_for(p, token)) for p in decision.pathways]
    plane.sessions.put(session_id, SessionMemory(title.id, ip, decision.pathway_ids[0], decision.pathway_ids))
    plane.popularity.record(decision.client_site or "unlocated", title.id, now)
    return plane, title, decision, session_id, pathways, _steering_uri(plane, session_id)


async def master_playlist(request: web.Request) -> web.Response:
    plane, title, _, _, pathways, steering_uri = await _start(request)
    text = plane.catalog.hls(title).render(pathways, steering_uri)
    return web.Response(text=text, content_type=HLS_TYPE, headers=_HEADERS)


async def mpd(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    title = await plane.catalog.require(check_title_id(request.match_info["title"]))
    template = await plane.catalog.dash(title)  # 404 before a session is started for a title without DASH
    _, _, _, _, pathways, steering_uri = await _start(request)
    return web.Response(text=template.render(pathways, steering_uri), content_type=DASH_TYPE, headers=_HEADERS)


async def steering(request: web.Request) -> web.Response:
    plane = request.app[PLANE]
    session_id = request.match_info["session"]
    parsed = parse_session_id(session_id)
    if parsed is None:
        raise NotFound(f"not a session id: {session_id[:100]!r}")
    title_id, _ = parsed
    ip = client_ip(request)
    memory = plane.sessions.get(session_id)
    if memory is None:
        memory = SessionMemory(title_id, ip)
        plane.sessions.put(session_id, memory)
    report = parse_steering_query(request.query)
    title = await _title(plane, title_id)
    now = plane.clock()
    plane.player_report(report, now)  # passive signals: what players measure of each box (control.signals)
    before = memory.priority
    priority = memory.reload(report, now, plane.health(), lambda avoid: _rank(plane, title, ip, avoid))
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.session_active(session_id, now, reload=True, changed=bool(before) and before != priority)
    # one line per reload: operators see sessions move (and why) without a packet capture
    steer_log.info("steer %s client=%s reported=%s priority=%s%s", session_id, ip,
                   ",".join(report.pathways) or "-", ",".join(priority),
                   " (changed)" if before and before != priority else "")
    text = steering_manifest(priority, ttl=max(1, round(plane.config.steering.ttl)),
                             reload_uri=_steering_uri(plane, session_id))
    return web.Response(text=text, content_type=STEERING_TYPE, headers=_HEADERS)


async def _title(plane: ControlPlane, title_id: str) -> Title | None:
    try:
        return await plane.catalog.get(title_id)
    except OcaError:  # the store is unavailable: keep the session going on its last priority
        return None


def _rank(plane: ControlPlane, title: Title | None, ip: str, avoid: dict[str, float]) -> tuple[str, ...] | None:
    """The session's pathways now, or None (unknown title, unreadable address, 451): keep the last ones."""
    if title is None:
        return None
    try:
        decision = plane.decide(title, ip, avoid)
    except ValueError:
        return None
    return decision.pathway_ids if decision.allowed else None


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/play/{title}/master.m3u8", master_playlist),
        web.get("/v1/play/{title}/manifest.mpd", mpd),
        web.get("/v1/steer/{session}", steering),
    ]
