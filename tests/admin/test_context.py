"""The admin API on plain fakes of its narrow interfaces (oca.admin.common), over a real aiohttp socket: the
routes need no master, and change the box only through the interfaces' methods."""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from oca.admin.app import build_app
from oca.admin.common import AdminContext
from oca.admin.inventory import TitleInventory
from oca.config.model import AdminConfig, BoxIdentity, FirmwareConfig
from oca.firmware.box import BoxFirmware
from oca.firmware.releases import Release
from oca.serve.stats import FleetStats
from oca.storage import Store

ROOT = pathlib.Path(__file__).resolve().parents[2]


class FakeBox:  # BoxView and DrainControl
    identity = BoxIdentity("box-7", "ams")
    started = 0.0

    def __init__(self) -> None:
        self.draining = False
        self.calls: list[str] = []

    def drain(self) -> None:
        self.calls.append("drain")
        self.draining = True

    def undrain(self) -> None:
        self.calls.append("undrain")
        self.draining = False


class FakeWorkers:  # WorkersView
    def serving_workers(self) -> int:
        return 3

    def serving_releases(self) -> Sequence[tuple[int, str]]:
        return [(4, "1.0"), (5, "1.1")]


class FakeStore:  # StoreCalls: answers Store.status only
    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.peek(fn, *args, **kwargs)

    def peek(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        assert fn is Store.status, fn
        return {"objects": 0, "generation": 1, "tiers": [], "promotions": 0, "demotions": 0, "evictions": {}}


class FakeEgress:
    egress_bps = 12_345


class FakeFills:
    def __init__(self) -> None:
        self.purged: list[tuple[str, str, bool]] = []

    def status(self) -> dict[str, Any]:
        return {"in_flight": 0}

    async def purge(self, scope: str, value: str, soft: bool) -> int:
        self.purged.append((scope, value, soft))
        return 2

    def explain(self, key: str, held: bool) -> dict[str, Any]:
        return {"stale": False, "sliced": None, "filling": False, "would_miss_as": None if held else "first",
                "events": [], "remembered": ""}


class FakePrefetch:
    jobs: dict[int, Any] = {}

    def submit(self, items: Any, priority: int = 0, rate: int = 0) -> Any:
        raise AssertionError("not used here")

    def cancel(self, job_id: int) -> Any:
        return None


class FakeInvalidations:
    applied, last_error = 17, None

    async def apply(self, checked: Any) -> int:
        return self.applied


class NoSwitch:
    async def switch_release(self, release: Release, health_timeout: float) -> None:
        raise AssertionError("no release switch here")


def _context(tmp_path: pathlib.Path, box: FakeBox, fills: FakeFills) -> AdminContext:
    return AdminContext(admin=AdminConfig(), box=box, drain=box, workers=FakeWorkers(), store=FakeStore(),
                        stats=FleetStats(), egress=FakeEgress(), inventory=TitleInventory(base=1000), fills=fills,
                        prefetch=FakePrefetch(), invalidations=FakeInvalidations(),
                        firmware=BoxFirmware(FirmwareConfig(), str(tmp_path), "1.1"), switcher=NoSwitch())


async def test_drain_goes_through_the_drain_control_and_shows_everywhere(aiohttp_client: Any,
                                                                          tmp_path: pathlib.Path) -> None:
    box = FakeBox()
    client = await aiohttp_client(build_app(_context(tmp_path, box, FakeFills())))
    assert (await (await client.post("/drain")).json()) == {"draining": True}
    status = await (await client.get("/status")).json()
    assert status["draining"] is True
    assert "oca_draining 1.0" in await (await client.get("/metrics")).text()
    assert (await (await client.post("/undrain")).json()) == {"draining": False}
    assert (await (await client.get("/status")).json())["draining"] is False
    assert box.calls == ["drain", "undrain"]


async def test_status_and_metrics_read_the_views(aiohttp_client: Any, tmp_path: pathlib.Path) -> None:
    client = await aiohttp_client(build_app(_context(tmp_path, FakeBox(), FakeFills())))
    status = await (await client.get("/status")).json()
    assert (status["box"], status["site"], status["workers"], status["egress_bps"]) == ("box-7", "ams", 3, 12_345)
    assert (status["invalidation_seq"], status["inventory_sequence"], status["version"]) == (17, 1000, "1.1")
    metrics = await (await client.get("/metrics")).text()
    assert 'oca_build_info{generation="4",version="1.0"} 1.0' in metrics
    assert 'oca_build_info{generation="5",version="1.1"} 1.0' in metrics
    assert "oca_workers 3.0" in metrics


async def test_purge_goes_to_the_fills_view(aiohttp_client: Any, tmp_path: pathlib.Path) -> None:
    fills = FakeFills()
    client = await aiohttp_client(build_app(_context(tmp_path, FakeBox(), fills)))
    response = await client.post("/purge", json={"scope": "title", "value": "7", "soft": True})
    assert response.status == 200 and (await response.json())["objects"] == 2
    assert fills.purged == [("title", "7", True)]


def test_no_admin_module_imports_the_master() -> None:
    for path in sorted((ROOT / "oca" / "admin").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "oca.serve.master", path
                assert not (node.module == "oca.serve" and any(a.name == "master" for a in node.names)), path
