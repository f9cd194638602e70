"""What every admin route shares: the app's context (the master), reading it, and reading JSON bodies."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from oca.errors import BadRequest

if TYPE_CHECKING:
    from oca.serve.master import Master


@dataclasses.dataclass
class AdminContext:
    master: Master


CONTEXT = web.AppKey("context", AdminContext)


def master_of(request: web.Request) -> Master:
    return request.app[CONTEXT].master


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body
