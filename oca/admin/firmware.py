"""Admin routes for firmware: POST /firmware (the bundle as the request body), GET /firmware.

Rules kept here:
- The body is streamed to a file under the releases directory, never held in memory; a declared or
  actual size past firmware.max_bundle_size is refused with 413 before or as soon as it is crossed.
- The answer comes once the install is over: 200 with the new status when the new release serves, or the
  refusal's status and reason (400 bad bundle, 403 no trusted keys, 409 version or busy, 413 too big,
  422 the release failed its health gate) with the box unchanged.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from oca.admin.common import master_of
from oca.firmware.errors import BundleTooLarge

_CHUNK = 1 << 20


async def install(request: web.Request) -> web.Response:
    master = master_of(request)
    firmware = master.firmware
    limit = firmware.config.max_bundle_size
    too_big = f"bundle is larger than firmware.max_bundle_size ({limit} bytes)"
    if request.content_length is not None and request.content_length > limit:
        raise BundleTooLarge(too_big)
    with firmware.receiving() as path:
        size = 0
        with open(path, "wb") as out:
            async for chunk in request.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BundleTooLarge(too_big)
                await asyncio.to_thread(out.write, chunk)
        answer = await firmware.install(path, master)
    return web.json_response(answer)


async def status(request: web.Request) -> web.Response:
    return web.json_response(master_of(request).firmware.status())


ROUTES = [web.post("/firmware", install), web.get("/firmware", status)]
