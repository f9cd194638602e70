"""The master's periodic storage work: hits to the index, the egress rate, the title inventory, tier checks.

Rules kept here:
- One round per storage.access_flush_interval: the hits workers reported are written in one call, the
  egress rate is sampled (and handed on: duress, oca.http.cmsd), the title inventory takes the titles
  that changed; every
  storage.health_check_interval the tiers are checked (a failed disk is taken out of service).
- A round that fails is logged and the next one runs: housekeeping never stops the master.
- Nothing here walks every object: the inventory reads the store's per-title counts of the titles that
  changed (Store.title_changes, O(changes), without the store lock).
- Under systemd's watchdog, `watchdog` says WATCHDOG=1 only while a serving worker reports
  (oca.serve.stall.workers_report): the ping says the box serves, not only that the master's loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from oca import systemd
from oca.admin.inventory import TitleInventory
from oca.config import StorageConfig
from oca.serve.stall import workers_report
from oca.serve.stats import FleetStats
from oca.storage import Store
from oca.storage.storage_owner import StorageOwner

log = logging.getLogger("oca.master")
EGRESS_WINDOW = 2.0  # seconds: the shortest span the egress rate is measured over


class Housekeeping:
    def __init__(self, config: StorageConfig, owner: StorageOwner, stats: FleetStats,
                 flush_hits: Callable[[], Awaitable[None]], egress_sampled: Callable[[int], None] = lambda bps: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.owner = owner
        self.stats = stats
        self.flush_hits = flush_hits
        self.egress_sampled = egress_sampled  # told the egress rate after each round's sample
        self.clock = clock
        self.title_inventory = TitleInventory()
        self.egress_bps = 0
        self._egress_sample = (clock(), 0)

    async def run(self) -> None:
        """Housekeeping rounds until cancelled."""
        interval = self.config.access_flush_interval
        next_check = 0.0
        while True:
            await asyncio.sleep(interval)
            await self.flush_hits()
            self._sample_egress()
            self.egress_sampled(self.egress_bps)
            await self._refresh_inventory()
            if self.clock() >= next_check:
                next_check = self.clock() + self.config.health_check_interval
                try:
                    await self.owner.call(Store.check_tiers)
                except Exception:
                    log.exception("tier health check failed")

    async def _refresh_inventory(self) -> None:
        """Move the per-title inventory sequence when what is stored changed (a fill, an eviction, a purge),
        so the control plane, which watches `inventory_sequence` in /status, learns new holdings by itself.
        Only the titles that changed since the last round are read (the store keeps per-title counts), on
        the loop and without the store lock: never a listing of every object."""
        try:
            self.title_inventory.apply(self.owner.peek(Store.title_changes))
        except Exception:
            log.exception("refreshing the title inventory failed")

    def _sample_egress(self) -> None:
        """Bits per second sent to clients over the last few seconds (what the control plane calls load)."""
        now, sent = self.clock(), int(self.stats.summary().get("bytes_out", 0))
        then, before = self._egress_sample
        if now - then >= EGRESS_WINDOW:
            self.egress_bps = max(0, int((sent - before) * 8 / (now - then)))
            self._egress_sample = (now, sent)


async def watchdog(interval: float, serving_heard: Callable[[], list[float]], silence: float,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """WATCHDOG=1 to systemd every `interval` seconds while a serving worker (`serving_heard`: when each was
    last heard from) reported within `silence` seconds, until cancelled."""
    # oca.serve.stall: the ping says the box serves, so only while a serving worker reports
    while True:
        if workers_report(clock(), serving_heard(), silence):
            systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
