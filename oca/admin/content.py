"""Admin routes for content: purge, prefetch, per-title inventory and control-plane invalidations.

Rules kept here:
- Bodies are JSON objects; every wrong field is a 400 naming it; nothing here is reachable without the
  admin token (the app's middleware).
- Purge scopes: key, prefix or title; `soft` marks objects stale (revalidated upstream with If-None-Match
  on their next request), otherwise they are deleted.
- Prefetch answers 202 with a job id at once; `GET /prefetch/<id>` shows its progress.
- Fill scores (`PUT /cache/fill-scores`, the fill job's FillScores) replace the previous plan's on every tier
  (Store.set_fill_scores).
- A fill plan names every file of a box, and `oca fill run` sends every missing one in one prefetch job, so
  these two bodies may be far past the admin API's 1 MiB (~300 bytes a prefetch item: 1 MiB is ~3,500
  files, a small night): they are read here up to MAX_PLAN_BODY (413 past it) and decoded off the event
  loop.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from oca.admin.common import context_of
from oca.errors import BadRequest, NotFound, OcaError
from oca.httpapi import bounded_body, json_body, json_object, parse_count
from oca.keys import is_valid_key
from oca.storage import Store
from oca.wire.fill import FillScores
from oca.wire.invalidation import SCOPES, Applied, InvalidationBatch
from oca.wire.prefetch import PrefetchRequest


def _routes() -> list[web.RouteDef]:
    return [
        web.post("/purge", purge),
        web.post("/prefetch", prefetch),
        web.get("/prefetch", prefetch_list),
        web.get("/prefetch/{job}", prefetch_progress),
        web.delete("/prefetch/{job}", prefetch_cancel),
        web.post("/invalidations", invalidations),
        web.get("/inventory/titles", titles),
        web.get("/cache/why/{key:.+}", why),
        web.put("/cache/fill-scores", fill_scores),
    ]


MAX_PLAN_BODY = 256 << 20  # ~3 million scored files, ~800,000 prefetch items: past any box's plan


class PlanTooLarge(OcaError):
    status = 413


async def _plan_body(request: web.Request, what: str) -> bytes:
    """The body of a request that carries a whole fill plan's files, up to MAX_PLAN_BODY."""
    return await bounded_body(request, limit=MAX_PLAN_BODY,
                              too_big=PlanTooLarge(f"{what} larger than {MAX_PLAN_BODY} bytes"))


async def purge(request: web.Request) -> web.Response:
    body = await json_body(request)
    scope, value, soft = body.get("scope"), body.get("value"), body.get("soft", False)
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not isinstance(value, str) or not value:
        raise BadRequest("value must be a non-empty string")
    if scope == "key" and not is_valid_key(value):
        raise BadRequest(f"not a valid content key: {value!r}")
    if scope == "title" and ("/" in value or not is_valid_key(value)):
        raise BadRequest(f"not a valid title id: {value!r}")
    if not isinstance(soft, bool):
        raise BadRequest(f"soft must be true or false, got {soft!r}")
    count = await context_of(request).fills.purge(str(scope), value, soft)
    return web.json_response({"scope": scope, "value": value, "soft": soft, "objects": count})


async def why(request: web.Request) -> web.Response:
    """The history of one key (`oca cache why`): held now or not, and what happened to it (oca.fetch.history)."""
    key = request.match_info["key"]
    if not is_valid_key(key):
        raise BadRequest(f"not a valid content key: {key!r}")
    context = context_of(request)
    info = await context.store.call(Store.get, key)
    story = context.fills.explain(key, info is not None)
    if story["sliced"] is not None:
        story["sliced"]["slices_held"] = len(await context.store.call(Store.list, f"{key}@slice"))
    held = None if info is None else {"tier": info.tier, "size": info.size, "stored_at": info.stored_at,
                                      "pinned": info.pinned,
                                      "fill_score": await context.store.call(Store.fill_score, key)}
    return web.json_response({"key": key, "held": held, **story})


async def prefetch(request: web.Request) -> web.Response:
    job_request = await asyncio.to_thread(_decode_prefetch, await _plan_body(request, "prefetch request"))
    job = context_of(request).prefetch.submit(list(job_request.items), job_request.priority, job_request.rate)
    return web.json_response(job.progress().to_json(), status=202)


async def prefetch_list(request: web.Request) -> web.Response:
    jobs = context_of(request).prefetch.jobs.values()
    return web.json_response({"jobs": [job.progress().to_json() for job in jobs]})


def _job_id(request: web.Request) -> int:
    return parse_count(request.match_info["job"], "job id")


async def prefetch_progress(request: web.Request) -> web.Response:
    job = context_of(request).prefetch.jobs.get(_job_id(request))
    if job is None:
        raise NotFound(f"no prefetch job {request.match_info['job']}")
    return web.json_response(job.progress().to_json())


async def prefetch_cancel(request: web.Request) -> web.Response:
    job = context_of(request).prefetch.cancel(_job_id(request))
    if job is None:
        raise NotFound(f"no prefetch job {request.match_info['job']}")
    return web.json_response(job.progress().to_json())


async def fill_scores(request: web.Request) -> web.Response:
    scores = await asyncio.to_thread(_decode_scores, await _plan_body(request, "fill scores"))
    await context_of(request).store.call(Store.set_fill_scores, scores.scores)
    return web.json_response({"files": len(scores.scores)})


def _decode_scores(body: bytes) -> FillScores:
    return FillScores.from_json(json_object(body))


def _decode_prefetch(body: bytes) -> PrefetchRequest:
    return PrefetchRequest.from_json(json_object(body))


async def invalidations(request: web.Request) -> web.Response:
    batch = InvalidationBatch.from_json(await json_body(request))
    applied = await context_of(request).invalidations.apply(batch.entries)
    return web.json_response(Applied(applied).to_json())


async def titles(request: web.Request) -> web.Response:
    since = parse_count(request.query.get("since", "0"), "since (a sequence number)")
    box = context_of(request)
    box.inventory.apply(box.store.peek(Store.title_changes))
    return web.json_response(box.inventory.since(since).to_json())


ROUTES = _routes()
