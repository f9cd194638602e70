"""The control plane's /lab routes: the lab page (its files are in oca/lab/page/), its config and the players
from npm. Served only when the control plane's config has `lab:` (control.config.LabPageConfig), which
`oca lab up` writes.

Rules kept here:
- `GET /lab` is the page; `GET /lab/<name>` one of its files (a plain name: no directory, no leading dot);
  `GET /lab/config.json` tells the page where the lab API is and which players are installed;
  `GET /lab/vendor/hls.min.js` and `/lab/vendor/dash.all.min.js` come from `node_modules` (npm's layout).
- A player that is not installed is a 404 whose body says to run `make`; the page checks config.json first
  and says so itself instead of failing.
- Nothing here needs the operator token: the page is for whoever can reach the lab's loopback addresses.
"""

from __future__ import annotations

import os
import re

from aiohttp import web

from control.config import LabPageConfig

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")
_NO_CACHE = {"Cache-Control": "no-cache"}
# where npm puts each player's browser build (dashjs 5 moved it under modern/umd)
VENDOR: dict[str, tuple[str, ...]] = {
    "hls.min.js": ("hls.js/dist/hls.min.js",),
    "dash.all.min.js": ("dashjs/dist/modern/umd/dash.all.min.js", "dashjs/dist/dash.all.min.js",
                        "dashjs/dist/legacy/umd/dash.all.min.js"),
}


def vendor_file(node_modules: str | None, name: str) -> str | None:
    """The installed file for a vendor name, or None when it is not installed."""
    if node_modules is None:
        return None
    for rel in VENDOR.get(name, ()):
        path = os.path.join(node_modules, rel)
        if os.path.isfile(path):
            return path
    return None


def lab_page_routes(settings: LabPageConfig) -> list[web.RouteDef]:
    async def page(request: web.Request) -> web.StreamResponse:
        return _file(os.path.join(settings.page_dir, "index.html"))

    async def config(request: web.Request) -> web.Response:
        players = {"hls": vendor_file(settings.node_modules, "hls.min.js") is not None,
                   "dash": vendor_file(settings.node_modules, "dash.all.min.js") is not None}
        return web.json_response({"api_url": settings.api_url, "players": players}, headers=_NO_CACHE)

    async def vendor(request: web.Request) -> web.StreamResponse:
        path = vendor_file(settings.node_modules, request.match_info["name"])
        if path is None:
            return web.Response(status=404, text=f"// {request.match_info['name'][:100]} is not installed: run make\n",
                                content_type="text/javascript")
        return _file(path)

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _NAME.fullmatch(name):
            raise web.HTTPNotFound()
        return _file(os.path.join(settings.page_dir, name))

    return [web.get("/lab", page), web.get("/lab/", page), web.get("/lab/config.json", config),
            web.get("/lab/vendor/{name}", vendor), web.get("/lab/{name}", static)]


def _file(path: str) -> web.StreamResponse:
    if not os.path.isfile(path):
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=_NO_CACHE)
