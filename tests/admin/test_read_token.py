"""A box's read-only admin token (admin.read_token_file), on a real box: a Prometheus-style scrape of /metrics
works with it, every route of the admin API (walked from admin_routes(), so a new route cannot be missed)
answers it 200/404 if the route only reads and 403 if it writes; the full token still works everywhere."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from oca.admin.app import admin_routes
from oca.httpapi import READ_METHODS
from tests.conftest import http_request

FULL, READ = "full-admin-secret", "read-only-secret"
OBJECTS = {"titles/7/720p/seg_1.m4s": b"x" * 1000}
PLACEHOLDER = re.compile(r"\{(\w+)(:[^}]*)?\}")


def _concrete(path: str) -> str:
    """A route's path with every placeholder filled with something that does not exist."""
    missing = {"key": "titles/none/missing.m4s", "job": "999999"}
    return PLACEHOLDER.sub(lambda m: missing.get(m.group(1), "none"), path)


def walked_routes() -> list[tuple[str, str]]:
    """(method, path) of every admin route, GETs with their HEAD (as aiohttp serves them)."""
    app = web.Application()
    app.add_routes(admin_routes())
    return [(route.method, _concrete(route.resource.canonical)) for route in app.router.routes()
            if route.resource is not None]


def test_read_token_scrapes_and_reads_but_never_writes(box_factory: Any, tmp_path: Any) -> None:
    (tmp_path / "admin.token").write_text(FULL + "\n")
    (tmp_path / "read.token").write_text(READ + "\n")
    box = box_factory(OBJECTS, admin={"token_file": str(tmp_path / "admin.token"),
                                      "read_token_file": str(tmp_path / "read.token")})
    box.extra["token"] = FULL
    as_read = {"Authorization": f"Bearer {READ}"}
    as_full = {"Authorization": f"Bearer {FULL}"}

    # what Prometheus does: GET /metrics with `authorization: {credentials_file: read.token}`
    status, headers, body = http_request(box.admin_port, "/metrics", as_read)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "oca_requests_total" in body.decode()

    routes = walked_routes()
    reads = [(m, p) for m, p in routes if m in READ_METHODS]
    writes = [(m, p) for m, p in routes if m not in READ_METHODS]
    assert len(reads) >= 10 and len(writes) >= 10, routes
    for method, path in reads:
        status, _, body = http_request(box.admin_port, path, as_read, method)
        assert status in (200, 404), (method, path, status, body[:200])
    for method, path in writes:
        status, _, body = http_request(box.admin_port, path, as_read, method)
        assert status == 403, (method, path, status, body[:200])
        assert "read-only token may not" in json.loads(body)["error"]
    for method, path in routes:  # the full token: never refused by the auth (a 403 of the route's own, such
        # as POST /firmware on a box that installs no firmware, is fine); no token: 401 everywhere but /healthz
        status, _, body = http_request(box.admin_port, path, as_full, method)
        assert status != 401 and b"read-only token" not in body, (method, path, status, body[:200])
        if path != "/healthz":
            assert http_request(box.admin_port, path, {"Authorization": "Bearer wrong"}, method)[0] == 401, path
    assert box.admin("/status")["box"] == "test-box"
    print(f"admin routes walked: {len(routes)} ({len(reads)} read, {len(writes)} write)")
