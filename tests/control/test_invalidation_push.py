"""Invalidation pushes: an append reaches every healthy box, never more than push_concurrency at once."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from control.invalidation import Invalidator
from control.model import Box, BoxHealth, Fleet, Site
from control.store import open_store


class Boxes:
    """The admin /invalidations of many boxes behind one server (box i at /b<i>), each answer held a little
    so that pushes overlap if nothing bounds them."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.applied: dict[str, int] = {}

    async def invalidations(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            body = await request.json()
            await asyncio.sleep(0.02)
            seq = max(entry["seq"] for entry in body["invalidations"])
            self.applied[request.match_info["box"]] = seq
            return web.json_response({"applied_seq": seq})
        finally:
            self.in_flight -= 1


async def test_an_append_pushes_to_every_healthy_box_at_most_push_concurrency_at_once(
        aiohttp_server: Any, tmp_path: Path) -> None:
    boxes = Boxes()
    app = web.Application()
    app.add_routes([web.post("/{box}/invalidations", boxes.invalidations)])
    server = await aiohttp_server(app)
    fleet = Fleet({"s": Site("s", 0.0, 0.0, "NL")},
                  {f"b{i}": Box(f"b{i}", "s", "http://data", f"http://127.0.0.1:{server.port}/b{i}", 10**9)
                   for i in range(40)}, (), "http://origin")
    health = {box_id: BoxHealth(box_id, healthy=True) for box_id in fleet.boxes}
    store = open_store(f"sqlite:{tmp_path / 'state.db'}")
    executor = ThreadPoolExecutor(1)

    async def blocking(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args))

    async with aiohttp.ClientSession() as session:
        invalidator = Invalidator(store, fleet, session, lambda: health, time.time, blocking, push_timeout=5.0,
                                  push_concurrency=3)
        await invalidator.load()
        entry, created = await invalidator.submit("key", "titles/1/a.ts", soft=False, reason="test", operator="t",
                                                  client_id=None)
        assert created
        view = await invalidator.wait(entry, 10.0)
        await invalidator.stop()
    executor.shutdown()
    store.close()
    assert view["complete"] and not view["pending"]
    assert boxes.applied == {box_id: entry.seq for box_id in fleet.boxes}
    assert boxes.most == 3  # 40 boxes, 3 at a time (all 40 at once before the bound)
