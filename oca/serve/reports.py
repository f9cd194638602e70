"""The workers' reports to the master: read them off each worker's control socket and take them in.

Rules kept here:
- A report is one line on the control socket; an unreadable line is logged and skipped, never fatal.
- A report says a worker is alive (the supervisor's stall check reads `heard`), and its first one that it
  is serving (its generation's `ready`).
- Counters go to the fleet totals (/status, /metrics); only reports of workers running the current
  release go to that release's counters (firmware `release_stats`): not a retiring or a candidate
  release's answers.
- Hits are added up here and written to storage in one call per flush (`flush_hits`, housekeeping's
  round), not one per report. I/O errors and damaged objects go to storage as they come, without
  holding up the next report.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from oca.errors import OcaError
from oca.firmware.box import BoxFirmware
from oca.serve.owner import StorageOwner
from oca.serve.stats import FleetStats
from oca.serve.supervisor import WorkerProcess
from oca.storage import Store

log = logging.getLogger("oca.master")


class WorkerReports:
    def __init__(self, stats: FleetStats, firmware: BoxFirmware, owner: StorageOwner,
                 background: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.stats = stats
        self.firmware = firmware
        self.owner = owner
        self._background = background
        self._pending_hits: dict[str, int] = {}  # key -> hits reported since the last flush

    def _on_worker_message(self, worker: WorkerProcess) -> None:
        try:
            data = worker.control.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
            return
        worker.buffer += data
        while (end := worker.buffer.find(b"\n")) >= 0:
            line = bytes(worker.buffer[:end])
            del worker.buffer[: end + 1]
            try:
                message = json.loads(line)
            except ValueError:
                log.error("worker %d sent an unreadable report", worker.process.pid)
                continue
            self._take_report(worker, message)

    def _take_report(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        worker.heard = time.monotonic()
        if message.get("ready"):
            worker.serving = True
            if not worker.ready.done():
                worker.ready.set_result(None)
            return
        self.stats.add(worker.process.pid, message)
        if worker.release == self.firmware.releases.current:  # not a retiring or candidate release's answers
            self.firmware.counters.add(message)
        for key, n in message.get("hits", {}).items():
            self._pending_hits[key] = self._pending_hits.get(key, 0) + int(n)
        for tier, error in message.get("io_errors", ()):
            self._background(self._report_io_error(str(tier), str(error)))
        for key, error in message.get("damaged", ()):
            self._background(self._drop_damaged(str(key), str(error)))

    async def _report_io_error(self, tier: str, error: str) -> None:
        try:
            await self.owner.call(Store.report_io_error, tier, error)
        except OcaError as exc:
            log.error("worker reported an I/O error on tier %s (%s), which storage did not take: %s",
                      tier, error, exc)

    async def _drop_damaged(self, key: str, error: str) -> None:
        """One object's file is short: drop that object (its tier is fine) so it is never served again."""
        try:
            dropped = await self.owner.call(Store.evict, key)
        except OcaError as exc:
            log.error("could not drop damaged object %s: %s", key, exc)
            return
        if dropped:
            log.error("dropped damaged object %s: %s", key, error)

    async def flush_hits(self) -> None:
        """Write the hits reported since the last flush to storage, in one call."""
        if not self._pending_hits:
            return
        hits, self._pending_hits = self._pending_hits, {}
        try:
            await self.owner.call(Store.record_hits, hits)
        except Exception:
            log.exception("recording hits failed")
