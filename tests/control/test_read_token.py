"""The control plane's read-only token (auth.read_token_file), in process against a fake box: a
Prometheus-style scrape of /metrics works with it, every route of the app's router (so a new route cannot
be missed) answers it 200/404 if it only reads and 403 if it writes; the operator token still works, the
box credential keeps its two GETs."""

from __future__ import annotations

import json
import re
from typing import Any

from control.api import OPEN_PATHS, build_app
from control.config import load_control_config
from control.plane import ControlPlane
from oca.httpapi import READ_METHODS
from tests.control.fixtures import serve_fake_boxes, write_control_config, write_tokens

PLACEHOLDER = re.compile(r"\{(\w+)(:[^}]*)?\}")
MISSING = {"box": "nobox", "seq": "999999", "title": "999", "id": "999999", "session": "none", "name": "none"}
QUERIES = {"/v1/steering/explain": "?ip=127.0.0.1&title=999"}  # a read that needs its query to be a 404


def _concrete(path: str) -> str:
    return PLACEHOLDER.sub(lambda m: MISSING.get(m.group(1), "none"), path) + QUERIES.get(path, "")


async def test_read_token_scrapes_and_reads_but_never_writes(tmp_path: Any, aiohttp_server: Any,
                                                             aiohttp_client: Any) -> None:
    _, _, entries = await serve_fake_boxes(aiohttp_server, "b1")
    (tmp_path / "read.token").write_text("read-secret\n")
    auth = {**write_tokens(tmp_path), "read_token_file": "read.token"}
    plane = await ControlPlane.open(load_control_config(write_control_config(str(tmp_path), entries, auth=auth)))
    try:
        app = build_app(plane)
        client = await aiohttp_client(app)
        await plane.poller.poll_once()
        as_read = {"Authorization": "Bearer read-secret"}
        as_operator = {"Authorization": "Bearer operator-secret"}

        scrape = await client.get("/metrics", headers=as_read)  # what Prometheus does
        assert scrape.status == 200 and "oca_control_box_up" in await scrape.text()

        routes = [(route.method, route.resource.canonical) for route in app.router.routes()
                  if route.resource is not None and route.method != "*"]
        guarded = [(m, p) for m, p in routes if not p.startswith(OPEN_PATHS)]
        reads = [(m, p) for m, p in guarded if m in READ_METHODS]
        writes = [(m, p) for m, p in guarded if m not in READ_METHODS]
        assert len(reads) >= 10 and len(writes) >= 6, routes
        for method, pattern in reads:
            answer = await client.request(method, _concrete(pattern), headers=as_read)
            assert answer.status in (200, 404), (method, pattern, answer.status, await answer.text())
        for method, pattern in writes:
            answer = await client.request(method, _concrete(pattern), headers=as_read, json={})
            text = await answer.text()
            assert answer.status == 403, (method, pattern, answer.status, text)
            assert "read-only token may not" in json.loads(text)["error"]
        for method, pattern in guarded:  # the operator token is never refused; a wrong token is a 401
            answer = await client.request(method, _concrete(pattern), headers=as_operator, json={})
            assert answer.status not in (401, 403), (method, pattern, answer.status, await answer.text())
            wrong = await client.request(method, _concrete(pattern), headers={"Authorization": "Bearer wrong"})
            assert wrong.status == 401, (method, pattern)
        box = await client.get("/v1/invalidations", headers={"Authorization": "Bearer box-secret"})
        assert box.status == 200
        print(f"control routes walked: {len(routes)} ({len(routes) - len(guarded)} open, {len(reads)} read, "
              f"{len(writes)} write)")
    finally:
        await plane.close()
