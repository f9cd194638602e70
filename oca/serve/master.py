"""The master process of `oca serve`: owns storage, the listening sockets and the admin port; runs workers.

Rules kept here:
- One worker per slot (default: one per core), each started as its own Python process on the slot's
  SO_REUSEPORT socket; a worker that dies is restarted on the same socket, with backoff if it keeps dying;
  a worker that stops reporting (a stuck event loop) is killed and so restarted.
- SIGHUP: load and validate the config again; if it is good, start a new generation of workers and
  retire the old one once the new one is ready (old workers finish their responses). A bad config is
  logged and changes nothing. Storage settings take effect only at restart.
- SIGTERM/SIGINT: workers drain within shutdown_timeout, then the master closes storage and exits.
- Under systemd (NOTIFY_SOCKET): READY=1 once every worker is serving, WATCHDOG=1 while the master's
  loop runs, RELOADING=1/STOPPING=1 around reloads and stops.
- Releases (oca.firmware): workers run the current release, imported from its slot (PYTHONPATH first,
  `-P` so no working directory shadows it); the master keeps running its own, installed code, as nginx's
  binary upgrade but with the master staying. `switch_release` starts a generation from a new release on
  the same sockets and retires the old one only once the new one passed its health gate; otherwise the new
  workers are stopped and the old ones, never stopped, keep serving. A release reverted to (the previous
  one) is switched to the same way.
- The master-worker protocol (argv; on the control socket the handshake, then the worker's Ready and
  Reports; the fill link) is therefore a contract between releases: typed, versioned records with one
  codec, oca.protocol (docs/protocol.md). A worker's first message says which versions it speaks; the
  master answers with the highest one both speak and the config (Welcome), or refuses it (the worker exits,
  and counts as a failed start). A release of protocol V speaks V and V-1, so the master talks to releases
  one protocol version away and no further: `switch_release` reads the release's version from its slot
  (oca.protocol.releases) and refuses one it cannot talk to before starting anything, the old release
  serving on. Releases from before the handshake (version 1) get the bare config line at spawn.
- The current release's counters (firmware `release_stats`, for the control plane's roll-out gate) take only
  the reports and deaths of workers running that release; the hit path counts nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from oca import __version__, systemd
from oca.admin.app import start_admin
from oca.admin.common import AdminContext
from oca.admin.inventory import TitleInventory
from oca.config import BoxConfig, box_config_to_raw
from oca.errors import OcaError
from oca.fetch.invalidations import Invalidations
from oca.fetch.link import Link
from oca.fetch.manager import FillManager
from oca.fetch.prefetch import PrefetchQueue
from oca.fetch.state import FetchState
from oca.fetch.upstream import Upstream, sources_from_config
from oca.firmware import health
from oca.firmware.box import BoxFirmware
from oca.firmware.errors import ProtocolRefused, ReleaseUnhealthy
from oca.firmware.releases import Release
from oca.http.cmsd import in_duress
from oca.protocol import codec as protocol
from oca.protocol.codec import Codec, Dispatch, Lines, ProtocolError
from oca.protocol.messages import Duress, FillAsk, Hello, Ready, Refused, Report, WorkerMessage
from oca.protocol.releases import check_release
from oca.protocol.version import LEGACY
from oca.secret_files import read_secret
from oca.serve.listeners import bind_listeners
from oca.serve.preflight import load_checked_box
from oca.serve.stall import is_stalled, own_pause, stall_after, workers_report
from oca.serve.stats import FleetStats, release_delta
from oca.storage import Store
from oca.storage.storage_owner import StorageOwner

log = logging.getLogger("oca.master")
_TICK = 0.1  # seconds between supervision rounds


def _peer_credential(config: BoxConfig) -> str | None:
    path = config.fetch.peer_credential_file
    return read_secret(path, "fetch.peer_credential_file") if path else None


def _listen(what: str, address: tuple[str, int], bind: Callable[[], list[socket.socket]]) -> list[socket.socket]:
    try:
        return bind()
    except OSError as exc:
        raise OcaError(f"cannot listen on {address[0]}:{address[1]} ({what}): {exc.strerror or exc}") from None


@dataclass(eq=False)
class WorkerProcess:
    slot: int
    generation: int
    process: subprocess.Popen[bytes]
    control: socket.socket
    started: float
    ready: asyncio.Future[None]
    fill_socket: socket.socket | None  # the master's end of the fill link, until the handshake attaches it
    lines: Lines = field(default_factory=Lines)
    codec: Codec | None = None  # the protocol version agreed on; None until its Hello
    serving: bool = False  # it said it is ready
    heard: float = 0.0  # time.monotonic() of its last report
    retiring: bool = False
    release: Release | None = None  # the release it runs (None: the master's own code)


class Master:
    def __init__(self, config_path: str, config: BoxConfig, loop_kind: str = "uvloop") -> None:
        self.config_path = config_path
        self.config = config
        self.loop_kind = loop_kind
        self.stats = FleetStats()
        self.owner = StorageOwner(config.storage)
        self.started = time.time()
        self.draining = False
        self.workers: list[WorkerProcess] = []
        self.listeners: list[socket.socket] = []
        self.generation = 0
        self._quick_deaths: dict[int, int] = {}
        self._stopped: asyncio.Future[None] | None = None
        self._admin: Any = None
        self._pending_hits: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation_lock = asyncio.Lock()  # one start-up or reload at a time
        self.fills: FillManager | None = None  # set once storage is open
        self.prefetch: PrefetchQueue  # set once storage is open (as the two below)
        self.invalidations: Invalidations
        self.title_inventory = TitleInventory()
        self._inventory_signature: tuple[object, ...] = ()
        self.egress_bps = 0
        self._egress_sample = (time.monotonic(), 0)
        self._duress = False  # what the workers were last told (CMSD `du`/`mb`, oca.http.cmsd)
        self.firmware = BoxFirmware(config.firmware, config.storage.state_dir, __version__)
        self._worker_messages = Dispatch[WorkerMessage]({Ready: self._on_ready, Report: self._take_report,
                                                         Hello: self._on_second_hello})

    # -- life cycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        # installed before anything else, so an early SIGHUP never kills the master (its default action);
        # a reload waits for the start-up to finish (the generation lock)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
        # the start-up checks (oca.serve.preflight: files, directories, ports) ran in `oca serve` already
        await self.owner.open()
        self.fills = FillManager(self.config.fetch, self.owner, FetchState(self.config.storage.state_dir),
                                 Upstream(self.config.fetch, sources_from_config(self.config.fetch)))
        fills = self.fills
        await self.owner.call(Store.watch_evictions, fills.eviction_watcher())  # `oca cache why` (issue 18)
        self.prefetch = PrefetchQueue(fills.prefetch_one, self.config.fetch.prefetch_rate,
                                      busy=lambda: fills.client_fills() > 0,
                                      credential=_peer_credential(self.config))
        self.invalidations = Invalidations(self.fills, self.config.control)
        if self.config.control.url:  # catch up before the admin port says we are here
            try:
                await asyncio.wait_for(self.invalidations.pull(), timeout=10)
            except (TimeoutError, OcaError) as exc:
                log.error("could not catch up with the control plane's invalidations: %s", exc)
        try:
            server = self.config.server
            self.listeners = _listen("data port", server.listen, lambda: bind_listeners(
                *server.listen, server.worker_count(), server.backlog))
            admin = self.config.admin.listen
            try:
                self._admin = await start_admin(AdminContext(self), *admin)
            except OSError as exc:
                raise OcaError(f"cannot listen on {admin[0]}:{admin[1]} (admin port): {exc.strerror or exc}") from None
            tasks = [loop.create_task(self._supervise())]  # from the start: a worker may die while starting
            async with self._generation_lock:
                await self._start_generation()
            await self._boot_fallback()
            host, port = self.listeners[0].getsockname()[:2]
            admin_host, admin_port = self.config.admin.listen
            log.info("oca %s serving http://%s:%d/ with %d workers; admin http://%s:%d/",
                     __version__, host, port, len(self.listeners), admin_host, admin_port)
            systemd.notify(f"READY=1\nSTATUS=serving with {len(self.listeners)} workers\nMAINPID={os.getpid()}")
            tasks.append(loop.create_task(self._housekeeping()))
            if self.config.control.url:
                tasks.append(loop.create_task(self.invalidations.pull_forever()))
            interval = systemd.watchdog_interval()
            if interval:
                tasks.append(loop.create_task(self._watchdog(interval)))
            await self._stopped
            systemd.notify("STOPPING=1")
            for task in tasks:
                task.cancel()
            await self._stop_workers(self.workers)
            await self._flush_hits()
            if self._admin is not None:
                await self._admin.cleanup()
        finally:
            for sock in self.listeners:
                sock.close()
            await self.prefetch.close()
            await self.fills.close()
            await self.owner.close()
        log.info("stopped")

    def stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            log.info("stopping: draining workers (up to %gs)", self.config.server.shutdown_timeout)
            self._stopped.set_result(None)

    async def reload(self) -> None:
        async with self._generation_lock:
            if self._stopped is not None and not self._stopped.done():
                await self._reload()

    async def _reload(self) -> None:
        systemd.notify("RELOADING=1")
        try:
            # the start-up checks, as `oca check-config --reload` runs them; the JWKS is re-read: a key
            # rotation is a reload
            fresh = self._reloadable(load_checked_box(self.config_path, reload=True))
            upstream_sources = sources_from_config(fresh.fetch)
            old_server, new_server = self.config.server, fresh.server
            old_listeners: list[socket.socket] = []
            if (old_server.listen, old_server.backlog, old_server.worker_count()) != (
                    new_server.listen, new_server.backlog, new_server.worker_count()):
                old_listeners = self.listeners
                self.listeners = _listen("data port", new_server.listen, lambda: bind_listeners(
                    *new_server.listen, new_server.worker_count(), new_server.backlog))
        except OcaError as exc:
            log.error("reload rejected, still running the old config: %s", "; ".join(str(exc).splitlines()))
            systemd.notify("READY=1")
            return
        self.config = fresh
        if self.fills is not None:
            self.fills.reconfigure(fresh.fetch, upstream_sources)
        old = [w for w in self.workers if not w.retiring]
        await self._start_generation()
        await self._stop_workers(old)
        for sock in old_listeners:
            sock.close()
        log.info("reloaded %s: generation %d serving", self.config_path, self.generation)
        systemd.notify("READY=1")

    def _reloadable(self, fresh: BoxConfig) -> BoxConfig:
        """The new config with the sections a reload cannot change (storage, admin) kept as they are."""
        for section in ("storage", "admin"):
            if getattr(fresh, section) != getattr(self.config, section):
                log.warning("%s settings changed in %s: they take effect at the next restart", section,
                            self.config_path)
                fresh = dataclasses.replace(fresh, **{section: getattr(self.config, section)})
        return fresh

    # -- workers ------------------------------------------------------------------------------------

    async def _start_generation(self, release: Release | None = None) -> None:
        self.generation += 1
        release = release or self.firmware.releases.current
        try:
            check_release(release.path, release.version)
        except ProtocolError as exc:  # nothing started: at boot, _boot_fallback tries the previous release
            log.error("not starting release %s: %s", release.version, exc)
            return
        fresh = [self._spawn(slot, release) for slot in range(len(self.listeners))]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in fresh)), timeout=30)
        except TimeoutError:
            log.error("workers of generation %d did not report ready within 30s", self.generation)

    async def _boot_fallback(self) -> None:
        """A current release none of whose workers came up at start (a box restarted into a release that no
        longer starts here) gives way to the previous one, as A/B firmware falls back at boot: a box that
        serves the release before is better than one that serves nothing. The firmware state says why."""
        current, previous = self.firmware.releases.current, self.firmware.releases.previous
        if self.serving_workers() > 0 or previous is None:
            return
        why = f"release {current.version} did not start (no worker came up)"
        log.error("%s: falling back to the previous release %s", why, previous.version)
        try:
            await self.switch_release(previous, self.config.firmware.health_timeout)
        except OcaError as exc:
            log.error("the previous release %s did not start either: %s", previous.version, exc)
            return
        self.firmware.state, self.firmware.reason = "failed", f"{why}: fell back to {previous.version}"

    async def switch_release(self, release: Release, health_timeout: float) -> None:
        """Serve `release` from a new generation of workers on the same sockets, or ReleaseUnhealthy (and the
        old generation, never stopped, keeps serving). On success the release becomes the current one."""
        async with self._generation_lock:
            if self._stopped is None or self._stopped.done():
                raise OcaError("the box is stopping: no release switch")
            old = [w for w in self.workers if not w.retiring]
            previous = self.firmware.releases.current
            try:  # before anything starts: a release this master cannot talk to never stops the old one
                check_release(release.path, release.version)
            except ProtocolError as exc:
                raise ProtocolRefused(f"{exc}; release {previous.version} keeps serving") from None
            host, port = self.listeners[0].getsockname()[:2]
            probe = functools.partial(health.probe_healthz, host, port)
            self.generation += 1
            fresh = [self._spawn(slot, release) for slot in range(len(self.listeners))]
            try:
                await health.gate(fresh, probe, release.version, health_timeout)
            except (ReleaseUnhealthy, asyncio.CancelledError):  # cancelled: the box is stopping
                await self._fall_back(fresh, old, previous)
                raise
            await self._stop_workers(old)
            try:
                await health.confirm(probe, release.version, 2 * len(self.listeners))
            except ReleaseUnhealthy:  # healthy beside the old workers, not alone: the previous release again
                await self._start_generation(previous)
                await self._stop_workers(fresh)
                raise
            self.firmware.commit(release)
            log.info("release %s serving (generation %d); previous %s", release.version, self.generation,
                     previous.version)

    async def _fall_back(self, fresh: list[WorkerProcess], old: list[WorkerProcess], previous: Release) -> None:
        """Stop a failed generation; the old workers are current again (a slot that lost its one meanwhile
        gets a new worker of the previous release)."""
        self.generation += 1
        for worker in old:
            worker.generation = self.generation
        await self._stop_workers(fresh)
        for slot in range(len(self.listeners)):
            if not any(w.slot == slot and not w.retiring and w.process.poll() is None for w in self.workers):
                self._spawn(slot, previous)

    def _spawn(self, slot: int, release: Release | None) -> WorkerProcess:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fill_ours, fill_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.set_inheritable(True)
        fill_theirs.set_inheritable(True)
        listener = self.listeners[slot]
        cmd = [sys.executable, "-m", "oca.serve.worker", "--config", os.path.abspath(self.config_path),
               "--listen-fd", str(listener.fileno()), "--control-fd", str(theirs.fileno()),
               "--fill-fd", str(fill_theirs.fileno()), "--loop", self.loop_kind]
        env = None
        if release is not None and release.path is not None:  # the release's packages shadow the installed ones
            cmd.insert(1, "-P")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (release.path, os.environ.get("PYTHONPATH")) if p)}
        process = subprocess.Popen(cmd, pass_fds=(listener.fileno(), theirs.fileno(), fill_theirs.fileno()),
                                   stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        fill_theirs.close()
        worker = WorkerProcess(slot, self.generation, process, ours, time.monotonic(), loop.create_future(),
                               fill_ours, release=release)
        if release is not None and release.path is not None and check_release(release.path,
                                                                               release.version) == LEGACY:
            # a release from before the handshake reads the config as its first line and sends no Hello
            worker.codec = Codec(LEGACY)
            ours.sendall(worker.codec.encode_config(box_config_to_raw(self.config)))
            self._background(self._attach_fill_link(worker, worker.codec))
        ours.setblocking(False)
        loop.add_reader(ours.fileno(), self._on_worker_message, worker)
        self.workers.append(worker)
        return worker

    async def _attach_fill_link(self, worker: WorkerProcess, codec: Codec) -> None:
        sock, worker.fill_socket = worker.fill_socket, None
        fills = self.fills
        if sock is None:
            return
        if fills is None:
            sock.close()
            return
        link: Link[FillAsk] = await Link.open(sock, codec, Codec.ask, fills.on_message, fills.detach,
                                              name=f"worker {worker.process.pid}")
        fills.attach(link)

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
        for line in worker.lines.feed(data):
            if worker.codec is None:
                self._greet(worker, line)
                continue
            try:
                message = worker.codec.worker_message(line)
            except ProtocolError as exc:
                log.error("worker %d: %s", worker.process.pid, exc)
                continue
            self._worker_messages(message, worker)

    def _greet(self, worker: WorkerProcess, line: bytes) -> None:
        """A worker's first line, its Hello: answer with the version to speak and the config it serves (the
        one the master validated, never a file changed since), or refuse it (it exits: a failed start)."""
        try:
            answer = protocol.answer(protocol.read_hello(line), box_config_to_raw(self.config))
        except ProtocolError as exc:
            answer = Refused(f"its first message is not a protocol handshake ({exc})", protocol.SPEAKS)
        try:
            worker.control.settimeout(5)  # the worker waits for this line; it is the only one it reads
            worker.control.sendall(protocol.encode_answer(answer))
        except OSError as exc:
            log.error("worker %d: cannot answer its handshake: %s", worker.process.pid, exc)
            return
        finally:
            worker.control.setblocking(False)
        if isinstance(answer, Refused):
            log.error("worker %d (release %s) refused: %s", worker.process.pid,
                      worker.release.version if worker.release else __version__, answer.reason)
            return
        worker.codec = Codec(answer.version)
        self._background(self._attach_fill_link(worker, worker.codec))

    def _on_second_hello(self, message: Hello, worker: WorkerProcess) -> None:
        log.error("worker %d said Hello again after its handshake: ignored", worker.process.pid)

    def _on_ready(self, message: Ready, worker: WorkerProcess) -> None:
        worker.heard = time.monotonic()
        worker.serving = True
        if not worker.ready.done():
            worker.ready.set_result(None)
        if self._duress:
            self._tell(worker, Duress(True))

    def _take_report(self, report: Report, worker: WorkerProcess) -> None:
        worker.heard = time.monotonic()
        self.stats.add(worker.process.pid, report)
        if worker.release == self.firmware.releases.current:  # not a retiring or candidate release's answers
            self.firmware.counters.add(*release_delta(report))
        for key, n in report.hits.items():
            self._pending_hits[key] = self._pending_hits.get(key, 0) + n
        if self.fills is not None:
            self.fills.hints.hits(report.hits)  # was a player-hinted prefetch used?
        for tier, error in report.io_errors:
            self._background(self._report_io_error(tier, error))
        for key, error in report.damaged:
            self._background(self._drop_damaged(key, error))

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

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run coro without waiting for it; keep a reference until it ends (the loop keeps only weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_workers(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            worker.retiring = True
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.shutdown_timeout + 5
        while any(w.process.poll() is None for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in workers:
            if worker.process.poll() is None:
                log.error("worker %d did not stop in time: killing it", worker.process.pid)
                worker.process.kill()
                worker.process.wait()
            self._reap(worker)

    def _reap(self, worker: WorkerProcess) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
        worker.control.close()
        if worker.fill_socket is not None:  # it never finished its handshake
            worker.fill_socket.close()
            worker.fill_socket = None
        self.stats.worker_gone(worker.process.pid)

    async def _supervise(self) -> None:
        # a worker reports every flush interval; one silent for ten of them (2 s at least) is stuck: kill it,
        # and the dead worker is restarted like any other
        # (oca.serve.stall: silence is counted in the master's own running time, never across its pauses)
        silence = stall_after(self.config.storage.access_flush_interval)
        previous = time.monotonic()
        while True:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            pause = own_pause(previous, now, _TICK)
            previous = now
            if pause:
                log.warning("the master did not run for %.1fs (stopped or blocked): not counted against its "
                            "workers", pause)
                for worker in self.workers:
                    worker.heard += pause
            for worker in list(self.workers):
                code = worker.process.poll()
                if code is None and worker.serving and not worker.retiring and is_stalled(now, worker.heard,
                                                                                          silence):
                    log.error("worker %d (slot %d) sent nothing for %.1fs: killing it", worker.process.pid,
                              worker.slot, now - worker.heard)
                    worker.process.kill()
                    continue
                if code is None or worker.retiring:
                    continue
                self._reap(worker)
                if not worker.ready.done():  # whoever waits for this generation must not wait for it
                    worker.ready.set_result(None)
                if worker.release == self.firmware.releases.current:
                    self.firmware.counters.restarts += 1
                quick = time.monotonic() - worker.started < 2.0
                deaths = self._quick_deaths.get(worker.slot, 0) + 1 if quick else 0
                self._quick_deaths[worker.slot] = deaths
                delay = min(5.0, 0.1 * (2 ** deaths)) if deaths else 0.0
                log.error("worker %d (slot %d) exited with %s; restarting in %.1fs",
                          worker.process.pid, worker.slot, code, delay)
                asyncio.get_running_loop().call_later(delay, self._respawn, worker.slot, worker.generation,
                                                      worker.release)

    def serving_releases(self) -> list[tuple[int, str]]:
        """(generation, release version) of each worker generation with a live serving worker: what the data
        port runs (two generations while a release or a reload switches), not the master's own code."""
        return sorted({(w.generation, w.release.version if w.release is not None else __version__)
                       for w in self.workers if w.serving and w.process.poll() is None})

    def serving_workers(self) -> int:
        """Workers of the current generation that said they are serving and are still alive."""
        return sum(1 for w in self.workers if w.serving and not w.retiring and w.process.poll() is None)

    def _respawn(self, slot: int, generation: int, release: Release | None) -> None:
        if generation == self.generation and self._stopped is not None and not self._stopped.done():
            self._spawn(slot, release)

    # -- storage housekeeping -----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        interval = self.config.storage.access_flush_interval
        next_check = 0.0
        while True:
            await asyncio.sleep(interval)
            await self._flush_hits()
            self._sample_egress()
            self._tell_duress()
            await self._refresh_inventory()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.config.storage.health_check_interval
                try:
                    await self.owner.call(Store.check_tiers)
                except Exception:
                    log.exception("tier health check failed")

    async def _refresh_inventory(self) -> None:
        """Move the per-title inventory sequence when what is stored changed (a fill, an eviction, a purge),
        so the control plane, which watches `inventory_sequence` in /status, learns new holdings by itself.
        The listing is read only when the store's object count, bytes or generation moved."""
        try:
            status = await self.owner.call(Store.status)
            tiers = cast(list[dict[str, Any]], status.get("tiers") or [])
            signature = (status.get("objects"), sum(int(t["used"]) for t in tiers), status.get("generation"))
            if signature == self._inventory_signature:
                return
            objects = await self.owner.call(Store.list, "titles/")
        except Exception:
            log.exception("refreshing the title inventory failed")
            return
        self._inventory_signature = signature
        self.title_inventory.refresh((o.key, o.size) for o in objects)

    def _sample_egress(self) -> None:
        """Bits per second sent to clients over the last few seconds (what the control plane calls load)."""
        now, sent = time.monotonic(), int(self.stats.summary().get("bytes_out", 0))
        then, before = self._egress_sample
        if now - then >= 2.0:
            self.egress_bps = max(0, int((sent - before) * 8 / (now - then)))
            self._egress_sample = (now, sent)

    def _tell_duress(self) -> None:
        """Tell the workers when the box enters or leaves duress (draining, or over http.duress_egress): their
        CMSD-Dynamic says `du` and `mb` meanwhile. A worker of a release that knows no such message ignores it."""
        duress = in_duress(self.draining, self.egress_bps, self.config.http.duress_egress)
        if duress != self._duress:
            self._duress = duress
            log.info("%s duress (CMSD): draining=%s, egress %d bit/s", "entering" if duress else "leaving",
                     self.draining, self.egress_bps)
            for worker in self.workers:
                if worker.serving:
                    self._tell(worker, Duress(duress))

    def _tell(self, worker: WorkerProcess, message: Duress) -> None:
        # a version-1 worker reads nothing after its config line; one not yet past its handshake gets it
        # when it is ready (_on_ready)
        if worker.codec is None or worker.codec.version == LEGACY:
            return
        with contextlib.suppress(OSError):  # a worker that is gone is reaped by _supervise
            worker.control.send(worker.codec.encode(message))

    async def _flush_hits(self) -> None:
        if not self._pending_hits:
            return
        hits, self._pending_hits = self._pending_hits, {}
        try:
            await self.owner.call(Store.record_hits, hits)
        except Exception:
            log.exception("recording hits failed")

    async def _watchdog(self, interval: float) -> None:
        # oca.serve.stall: the ping says the box serves, so only while a serving worker reports
        while True:
            heard = [w.heard for w in self.workers if w.serving and not w.retiring and w.process.poll() is None]
            if workers_report(time.monotonic(), heard, stall_after(self.config.storage.access_flush_interval)):
                systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
