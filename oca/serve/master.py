"""The master process of `oca serve`: opens what the box owns, wires the parts that run it, starts and stops.

Rules kept here:
- The master owns storage (StorageOwner), the data port's listening sockets, the admin port and the fetch
  side (fills, prefetch, invalidations). Its parts do the rest, each in its module: oca.serve.supervisor
  (spawn, reap, restart and judge workers), oca.serve.reports (their reports), oca.serve.release_switch
  (switch, fall back, boot fallback), oca.serve.housekeeping (hits, egress, inventory, tier checks,
  watchdog). Their decisions are pure and tested alone: oca.serve.backoff, oca.serve.stall,
  oca.serve.reload_plan, oca.serve.boot_fallback.
- One start-up, reload or release switch at a time (the generation lock); a SIGHUP that comes during the
  start-up reloads once it is over.
- SIGHUP: load and validate the config again; if it is good, start a new generation of workers with what
  oca.serve.reload_plan keeps of it and retire the old one once the new one is ready (old workers finish
  their responses). A bad config is logged and changes nothing. Storage and admin settings take effect
  only at restart.
- SIGTERM/SIGINT: workers drain within shutdown_timeout, then the master closes storage and exits.
- Under systemd (NOTIFY_SOCKET): READY=1 once every worker is serving, WATCHDOG=1 while the master's
  loop runs, RELOADING=1/STOPPING=1 around reloads and stops.
- Releases (oca.firmware): workers run the current release, the master its own, installed code, as
  nginx's binary upgrade but with the master staying. The master-worker protocol (argv; on the control
  socket the handshake, then the worker's Ready and Reports; the fill link) is therefore a contract between
  releases: typed, versioned records with one codec, oca.protocol (docs/protocol.md). A worker's first
  message says which versions it speaks; the master answers with the highest one both speak and the config
  (Welcome), or refuses it (the worker exits, and counts as a failed start). A release of protocol V speaks
  V and V-1, so the master talks to releases one protocol version away and no further: `switch_release`
  refuses one it cannot talk to before starting anything, the old release serving on. Releases from before
  the handshake (version 1) get the bare config line at spawn.
- Duress (CMSD `du`/`mb`): draining, or egress over http.duress_egress; the workers are told when it
  changes (oca.serve.reports), after each housekeeping round.
- The admin API gets narrow interfaces (oca.admin.common), never the master; an operator's drain is a flag
  the master keeps and shows, changed only through drain()/undrain().
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from oca import __version__, systemd
from oca.admin.app import start_admin
from oca.admin.common import AdminContext
from oca.config import BoxConfig
from oca.config.model import BoxIdentity
from oca.errors import OcaError
from oca.fetch.invalidations import Invalidations
from oca.fetch.manager import FillManager
from oca.fetch.prefetch import PrefetchQueue
from oca.fetch.state import FetchState
from oca.fetch.upstream import Upstream, sources_from_config
from oca.firmware.box import BoxFirmware
from oca.http.cmsd import in_duress
from oca.secret_files import read_secret
from oca.serve import collector
from oca.serve.background import BackgroundTasks
from oca.serve.housekeeping import Housekeeping, watchdog
from oca.serve.listeners import bind_listeners
from oca.serve.preflight import load_checked_box
from oca.serve.release_switch import ReleaseSwitcher
from oca.serve.reload_plan import plan_reload
from oca.serve.reports import WorkerReports
from oca.serve.stall import stall_after
from oca.serve.stats import FleetStats
from oca.serve.supervisor import Supervisor
from oca.storage import Store
from oca.storage.storage_owner import StorageOwner

log = logging.getLogger("oca.master")


def _peer_credential(config: BoxConfig) -> str | None:
    path = config.fetch.peer_credential_file
    return read_secret(path, "fetch.peer_credential_file") if path else None


def _listen(what: str, address: tuple[str, int], bind: Callable[[], list[socket.socket]]) -> list[socket.socket]:
    try:
        return bind()
    except OSError as exc:
        raise OcaError(f"cannot listen on {address[0]}:{address[1]} ({what}): {exc.strerror or exc}") from None


def _bind_data_port(config: BoxConfig) -> list[socket.socket]:
    server = config.server
    return _listen("data port", server.listen, lambda: bind_listeners(
        *server.listen, server.worker_count(), server.backlog))


@dataclass(eq=False)
class _Parts:
    """What the master wires once storage is open."""

    fills: FillManager
    prefetch: PrefetchQueue
    invalidations: Invalidations
    reports: WorkerReports
    supervisor: Supervisor
    switcher: ReleaseSwitcher
    housekeeping: Housekeeping
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # run until the master stops


class Master:
    def __init__(self, config_path: str, config: BoxConfig, loop_kind: str = "uvloop") -> None:
        self.config_path = config_path
        self.config = config
        self.loop_kind = loop_kind
        self.stats = FleetStats()
        self.owner = StorageOwner(config.storage)
        self.started = time.time()
        self.firmware = BoxFirmware(config.firmware, config.storage.state_dir, __version__)
        self._draining = False
        self._background = BackgroundTasks()
        self._generation_lock = asyncio.Lock()  # one start-up, reload or release switch at a time
        self._stopped: asyncio.Future[None] | None = None
        self._parts: _Parts | None = None  # once storage is open
        self._admin: web.AppRunner | None = None

    # -- what the admin API sees of the master itself (oca.admin.common: BoxView, DrainControl) ----------

    @property
    def identity(self) -> BoxIdentity:
        return self.config.box

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        if not self._draining:
            log.info("drained by the operator")
        self._draining = True

    def undrain(self) -> None:
        if self._draining:
            log.info("undrained by the operator")
        self._draining = False

    # -- life cycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stopped = self._stopped = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        # installed before anything else, so an early SIGHUP never kills the master (its default action);
        # a reload waits for the start-up to finish (the generation lock)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
        try:
            async with self._generation_lock:
                parts = await self._start_up(stopped)
            await parts.switcher.boot_fallback()
            # start-up's objects live as long as the master: out of the full collections that stalled /status
            frozen = collector.settle()
            supervisor = parts.supervisor
            host, port = supervisor.listeners[0].getsockname()[:2]
            admin_host, admin_port = self.config.admin.listen
            log.info("oca %s serving http://%s:%d/ with %d workers; admin http://%s:%d/",
                     __version__, host, port, len(supervisor.listeners), admin_host, admin_port)
            log.debug("%d objects of the start-up frozen out of the garbage collector", frozen)
            systemd.notify(f"READY=1\nSTATUS=serving with {len(supervisor.listeners)} workers\n"
                            f"MAINPID={os.getpid()}")
            parts.tasks.append(loop.create_task(parts.housekeeping.run()))
            if self.config.control.url:
                parts.tasks.append(loop.create_task(parts.invalidations.pull_forever()))
            interval = systemd.watchdog_interval()
            if interval:
                silence = stall_after(self.config.storage.access_flush_interval)
                parts.tasks.append(loop.create_task(watchdog(interval, supervisor.serving_heard, silence)))
            await stopped
            systemd.notify("STOPPING=1")
            for task in parts.tasks:
                task.cancel()
            await supervisor.stop_workers(supervisor.workers)
            await parts.reports.flush_hits()
            if self._admin is not None:
                await self._admin.cleanup()
        finally:
            if not stopped.done():  # a start-up that failed: a reload waiting for it does nothing
                stopped.set_result(None)
            await self._close()
        log.info("stopped")

    async def _start_up(self, stopped: asyncio.Future[None]) -> _Parts:
        # the start-up checks (oca.serve.preflight: files, directories, ports) ran in `oca serve` already
        await self.owner.open()
        parts = self._parts = self._wire(stopped)
        await self.owner.call(Store.watch_evictions, parts.fills.eviction_watcher())  # `oca cache why` (issue 18)
        if self.config.control.url:  # catch up before the admin port says we are here
            try:
                await asyncio.wait_for(parts.invalidations.pull(), timeout=10)
            except (TimeoutError, OcaError) as exc:
                log.error("could not catch up with the control plane's invalidations: %s", exc)
        parts.supervisor.listeners = _bind_data_port(self.config)
        admin = self.config.admin.listen
        try:
            self._admin = await start_admin(self._admin_context(parts), *admin)
        except OSError as exc:
            raise OcaError(f"cannot listen on {admin[0]}:{admin[1]} (admin port): {exc.strerror or exc}") from None
        # supervised from the start: a worker may die while starting
        parts.tasks.append(asyncio.get_running_loop().create_task(parts.supervisor.supervise()))
        await parts.supervisor.start_generation()
        return parts

    def _wire(self, stopped: asyncio.Future[None]) -> _Parts:
        config = self.config
        fills = FillManager(config.fetch, self.owner, FetchState(config.storage.state_dir),
                            Upstream(config.fetch, sources_from_config(config.fetch)))
        prefetch = PrefetchQueue(fills.prefetch_one, config.fetch.prefetch_rate,
                                 busy=lambda: fills.client_fills() > 0, credential=_peer_credential(config))
        reports = WorkerReports(lambda: self.config, self.stats, self.firmware, self.owner, fills, self._background)
        supervisor = Supervisor(self.config_path, config, self.loop_kind, self.firmware, self.stats,
                                reports._on_worker_message, reports._attach_fill_link, self._background, stopped)

        def tell_duress(egress_bps: int) -> None:  # after each housekeeping round's egress sample
            reports.tell_duress(in_duress(self.draining, egress_bps, self.config.http.duress_egress),
                                f"draining={self.draining}, egress {egress_bps} bit/s", supervisor.workers)

        return _Parts(fills, prefetch, Invalidations(fills, config.control), reports, supervisor,
                      ReleaseSwitcher(supervisor, self.firmware, self._generation_lock, stopped),
                      Housekeeping(config.storage, self.owner, self.stats, reports.flush_hits, tell_duress))

    def _admin_context(self, parts: _Parts) -> AdminContext:
        return AdminContext(admin=self.config.admin, box=self, drain=self, workers=parts.supervisor,
                            store=self.owner, stats=self.stats, egress=parts.housekeeping,
                            inventory=parts.housekeeping.title_inventory, fills=parts.fills,
                            prefetch=parts.prefetch, invalidations=parts.invalidations, firmware=self.firmware,
                            switcher=parts.switcher)

    async def _close(self) -> None:
        parts = self._parts
        if parts is not None:
            for task in parts.tasks:
                task.cancel()
            for sock in parts.supervisor.listeners:
                sock.close()
            await parts.prefetch.close()
            await parts.fills.close()
        await self.owner.close()

    def stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            log.info("stopping: draining workers (up to %gs)", self.config.server.shutdown_timeout)
            self._stopped.set_result(None)

    async def reload(self) -> None:
        async with self._generation_lock:
            if self._parts is not None and self._stopped is not None and not self._stopped.done():
                await self._reload(self._parts)

    async def _reload(self, parts: _Parts) -> None:
        systemd.notify("RELOADING=1")
        supervisor = parts.supervisor
        try:
            # the start-up checks, as `oca check-config --reload` runs them; the JWKS is re-read: a key
            # rotation is a reload
            plan = plan_reload(self.config, load_checked_box(self.config_path, reload=True))
            upstream_sources = sources_from_config(plan.config.fetch)
            old_listeners: list[socket.socket] = []
            if plan.rebind:
                old_listeners, supervisor.listeners = supervisor.listeners, _bind_data_port(plan.config)
        except OcaError as exc:
            log.error("reload rejected, still running the old config: %s", "; ".join(str(exc).splitlines()))
            systemd.notify("READY=1")
            return
        for section in plan.needs_restart:
            log.warning("%s settings changed in %s: they take effect at the next restart", section,
                        self.config_path)
        self.config = supervisor.config = plan.config
        parts.fills.reconfigure(plan.config.fetch, upstream_sources)
        old = supervisor.current()
        await supervisor.start_generation()
        await supervisor.stop_workers(old)
        for sock in old_listeners:
            sock.close()
        log.info("reloaded %s: generation %d serving", self.config_path, supervisor.generation)
        systemd.notify("READY=1")
