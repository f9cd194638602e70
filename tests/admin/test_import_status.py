"""/status while the box imports: answered from counters while an import batch commits (the store's lock held,
as a slow disk holds it), and the batch's JSON (up to 1,024 items each way) kept off the event loop.

The admin API runs on a real StorageOwner (its threads, a real Store, SQLite and tier) over a real socket; the
rest of the box is the narrow fakes of test_context.py. Asserts on ordering, never on timings."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from oca import httpapi
from oca.admin import app as admin_app
from oca.admin.app import build_app
from oca.admin.common import AdminContext
from oca.admin.inventory import TitleInventory
from oca.config.model import AdminConfig, FirmwareConfig, StorageConfig, TierConfig
from oca.firmware.box import BoxFirmware
from oca.serve.stats import FleetStats
from oca.storage.engine import Engine
from oca.storage.storage_owner import StorageOwner

from .test_context import FakeBox, FakeEgress, FakeFills, FakeInvalidations, FakePrefetch, FakeWorkers, NoSwitch


@pytest.fixture
async def owner(tmp_path: pathlib.Path) -> AsyncIterator[StorageOwner]:
    config = StorageConfig(state_dir=str(tmp_path / "state"), policy="lru",
                           tiers=(TierConfig("hdd", str(tmp_path / "hdd"), 1 << 24),))
    storage = StorageOwner(config)
    await storage.open()
    yield storage
    await storage.close()


def _context(tmp_path: pathlib.Path, owner: StorageOwner) -> AdminContext:
    box = FakeBox()
    return AdminContext(admin=AdminConfig(), box=box, drain=box, workers=FakeWorkers(), store=owner,
                        stats=FleetStats(), egress=FakeEgress(), inventory=TitleInventory(base=1000),
                        fills=FakeFills(), prefetch=FakePrefetch(), invalidations=FakeInvalidations(),
                        firmware=BoxFirmware(FirmwareConfig(), str(tmp_path), "1.1"), switcher=NoSwitch())


def _batch(tmp_path: pathlib.Path, n: int) -> dict[str, Any]:
    items = []
    for i in range(n):
        path = tmp_path / f"src-{i}"
        path.write_bytes(bytes([i % 256]) * (100 + i))
        items.append({"src": str(path), "key": f"titles/9/720p/seg_{i}.m4s"})
    return {"items": items}


async def test_status_answers_while_an_import_batch_commits(aiohttp_client: Any, tmp_path: pathlib.Path,
                                                            owner: StorageOwner,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    committing, release = threading.Event(), threading.Event()
    real_install = Engine.install_many

    def slow_install(self: Engine, *args: Any) -> None:  # holds the store's lock, as a slow disk
        committing.set()
        assert release.wait(60)
        real_install(self, *args)

    monkeypatch.setattr(Engine, "install_many", slow_install)
    client = await aiohttp_client(build_app(_context(tmp_path, owner)))
    batch = asyncio.ensure_future(client.post("/cache/import-batch", json=_batch(tmp_path, 50)))
    try:
        assert await asyncio.to_thread(committing.wait, 60)
        polls = []
        for _ in range(3):  # every poll answered while the commit holds the lock, not one after it
            response = await client.get("/status")
            polls.append((response.status, (await response.json())["objects"]))
        assert not batch.done(), "the batch ended before /status was asked"
        assert polls == [(200, 0)] * 3
    finally:
        release.set()
    response = await batch
    assert response.status == 200 and len((await response.json())["results"]) == 50
    assert (await (await client.get("/status")).json())["objects"] == 50


async def test_an_import_batch_is_parsed_and_answered_off_the_event_loop(aiohttp_client: Any,
                                                                         tmp_path: pathlib.Path,
                                                                         owner: StorageOwner,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []

    def spy(wrapped: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return wrapped(*args, **kwargs)
        return call

    monkeypatch.setattr(admin_app, "json_object", spy(httpapi.json_object))  # the body's parse
    monkeypatch.setattr(admin_app, "object_json", spy(admin_app.object_json))  # each result's encoding
    client = await aiohttp_client(build_app(_context(tmp_path, owner)))
    response = await client.post("/cache/import-batch", json=_batch(tmp_path, 5))
    assert response.status == 200 and len((await response.json())["results"]) == 5
    assert len(threads) == 6 and threading.get_ident() not in threads, "JSON work ran on the event loop's thread"


async def test_a_bad_import_batch_is_still_a_400_with_a_reason(aiohttp_client: Any, tmp_path: pathlib.Path,
                                                               owner: StorageOwner) -> None:
    client = await aiohttp_client(build_app(_context(tmp_path, owner)))
    for body, problem in ((b"[1]", "must be a JSON object"), (b"{", "not valid JSON"),
                          (b'{"items": []}', "items must be a list")):
        response = await client.post("/cache/import-batch", data=body)
        assert response.status == 400 and problem in (await response.json())["error"]


async def test_at_most_two_import_batches_hold_storage_threads(aiohttp_client: Any, tmp_path: pathlib.Path,
                                                               owner: StorageOwner,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Four batches sent at once: two are stored, the others wait on the event loop (not in the storage
    owner's queue, where hit reports and fills' adopts would queue behind them)."""
    release = threading.Event()
    entered: list[int] = []
    real = admin_app.store_batch

    def held(store: Any, raw: bytes) -> bytes:
        entered.append(len(entered))
        assert release.wait(60)
        return real(store, raw)

    monkeypatch.setattr(admin_app, "store_batch", held)
    client = await aiohttp_client(build_app(_context(tmp_path, owner)))
    batches = [asyncio.ensure_future(client.post("/cache/import-batch", json={"items": [item]}))
               for item in _batch(tmp_path, 4)["items"]]
    try:
        while len(entered) < admin_app.IMPORT_BATCHES_AT_ONCE:
            await asyncio.sleep(0.01)
        status = await client.get("/status")  # a round trip on the loop: the others had their turn to enter
        assert status.status == 200 and len(entered) == 2
    finally:
        release.set()
    assert [r.status for r in await asyncio.gather(*batches)] == [200] * 4
    assert len(entered) == 4
