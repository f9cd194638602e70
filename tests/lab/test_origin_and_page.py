"""The lab's origin (ranges, validators, no way out of its directory) and the control plane's /lab routes."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web
from yarl import URL

from control.config import LabPageConfig
from control.lab_page import lab_page_routes
from oca.lab.layout import page_dir
from oca.lab.origin import build_app


async def test_the_origin_serves_ranges_and_validators(aiohttp_client: Any, tmp_path: Any) -> None:
    os.makedirs(tmp_path / "titles" / "7" / "360p")
    (tmp_path / "titles" / "7" / "360p" / "seg_00001.m4s").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "secret").write_text("no")
    client = await aiohttp_client(build_app(str(tmp_path)))
    whole = await client.get("/titles/7/360p/seg_00001.m4s")
    assert whole.status == 200 and len(await whole.read()) == 1024
    etag = whole.headers["ETag"]
    part = await client.get("/titles/7/360p/seg_00001.m4s", headers={"Range": "bytes=10-19"})
    assert part.status == 206 and await part.read() == bytes(range(10, 20))
    assert part.headers["Content-Range"] == "bytes 10-19/1024"
    again = await client.get("/titles/7/360p/seg_00001.m4s", headers={"If-None-Match": etag})
    assert again.status == 304
    assert (await client.get("/titles/7/360p/nope.m4s")).status == 404
    assert (await client.get("/secret")).status == 404  # only content paths: titles/...
    assert (await client.get(URL("/titles/7/%2e%2e/%2e%2e/secret", encoded=True))).status == 404
    assert (await client.get(URL("/titles/7/../../secret", encoded=True))).status == 404
    assert (await client.get("/healthz")).status == 200


async def test_the_lab_page_routes(aiohttp_client: Any, tmp_path: Any) -> None:
    modules = tmp_path / "node_modules"
    os.makedirs(modules / "hls.js" / "dist")
    (modules / "hls.js" / "dist" / "hls.min.js").write_text("var Hls = 1;")
    app = web.Application()
    app.add_routes(lab_page_routes(LabPageConfig(page_dir=page_dir(), api_url="http://127.0.0.1:1",
                                                 node_modules=str(modules))))
    client = await aiohttp_client(app)
    page = await client.get("/lab")
    assert page.status == 200 and "/lab/lab.js" in await page.text()
    assert (await client.get("/lab/lab.js")).status == 200
    assert await (await client.get("/lab/config.json")).json() == {
        "api_url": "http://127.0.0.1:1", "players": {"hls": True, "dash": False}}
    assert await (await client.get("/lab/vendor/hls.min.js")).text() == "var Hls = 1;"
    missing = await client.get("/lab/vendor/dash.all.min.js")
    assert missing.status == 404 and "run make" in await missing.text()
    for name in (".hidden", "..%2flab.py", "nope.js"):
        assert (await client.get(f"/lab/{name}")).status == 404
