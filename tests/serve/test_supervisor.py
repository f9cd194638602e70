"""oca.serve.supervisor with stand-in processes: what it does with a stuck, a dead and a stopping worker (the
real processes: tests/serve/test_processes.py)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import pathlib
import signal
import socket
from typing import Any

import pytest

from oca.config import BoxConfig
from oca.config.model import FirmwareConfig
from oca.firmware.box import BoxFirmware
from oca.serve.background import BackgroundTasks
from oca.serve.stats import FleetStats
from oca.serve.supervisor import Supervisor, WorkerProcess

_PIDS = itertools.count(4000)


class StandIn:
    """The part of subprocess.Popen the supervisor uses; exits on SIGTERM unless `stubborn`."""

    def __init__(self, stubborn: bool = False) -> None:
        self.pid = next(_PIDS)
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.stubborn = stubborn

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if not self.stubborn:
            self.returncode = -sig

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        self.returncode = -signal.SIGKILL

    def wait(self) -> int | None:
        return self.returncode


def _supervisor(tmp_path: pathlib.Path) -> Supervisor:
    loop = asyncio.get_running_loop()
    firmware = BoxFirmware(FirmwareConfig(), str(tmp_path), "1.0")
    return Supervisor(str(tmp_path / "box.yaml"), BoxConfig(), "asyncio", firmware, FleetStats(),
                      lambda worker: None, _no_fill_link, BackgroundTasks(), loop.create_future())


async def _no_fill_link(worker: WorkerProcess, codec: Any) -> None:
    return None


def _worker(supervisor: Supervisor, slot: int, started: float = 0.0, **kwargs: Any) -> WorkerProcess:
    ours, theirs = socket.socketpair()
    theirs.close()
    worker = WorkerProcess(slot, supervisor.generation, StandIn(**kwargs), ours, started,  # type: ignore[arg-type]
                           asyncio.get_running_loop().create_future(), None,
                           release=supervisor.firmware.releases.current)
    supervisor.workers.append(worker)
    return worker


async def test_stopping_every_worker_reaps_every_one(tmp_path: pathlib.Path) -> None:
    supervisor = _supervisor(tmp_path)
    workers = [_worker(supervisor, slot) for slot in range(5)]
    await supervisor.stop_workers(supervisor.workers)  # the master's stop passes its own list
    assert supervisor.workers == []
    assert all(w.control.fileno() == -1 and w.retiring for w in workers)
    assert all(w.process.signals == [signal.SIGTERM] for w in workers)  # type: ignore[attr-defined]


async def test_a_silent_serving_worker_is_killed_and_one_not_yet_serving_is_not(tmp_path: pathlib.Path) -> None:
    supervisor = _supervisor(tmp_path)
    stuck, starting, retiring = (_worker(supervisor, slot) for slot in range(3))
    stuck.serving, retiring.serving, retiring.retiring = True, True, True
    for worker in (stuck, starting, retiring):
        worker.heard = 100.0
        supervisor._judge(worker, 102.5, 2.0)
    assert [w.process.signals for w in (stuck, starting, retiring)] == [[signal.SIGKILL], [], []]  # type: ignore
    assert len(supervisor.workers) == 3  # reaped at the next round, as any dead worker


@pytest.mark.parametrize("lived, streak, delay", [(0.5, 1, 0.2), (30.0, 0, 0.0)])
async def test_a_dead_worker_is_reaped_counted_and_restarted_after_the_backoff(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, lived: float, streak: int, delay: float) -> None:
    supervisor = _supervisor(tmp_path)
    supervisor.generation = 2
    dead = _worker(supervisor, 1, started=100.0)
    dead.generation = 1  # retired meanwhile: its restart must not start anything here
    dead.process.returncode = 1  # type: ignore[misc]
    with caplog.at_level(logging.ERROR, "oca.master"):
        supervisor._judge(dead, 100.0 + lived, 2.0)
    assert supervisor.workers == [] and dead.ready.done()
    assert supervisor._quick_deaths == {1: streak}
    assert supervisor.firmware.counters.restarts == 1  # a worker of the current release
    assert f"exited with 1; restarting in {delay:.1f}s" in caplog.text
