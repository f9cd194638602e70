"""Issue 13 (3): a pull-through fill whose cache write fails (ENOSPC on a real full disk, EIO) is charged to
the tier, and its clients still get the whole object from upstream; the object is simply not stored."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Box
from tests.fetch.test_pull_through import MIB, origin_source, raw_get
from tests.tmpfs import tmpfs
from tests.upstream.origin import Fault, Origin


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs: writes past it fail with ENOSPC, as on a disk whose free space the box misjudged."""
    with tmpfs(tmp_path / "small-disk") as mount_point:
        yield mount_point


def tiers_of(box: Box) -> dict[str, dict[str, object]]:
    return {t["name"]: t for t in box.admin("/status")["tiers"]}


def test_enospc_mid_fill_streams_the_whole_object_charges_the_tier_and_stores_nothing(
        box_factory: Callable[..., Box], origin: Origin, small_disk: Path, tmp_path: Path) -> None:
    key = "titles/3/1080p/seg_00001.m4s"
    data = os.urandom(3 * MIB)
    origin.add(key, data=data, fault=Fault(dribble=(256 * 1024, 0.02)))  # clients are mid-body at the fault
    box = box_factory(
        fetch={"sources": [origin_source(origin)], "connect_timeout": "1s", "first_byte_timeout": "1s",
               "between_bytes_timeout": "2s", "slice_size": "4MiB"},
        # the SSD takes returning objects only, so this first miss lands on the (full) HDD
        storage={"tiers": [{"name": "ssd", "path": str(tmp_path / "ssd"), "capacity": "64MiB",
                            "admission": "returning"},
                           {"name": "hdd", "path": str(small_disk), "capacity": "256MiB"}]})
    head, body, cut = raw_get(box.port, f"/{key}")
    assert head.startswith(b"HTTP/1.1 200") and not cut and body == data
    # a memory-fed fill's tier file is written once the body has ended (oca.fetch.tierwriter): the write, and
    # its ENOSPC, may come after the client's last byte
    deadline = time.monotonic() + 10
    while tiers_of(box)["hdd"]["state"] == "up" and time.monotonic() < deadline:
        time.sleep(0.05)
    hdd = tiers_of(box)["hdd"]
    assert hdd["state"] == "full" and "No space left" in str(hdd["error"]), hdd
    assert not [o for o in box.admin(f"/inventory?prefix={key}")["objects"] if o["tier"] == "hdd"]
    # the next miss goes to a tier with room, and is stored there
    other = "titles/3/1080p/seg_00002.m4s"
    other_data = os.urandom(2 * MIB)
    origin.add(other, data=other_data)
    status, _, got = box.get(f"/{other}")
    assert status == 200 and got == other_data
    deadline = time.monotonic() + 5
    while not box.admin(f"/inventory?prefix={other}")["objects"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [o["tier"] for o in box.admin(f"/inventory?prefix={other}")["objects"]] == ["ssd"]
    assert "Traceback" not in box.log()


async def test_eio_mid_fill_fails_the_tier_and_the_waiting_worker_still_gets_every_byte(
        tmp_path: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The master's fill with a worker's RemoteFills on a real link; the disk's EIO is injected into the fill's
    temp-file writes (a real failing disk is the fault suite's: `python -m loadtest.faults`)."""
    from oca.fetch.fillfile import MEMORY_FEED_DIR, FillFile
    from oca.storage import Store
    from tests.fetch.test_streaming_fill import rig

    key = "titles/3/720p/seg_00007.m4s"
    data = os.urandom(3 * MIB)
    origin.add(key, data=data, fault=Fault(dribble=(256 * 1024, 0.01)))
    real_write = FillFile.write

    def eio_after_a_mib(self: FillFile, chunk: bytes) -> None:
        if not self.memory and os.fstat(self.fd).st_size >= MIB:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", eio_after_a_mib)
    async with rig(tmp_path, origin, MEMORY_FEED_DIR) as linked:
        manager, fills, owner = linked.manager, linked.fills, linked.owner
        fill = fills.acquire(key)
        try:
            for _ in range(1000):
                if fill.result:
                    break
                await asyncio.sleep(0.01)
            assert fill.result == "done" and fill.have == len(data)
            assert os.pread(fill.fd, len(data) + 1, 0) == data
            tiers = {t["name"]: t for t in (await owner.call(Store.status))["tiers"]}
            failed = [t for t in tiers.values() if t["state"] == "failed"]
            assert len(failed) == 1 and "Input/output error" in str(failed[0]["error"]), tiers
            assert await owner.call(Store.get, key) is None
            assert manager.counters["fills_not_stored"] == 1
        finally:
            fills.release(fill)
