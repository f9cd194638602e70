"""The lab's origin: a small static file server over the content directory (`python -m oca.lab.origin DIR
HOST:PORT`), standing in for a studio's origin behind the boxes.

Rules kept here:
- `GET`/`HEAD /<content path>` serves DIR/<content path>; the path must be a valid content key under
  `titles/` (oca.keys.is_valid_key: no `..`, no `//`, no control bytes), anything else is 404. `GET /healthz` is `ok`.
- aiohttp's FileResponse answers ranges (boxes fetch large objects in slices), ETag/Last-Modified and
  If-None-Match (boxes revalidate soft-purged objects); its known deviations from RFC 9110 do not matter
  for an origin that only boxes talk to.
- One access log line per request on stdout (the lab sends it to `origin.log`): it shows what missed.
- SIGTERM and SIGINT stop it (aiohttp's run_app).
"""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from oca.config.units import parse_listen
from oca.keys import is_valid_key

ROOT = web.AppKey("root", str)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def content(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    if not key.startswith("titles/") or not is_valid_key(key):
        raise web.HTTPNotFound(text=f"not a content path: {key[:200]!r}\n")
    path = os.path.join(request.app[ROOT], key)
    if not os.path.isfile(path):
        raise web.HTTPNotFound(text=f"no such object: {key[:200]}\n")
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=60"})


def build_app(root: str) -> web.Application:
    app = web.Application()
    app[ROOT] = os.path.abspath(root)
    app.add_routes([web.get("/healthz", healthz), web.get("/{key:.+}", content)])
    return app


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m oca.lab.origin DIR HOST:PORT", file=sys.stderr)
        return 2
    root, listen = argv
    if not os.path.isdir(root):
        print(f"origin: {root}: not a directory", file=sys.stderr)
        return 2
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        print(f"origin: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s")
    print(f"origin: serving {os.path.abspath(root)} on http://{host}:{port}", flush=True)
    web.run_app(build_app(root), host=host, port=port, print=None,
                access_log_format='%a "%r" %s %b %Tfs')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
