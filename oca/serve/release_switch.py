"""Switching the release the workers run: a new generation from a release's slot, kept only if healthy.

Rules kept here:
- `switch_release` starts a generation of the new release on the same sockets, beside the old one, and
  retires the old one only once the new one passed its health gate (oca.firmware.health); otherwise the
  new workers are stopped and the old ones, never stopped, keep serving (a slot that lost its old worker
  meanwhile gets a new one of the previous release). A release that was healthy beside the old workers
  but not alone gives way to the previous release again. Success makes the release the current one.
- A release whose protocol this master cannot speak (oca.protocol.releases) is refused before anything
  starts, the old release serving on.
- One switch, reload or start-up at a time (the master's generation lock); none once the box is stopping.
- At boot (`boot_fallback`): a current release none of whose workers came up gives way to the previous
  one (oca.serve.boot_fallback decides), and the firmware state says why.
- The master's own code never changes here: only the workers' (nginx's binary upgrade, the master staying).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from oca.errors import OcaError
from oca.firmware import health
from oca.firmware.box import BoxFirmware
from oca.firmware.errors import ProtocolRefused, ReleaseUnhealthy
from oca.firmware.releases import Release
from oca.protocol.codec import ProtocolError
from oca.protocol.releases import check_release
from oca.serve.boot_fallback import boot_fallback
from oca.serve.supervisor import Supervisor, WorkerProcess

log = logging.getLogger("oca.master")


class ReleaseSwitcher:
    def __init__(self, supervisor: Supervisor, firmware: BoxFirmware, generation_lock: asyncio.Lock,
                 stopped: asyncio.Future[None]) -> None:
        self._supervisor = supervisor
        self.firmware = firmware
        self._generation_lock = generation_lock
        self._stopped: asyncio.Future[None] | None = stopped

    # -- switching ----------------------------------------------------------------------------------

    async def switch_release(self, release: Release, health_timeout: float) -> None:
        """Serve `release` from a new generation of workers on the same sockets, or ReleaseUnhealthy (and the
        old generation, never stopped, keeps serving). On success the release becomes the current one."""
        async with self._generation_lock:
            if self._stopped is None or self._stopped.done():
                raise OcaError("the box is stopping: no release switch")
            supervisor = self._supervisor
            old = [w for w in supervisor.workers if not w.retiring]
            previous = self.firmware.releases.current
            try:  # before anything starts: a release this master cannot talk to never stops the old one
                check_release(release.path, release.version)
            except ProtocolError as exc:
                raise ProtocolRefused(f"{exc}; release {previous.version} keeps serving") from None
            host, port = supervisor.listeners[0].getsockname()[:2]
            probe = functools.partial(health.probe_healthz, host, port)
            supervisor.generation += 1
            fresh = [supervisor.spawn(slot, release) for slot in range(len(supervisor.listeners))]
            try:
                await health.gate(fresh, probe, release.version, health_timeout)
            except (ReleaseUnhealthy, asyncio.CancelledError):  # cancelled: the box is stopping
                await self._fall_back(fresh, old, previous)
                raise
            await supervisor.stop_workers(old)
            try:
                await health.confirm(probe, release.version, 2 * len(supervisor.listeners))
            except ReleaseUnhealthy:  # healthy beside the old workers, not alone: the previous release again
                await supervisor.start_generation(previous)
                await supervisor.stop_workers(fresh)
                raise
            self.firmware.commit(release)
            log.info("release %s serving (generation %d); previous %s", release.version, supervisor.generation,
                     previous.version)

    async def _fall_back(self, fresh: list[WorkerProcess], old: list[WorkerProcess], previous: Release) -> None:
        """Stop a failed generation; the old workers are current again (a slot that lost its one meanwhile
        gets a new worker of the previous release)."""
        self._supervisor.make_current(old)
        await self._supervisor.stop_workers(fresh)
        self._supervisor.fill_slots(previous)

    async def boot_fallback(self) -> None:
        """After the start-up generation: fall back to the previous release if the current one serves nothing
        (the firmware state then says why)."""
        releases = self.firmware.releases
        fallback = boot_fallback(releases.current, releases.previous, self._supervisor.serving_workers())
        if fallback is None:
            return
        previous = fallback.release
        log.error("%s: falling back to the previous release %s", fallback.why, previous.version)
        try:
            await self.switch_release(previous, self.firmware.config.health_timeout)
        except OcaError as exc:
            log.error("the previous release %s did not start either: %s", previous.version, exc)
            return
        self.firmware.state, self.firmware.reason = "failed", f"{fallback.why}: fell back to {previous.version}"
