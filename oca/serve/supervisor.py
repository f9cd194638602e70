"""The master's worker supervision: spawn workers on the listening sockets, reap them, restart them.

Rules kept here:
- One worker per slot (default: one per core), each started as its own Python process on the slot's
  SO_REUSEPORT socket, with a control socket (its handshake and reports, oca.serve.reports) and a fill link
  (its misses), attached once the handshake agreed on a protocol version (oca.protocol). A release this
  master cannot talk to is not started at all; one from before the handshake gets the bare config line.
- A worker that dies is restarted on the same socket, after the delay oca.serve.backoff decides (at once,
  or with backoff if it keeps dying at start); a worker of a generation that was retired meanwhile is
  not restarted.
- A worker that stops reporting (a stuck event loop) for oca.serve.stall's threshold of the master's own
  running time is killed, and so restarted; a worker not yet serving or retiring is never judged.
- A generation is the set of workers started together (at start, on a reload, on a release switch); the
  newest is the current one. Workers of a release run it from its slot (PYTHONPATH first, `-P` so no
  working directory shadows it); a worker with no release runs the master's own, installed code.
- Stopping workers: SIGTERM (they finish their responses), then SIGKILL past shutdown_timeout + 5 s.
- A death of a worker running the current release counts as one of its restarts (firmware release_stats).
- Every time is the monotonic clock; the decisions take it as an argument (oca.serve.backoff, oca.serve.stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from oca import __version__
from oca.config import BoxConfig, box_config_to_raw
from oca.firmware.box import BoxFirmware
from oca.firmware.releases import Release
from oca.protocol.codec import Codec, Lines, ProtocolError
from oca.protocol.releases import check_release
from oca.protocol.version import LEGACY
from oca.serve.backoff import restart_after
from oca.serve.stall import is_stalled, own_pause, stall_after
from oca.serve.stats import FleetStats

log = logging.getLogger("oca.master")
_TICK = 0.1  # seconds between supervision rounds


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


class Supervisor:
    """The workers of every generation on the master's listening sockets.

    `config` is the config workers are handed (the master replaces it on a reload); `listeners` are the
    data port's sockets, one per slot (the master binds them); `on_message` reads a worker's control
    socket when it is readable and `attach_fill_link` attaches its fill link (oca.serve.reports)."""

    def __init__(self, config_path: str, config: BoxConfig, loop_kind: str, firmware: BoxFirmware,
                 stats: FleetStats, on_message: Callable[[WorkerProcess], None],
                 attach_fill_link: Callable[[WorkerProcess, Codec], Coroutine[Any, Any, None]],
                 background: Callable[[Coroutine[Any, Any, None]], None], stopped: asyncio.Future[None]) -> None:
        self.config_path = config_path
        self.config = config
        self.loop_kind = loop_kind
        self.firmware = firmware
        self.stats = stats
        self.listeners: list[socket.socket] = []
        self.workers: list[WorkerProcess] = []
        self.generation = 0
        self._quick_deaths: dict[int, int] = {}  # slot -> its quick deaths in a row (oca.serve.backoff)
        self._on_worker_message = on_message
        self._attach_fill_link = attach_fill_link
        self._background = background
        self._stopped = stopped

    def current(self) -> list[WorkerProcess]:
        """The workers not being retired (the current generation, and a failed switch's old one again)."""
        return [w for w in self.workers if not w.retiring]

    def make_current(self, workers: list[WorkerProcess]) -> None:
        """A new generation made of `workers` (a switch that failed: the old workers are current again, and
        a dead one of theirs is restarted; a worker of the failed generation is not)."""
        self.generation += 1
        for worker in workers:
            worker.generation = self.generation

    def fill_slots(self, release: Release | None) -> None:
        """A new worker of `release` for each slot left without a live, current one."""
        for slot in range(len(self.listeners)):
            if not any(w.slot == slot and not w.retiring and w.process.poll() is None for w in self.workers):
                self.spawn(slot, release)

    async def start_generation(self, release: Release | None = None) -> None:
        self.generation += 1
        release = release or self.firmware.releases.current
        try:
            check_release(release.path, release.version)
        except ProtocolError as exc:  # nothing started: at boot, _boot_fallback tries the previous release
            log.error("not starting release %s: %s", release.version, exc)
            return
        fresh = [self.spawn(slot, release) for slot in range(len(self.listeners))]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in fresh)), timeout=30)
        except TimeoutError:
            log.error("workers of generation %d did not report ready within 30s", self.generation)

    def spawn(self, slot: int, release: Release | None) -> WorkerProcess:
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

    async def stop_workers(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            worker.retiring = True
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.shutdown_timeout + 5
        while any(w.process.poll() is None for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in list(workers):  # a copy: `workers` may be self.workers, which _reap shrinks
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

    async def supervise(self) -> None:
        """Reap, restart and judge the workers every tick, until cancelled."""
        # a worker reports every flush interval (oca.serve.stall: how long a silence makes it stuck, counted
        # in the master's own running time, never across its pauses)
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
                self._judge(worker, now, silence)

    def _judge(self, worker: WorkerProcess, now: float, silence: float) -> None:
        """Kill `worker` if it is stuck; reap it and schedule its restart if it is dead."""
        code = worker.process.poll()
        if code is None and worker.serving and not worker.retiring and is_stalled(now, worker.heard, silence):
            log.error("worker %d (slot %d) sent nothing for %.1fs: killing it", worker.process.pid,
                      worker.slot, now - worker.heard)
            worker.process.kill()  # reaped and restarted like any dead worker, at the next tick
            return
        if code is None or worker.retiring:
            return
        self._reap(worker)
        if not worker.ready.done():  # whoever waits for this generation must not wait for it
            worker.ready.set_result(None)
        if worker.release == self.firmware.releases.current:
            self.firmware.counters.restarts += 1
        restart = restart_after(self._quick_deaths.get(worker.slot, 0), worker.started, now)
        self._quick_deaths[worker.slot] = restart.streak
        log.error("worker %d (slot %d) exited with %s; restarting in %.1fs",
                  worker.process.pid, worker.slot, code, restart.delay)
        asyncio.get_running_loop().call_later(restart.delay, self._respawn, worker.slot, worker.generation,
                                              worker.release)

    def serving_releases(self) -> list[tuple[int, str]]:
        """(generation, release version) of each worker generation with a live serving worker: what the data
        port runs (two generations while a release or a reload switches), not the master's own code."""
        return sorted({(w.generation, w.release.version if w.release is not None else __version__)
                       for w in self.workers if w.serving and w.process.poll() is None})

    def serving_heard(self) -> list[float]:
        """When each serving worker of the current generation that is alive was last heard from (the
        watchdog's condition, oca.serve.stall.workers_report)."""
        return [w.heard for w in self.workers if w.serving and not w.retiring and w.process.poll() is None]

    def serving_workers(self) -> int:
        """Workers of the current generation that said they are serving and are still alive."""
        return sum(1 for w in self.workers if w.serving and not w.retiring and w.process.poll() is None)

    def _respawn(self, slot: int, generation: int, release: Release | None) -> None:
        if generation == self.generation and not self._stopped.done():
            self.spawn(slot, release)
