"""The control plane's roll-out routes (operator token, see control/api.py):

- `POST /v1/rollouts?waves=1,10%25,50%25,100%25&max_unavailable=10%25&bake=60&in_fill_window=0` with the
  bundle as the body (application/octet-stream): 201 with the roll-out; 400 naming a bad spec or bundle,
  409 while another roll-out runs, 413 past `rollout.max_bundle_size`.
- `GET /v1/rollouts` (newest first, without per-box detail) and `GET /v1/rollouts/<id>` (waves and boxes).
- `POST /v1/rollouts/<id>/abort`: 200 with the roll-out; 409 when it is over already.

The body is streamed to a file under the bundles directory, never held in memory.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from typing import Any

from aiohttp import web

from control.play import PLANE
from control.rollout.job import Rollout
from control.rollout.service import Rollouts, Spec
from control.rollout.view import rollout_view
from oca.errors import BadRequest
from oca.firmware.errors import BundleTooLarge
from oca.httpapi import body_to_file, operator_of
from oca.wire.window import local_second_of_day


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/rollouts", submit), web.get("/v1/rollouts", list_rollouts),
            web.get("/v1/rollouts/{id}", get_rollout), web.post("/v1/rollouts/{id}/abort", abort)]


def _rollouts(request: web.Request) -> Rollouts:
    return request.app[PLANE].rollouts


def _view(request: web.Request, rollout: Rollout, detail: bool = True) -> dict[str, Any]:
    return rollout_view(rollout, detail=detail, second_of_day=local_second_of_day(request.app[PLANE].clock()))


def spec_of(request: web.Request) -> Spec:
    """The roll-out options from the query string; BadRequest naming the bad one."""
    q = request.query
    default = Spec()
    raw_bake = q.get("bake", f"{default.bake:g}")
    try:
        bake = float(raw_bake.removesuffix("s"))
    except ValueError:
        bake = -1.0
    if not math.isfinite(bake) or bake < 0 or bake > 86400:
        raise BadRequest(f"bake must be seconds from 0 to 86400, got {raw_bake[:40]!r}")
    flag = q.get("in_fill_window", "0").lower()
    if flag not in ("0", "1", "true", "false", "yes", "no"):
        raise BadRequest(f"in_fill_window must be 0 or 1, got {flag[:40]!r}")
    return Spec(waves=q.get("waves", default.waves), max_unavailable=q.get("max_unavailable", default.max_unavailable),
                bake=bake, in_fill_window=flag in ("1", "true", "yes"))


async def submit(request: web.Request) -> web.Response:
    rollouts = _rollouts(request)
    spec = spec_of(request)
    limit = request.app[PLANE].config.rollout.max_bundle_size
    too_big = BundleTooLarge(f"bundle is larger than rollout.max_bundle_size ({limit} bytes)")
    incoming = os.path.join(rollouts.bundles_dir, ".incoming")
    os.makedirs(incoming, exist_ok=True)
    path = os.path.join(incoming, f"{uuid.uuid4().hex}.tar")
    try:
        size = await body_to_file(request, path, limit=limit, too_big=too_big)
        if size == 0:
            raise BadRequest("the body must be the bundle (oca firmware build), got nothing")
        rollout = await rollouts.submit(path, spec, operator_of(request))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # taken over by submit() when accepted
    return web.json_response(_view(request, rollout), status=201)


async def list_rollouts(request: web.Request) -> web.Response:
    rollouts = await _rollouts(request).list()
    return web.json_response({"rollouts": [_view(request, r, detail=False) for r in rollouts]})


async def get_rollout(request: web.Request) -> web.Response:
    return web.json_response(_view(request, await _rollouts(request).get(request.match_info["id"])))


async def abort(request: web.Request) -> web.Response:
    rollout = await _rollouts(request).abort(request.match_info["id"], operator_of(request))
    return web.json_response(_view(request, rollout))
