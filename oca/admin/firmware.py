"""Admin routes for firmware: POST /firmware (the bundle as the request body), GET /firmware, and the
control plane's roll-out steps: POST /firmware/stage (a bundle), /firmware/activate and /firmware/revert
(`{"version": V}`).

Rules kept here:
- A bundle is streamed to a file under the releases directory, never held in memory; a declared or
  actual size past firmware.max_bundle_size is refused with 413 before or as soon as it is crossed.
- The answer comes once the step is over: 200 with the new status (install: the new release serves; stage:
  it is unpacked, `staged`; activate/revert: the release named serves, or already did), or the refusal's
  status and reason (400 bad bundle or body, 403 no trusted keys, 409 version, busy, or a release that is
  not the staged/previous one, 413 too big, 422 the release failed its health gate) with the box's
  serving release unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from oca.admin.common import context_of
from oca.errors import BadRequest
from oca.firmware.box import BoxFirmware
from oca.firmware.errors import BundleTooLarge
from oca.httpapi import body_to_file, json_body


async def _upload(request: web.Request, firmware: BoxFirmware,
                  then: Callable[[str], Awaitable[dict[str, Any]]]) -> web.Response:
    """Write the request body (a bundle) to the upload's file, 413 as soon as it is too big, then `then` it."""
    limit = firmware.config.max_bundle_size
    too_big = BundleTooLarge(f"bundle is larger than firmware.max_bundle_size ({limit} bytes)")
    if request.content_length is not None and request.content_length > limit:
        raise too_big  # before receiving() takes the box's one firmware step
    with firmware.receiving() as path:
        await body_to_file(request, path, limit=limit, too_big=too_big)
        answer = await then(path)
    return web.json_response(answer)


async def install(request: web.Request) -> web.Response:
    box = context_of(request)
    return await _upload(request, box.firmware, lambda path: box.firmware.install(path, box.switcher))


async def stage(request: web.Request) -> web.Response:
    firmware = context_of(request).firmware
    return await _upload(request, firmware, firmware.stage)


async def _version(request: web.Request) -> str:
    version = (await json_body(request)).get("version")
    if not isinstance(version, str) or not version:
        raise BadRequest(f"version must be a non-empty string, got {version!r}")
    return version


async def activate(request: web.Request) -> web.Response:
    box = context_of(request)
    return web.json_response(await box.firmware.activate(await _version(request), box.switcher))


async def revert(request: web.Request) -> web.Response:
    box = context_of(request)
    return web.json_response(await box.firmware.revert(await _version(request), box.switcher))


async def status(request: web.Request) -> web.Response:
    return web.json_response(context_of(request).firmware.status())


ROUTES = [web.post("/firmware", install), web.get("/firmware", status), web.post("/firmware/stage", stage),
          web.post("/firmware/activate", activate), web.post("/firmware/revert", revert)]
