"""The admin HTTP API of a box (aiohttp), served by the master on the management address.

Rules kept here:
- Every route but /healthz needs `Authorization: Bearer <token>` when admin.token_file is set; the
  read-only token (admin.read_token_file) is taken on GET routes (status, metrics, inventory, ...) and is
  a 403 on every route that writes (oca.httpapi.scoped_auth).
- Errors are JSON {"error": "..."} with the status the OcaError carries; bad JSON or fields are 400.
- Store calls go through the storage owner (its threads), never straight to the Store.
- Routes use only the narrow interfaces of AdminContext (oca.admin.common), never the master.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from oca.admin import content, firmware
from oca.admin.common import CONTEXT, AdminContext, context_of
from oca.admin.metrics import render_metrics
from oca.errors import BadRequest, NotFound, OcaError
from oca.httpapi import json_body, json_object, scoped_auth
from oca.keys import is_valid_key
from oca.secret_files import read_secret
from oca.storage import ObjectInfo, Store
from oca.wire.admin_client import read_token
from oca.wire.inventory import LOOKUP_MAX_KEYS, InventoryObject, Listing
from oca.wire.status import BoxReport, TierReport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def object_json(info: ObjectInfo) -> dict[str, Any]:
    return inventory_object(info).to_json()


def inventory_object(info: ObjectInfo) -> InventoryObject:
    """An object of the store as the wire model's InventoryObject (`GET /inventory`, stat, pin, import)."""
    return InventoryObject(info.key, info.size, info.digest, info.pinned, info.tier, info.hot, info.stored_at)


def build_app(context: AdminContext) -> web.Application:
    admin = context.admin
    token = read_token(admin.token_file)
    # the read-only token (status, metrics, inventory: every GET); no full token, no scopes (all open)
    read = read_secret(admin.read_token_file, "admin.read_token_file") if admin.read_token_file and token else None

    @web.middleware
    async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path != "/healthz":
                scoped_auth(request, (token,), read)
            return await handler(request)
        except OcaError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)

    app = web.Application(middlewares=[errors_and_auth], client_max_size=1 << 20)
    app[CONTEXT] = context
    app[IMPORT_SLOTS] = asyncio.Semaphore(IMPORT_BATCHES_AT_ONCE)
    app.add_routes(admin_routes())
    return app


def admin_routes() -> list[web.RouteDef]:
    """Every route of the admin API (tests/admin/test_read_token.py walks them all with each token)."""
    return [
        web.get("/healthz", healthz),
        web.get("/status", status),
        web.get("/metrics", metrics),
        web.get("/inventory", inventory),
        web.post("/inventory/lookup", inventory_lookup),
        web.get("/cache/objects/{key:.+}", stat_object),
        web.delete("/cache/objects/{key:.+}", evict_object),
        web.post("/cache/evict", evict_prefix),
        web.post("/cache/import", import_object),
        web.post("/cache/import-batch", import_batch),
        web.post("/cache/pin", pin_object),
        web.post("/drain", drain),
        web.post("/undrain", undrain),
        *content.ROUTES,
        *firmware.ROUTES,
    ]


async def start_admin(context: AdminContext, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(context), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


def _key(value: object) -> str:
    if not isinstance(value, str) or not is_valid_key(value):
        raise BadRequest(f"not a valid content key: {value!r}")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def status(request: web.Request) -> web.Response:
    box = context_of(request)
    store = box.store.peek(Store.status)  # counters, without the store lock
    identity = box.box.identity
    firmware = box.firmware.status()
    stats = box.stats.summary()
    # what the control plane reads on every health poll, in the wire model's terms (oca.wire.status)
    report = BoxReport(
        identity.id, version=firmware.get("version"), draining=box.drain.draining,
        egress_bps=box.egress.egress_bps, bytes_out=stats["bytes_out"], connections=stats["connections"],
        inventory_sequence=box.inventory.sequence, invalidation_seq=box.invalidations.applied,
        hit_bytes=stats["hit_bytes"], miss_bytes=stats["miss_bytes"],
        tiers=_tier_reports(store.get("tiers")))
    body: dict[str, Any] = {
        # previous_version, staged, releases, firmware, release_stats (and version, in the report)
        **firmware,
        "site": identity.site,
        "pid": os.getpid(),
        "uptime": round(time.time() - box.box.started, 3),
        "workers": box.workers.serving_workers(),
        **stats,  # requests, bytes_by_tier, hit_ratio (and the report's counters)
        "objects": store.get("objects"),
        "loading": store.get("loading"),  # the catalog still loading from the index (in chunks: calls run between them)
        "storage_generation": store.get("generation"),
        "invalidation_error": box.invalidations.last_error,
        "fetch": box.fills.status(),
        "promotions": store.get("promotions"),
        "demotions": store.get("demotions"),
        "evictions": store.get("evictions"),
        **report.to_json(),
    }
    return web.json_response(body)


def _tier_reports(tiers: object) -> tuple[TierReport, ...]:
    """The store's tiers (Store.status: name, path, capacity, used, objects, state, error) as the report's."""
    return tuple(TierReport.from_json(t) for t in tiers if isinstance(t, Mapping)) if isinstance(tiers, list) else ()


async def metrics(request: web.Request) -> web.Response:
    box = context_of(request)
    store = box.store.peek(Store.status)  # counters, without the store lock
    text = render_metrics(box.stats, store, box.workers.serving_workers(), box.drain.draining, box.fills.status(),
                          list(box.prefetch.jobs.values()), releases=box.workers.serving_releases())
    return web.Response(body=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def inventory(request: web.Request) -> web.Response:
    if request.query.get("by") == "title":
        return await content.titles(request)
    prefix = request.query.get("prefix", "")
    pinned = request.query.get("pinned", "0")
    if pinned not in ("0", "1"):
        raise BadRequest(f"pinned must be 0 or 1, got {pinned[:40]!r}")
    # pinned=1: O(pinned objects), not a walk of every one (what the fill job asks, to unpin what its plan dropped)
    objects = await context_of(request).store.call(Store.pinned if pinned == "1" else Store.list, prefix)
    return web.json_response(Listing(tuple(inventory_object(o) for o in objects)).to_json())


async def inventory_lookup(request: web.Request) -> web.Response:
    """`{"keys": [...]}` -> the Listing of those the box holds, in the order asked: O(keys), however many the box
    holds. The fill job diffs its plan with it; a full `GET /inventory` of a box of 10^6 objects kept the
    master's event loop busy for seconds, and its health polls unanswered."""
    keys = (await json_body(request)).get("keys")
    if not isinstance(keys, list) or len(keys) > LOOKUP_MAX_KEYS:
        raise BadRequest(f"keys must be a list of at most {LOOKUP_MAX_KEYS} content keys")
    objects = await context_of(request).store.call(Store.lookup, [_key(k) for k in keys])
    return web.json_response(Listing(tuple(inventory_object(o) for o in objects)).to_json())


async def stat_object(request: web.Request) -> web.Response:
    key = _key(request.match_info["key"])
    info = await context_of(request).store.call(Store.get, key)
    if info is None:
        raise NotFound(f"{key} is not in the cache")
    return web.json_response(object_json(info))


async def evict_object(request: web.Request) -> web.Response:
    key = _key(request.match_info["key"])
    if not await context_of(request).store.call(Store.evict, key):
        raise NotFound(f"{key} is not in the cache")
    return web.json_response({"evicted": 1})


async def evict_prefix(request: web.Request) -> web.Response:
    body = await json_body(request)
    prefix = body.get("prefix")
    if not isinstance(prefix, str) or not prefix:
        raise BadRequest("prefix must be a non-empty string")
    count = await context_of(request).store.call(Store.evict_prefix, prefix)
    return web.json_response({"evicted": count})


async def import_object(request: web.Request) -> web.Response:
    """Store a file that is already on this machine (the operator CLI's `cache import`)."""
    body = await json_body(request)
    src, key = body.get("src"), _key(body.get("key"))
    if not isinstance(src, str) or not os.path.isabs(src):
        raise BadRequest(f"src must be an absolute path, got {src!r}")
    if not os.path.isfile(src):
        raise BadRequest(f"src {src} is not a regular file")
    digest = body.get("digest")
    if digest is not None and not isinstance(digest, str):
        raise BadRequest("digest must be a string")
    info = await context_of(request).store.call(Store.put_file, src, key, hot=_flag(body, "hot"),
                                             pin=_flag(body, "pin"), digest=digest)
    return web.json_response(object_json(info), status=201)


MAX_IMPORT_BATCH = 1024  # files per /cache/import-batch request
# import batches stored at once: the storage owner has 4 threads, and hit reports, fills' adopts and purges
# must find one free (and not queue behind import batches) however many batches clients send at once
IMPORT_BATCHES_AT_ONCE = 2
IMPORT_SLOTS = web.AppKey("import_slots", asyncio.Semaphore)


async def import_batch(request: web.Request) -> web.Response:
    """Store many files already on this machine with one index commit (Store.put_files): the operator CLI's
    `cache import` against a running box. Body {"items": [{"src", "key"}...], "hot", "pin"}; answers each
    item's object or error, in order. The body is parsed and the answer encoded on the storage thread that
    stores the batch: 1,024 items are milliseconds of JSON, which on the event loop would hold up /status."""
    raw = await request.read()
    async with request.app[IMPORT_SLOTS]:
        body = await context_of(request).store.call(store_batch, raw)
    return web.Response(body=body, content_type="application/json")


def store_batch(store: Store, raw: bytes) -> bytes:
    """/cache/import-batch's work, on a storage thread: its body in, its answer's bytes out."""
    body = json_object(raw)
    items = body.get("items")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_IMPORT_BATCH:
        raise BadRequest(f"items must be a list of 1 to {MAX_IMPORT_BATCH} objects")
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("each item must be an object with src and key")
        src, key = item.get("src"), _key(item.get("key"))
        if not isinstance(src, str) or not os.path.isabs(src):
            raise BadRequest(f"src must be an absolute path, got {src!r}")
        pairs.append((src, key))
    results = store.put_files(pairs, hot=_flag(body, "hot"), pin=_flag(body, "pin"))
    answer = [{"error": str(r), "status": r.status} if isinstance(r, OcaError) else object_json(r) for r in results]
    return json.dumps({"results": answer}).encode()


async def pin_object(request: web.Request) -> web.Response:
    body = await json_body(request)
    key = _key(body.get("key"))
    info = await context_of(request).store.call(Store.set_pinned, key, _flag(body, "pinned"))
    return web.json_response(object_json(info))


async def drain(request: web.Request) -> web.Response:
    control = context_of(request).drain
    control.drain()
    return web.json_response({"draining": control.draining})


async def undrain(request: web.Request) -> web.Response:
    control = context_of(request).drain
    control.undrain()
    return web.json_response({"draining": control.draining})
