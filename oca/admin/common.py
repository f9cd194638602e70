"""What every admin route shares: the app's context (the master) and reading it (JSON bodies: oca.httpapi)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from oca.serve.master import Master


@dataclasses.dataclass
class AdminContext:
    master: Master


CONTEXT = web.AppKey("context", AdminContext)


def master_of(request: web.Request) -> Master:
    return request.app[CONTEXT].master
