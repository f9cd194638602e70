"""The storage threads run at a lower CPU priority than the master's event loop (issue 20: `/status` during an
import). An import keeps a small box's cores busy creating files; the loop, woken by a health poll, must not
wait behind its own storage threads for a core. Checks the nice values, not a timing."""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import threading

import pytest

from oca.config.model import StorageConfig, TierConfig
from oca.storage.storage_owner import STORAGE_NICENESS, StorageOwner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="nice values are per thread on Linux only")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_storage_calls_run_below_the_loops_priority_and_the_loop_keeps_its_own(tmp_path: pathlib.Path) -> None:
    config = StorageConfig(state_dir=str(tmp_path / "state"), policy="lru",
                           tiers=(TierConfig("hdd", str(tmp_path / "hdd"), 1 << 24),))

    async def scenario() -> tuple[int, set[int]]:
        owner = StorageOwner(config)
        await owner.open()
        try:
            release = threading.Event()
            # four calls at once: each of the pool's threads answers one
            calls = [owner.call(lambda _store: (release.wait(0.2), _nice())[1]) for _ in range(4)]
            seen = set(await asyncio.gather(*calls))
            return _nice(), seen
        finally:
            await owner.close()

    before = _nice()
    loop_nice, storage_nice = asyncio.run(scenario())
    assert loop_nice == before  # the caller's thread (the event loop's) is left as it was
    assert storage_nice == {min(before + STORAGE_NICENESS, 19)}
