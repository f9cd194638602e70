"""Shared by the observability tests: an in-process control plane against fake boxes, with a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from control.api import build_app
from control.catalog import ingest_source, title_to_json
from control.config import load_control_config
from control.plane import ControlPlane
from tests.clock import FakeClock
from tests.control.fixtures import (
    FakeBox,
    serve_fake_boxes,
    write_control_config,
    write_package,
    write_tokens,
)

OPERATOR = {"Authorization": "Bearer operator-secret"}
BOX = {"Authorization": "Bearer box-secret"}
TTL = 1.0  # steering.ttl of write_control_config


@dataclass
class Lab:
    plane: ControlPlane
    client: Any
    boxes: dict[str, FakeBox]
    clock: FakeClock

    async def metrics(self) -> str:
        resp = await self.client.get("/metrics", headers=OPERATOR)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = await resp.text()
        return text


@pytest.fixture
async def lab(tmp_path: Any, aiohttp_server: Any, aiohttp_client: Any) -> AsyncIterator[Lab]:
    fakes, _, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2")
    path = write_control_config(str(tmp_path), entries, auth=write_tokens(tmp_path))
    clock = FakeClock()
    plane = await ControlPlane.open(load_control_config(path), clock=clock)
    client = await aiohttp_client(build_app(plane))
    ingested = await ingest_source(write_package(str(tmp_path / "package")), "42", countries=[])
    answer = await client.post("/v1/catalog/42", json={"title": title_to_json(ingested.title), "mpd": ingested.mpd},
                               headers=OPERATOR)
    assert answer.status == 201, await answer.text()
    await plane.poller.poll_once()
    try:
        yield Lab(plane, client, fakes, clock)
    finally:
        await plane.close()
