"""What each health round costs in process: the poller alone over fake boxes, no HTTP, no steering.

`python -m loadtest.bench_poll_rounds --boxes 20000 [--first-poll 0.5] [--seconds 8]`: starts the fake boxes
(loadtest.fake_boxes, their own processes), builds a control.health.HealthPoller over them in this process
(uvloop, the collector frozen and tuned as `oca control serve` does), runs its first poll (`poll_once`) cut
at `--first-poll` seconds as serve cuts it at twice health.timeout, then its schedule for `--seconds`, and
prints per round: seconds, polls, CPU time of this process per poll, and the connections opened (counted at
control.status_client). The warm-up before the first round (control.health `warm`), when the code has one,
is printed on its own line: its connections are not the round's. A measurement, never a pass/fail test:
`--first-poll` shorter than the first poll needs leaves boxes without a connection, as on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from control.health import HealthPoller
from control.model import Box, Fleet, Site
from control.status_client import StatusClient, Target
from loadtest import fake_boxes


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count_connections(client: StatusClient) -> list[int]:
    """A counter, bumped at every connection the client opens."""
    opened = [0]
    connect: Callable[[Target], Coroutine[Any, Any, Any]] = client._connect

    async def counted(target: Target) -> Any:
        opened[0] += 1
        return await connect(target)

    client._connect = counted  # type: ignore[method-assign]
    return opened


async def run(urls: list[str], first_poll: float, seconds: float) -> None:
    boxes = {f"b{i}": Box(f"b{i}", "lab", "http://127.0.0.1:9", url, 10_000_000_000) for i, url in enumerate(urls)}
    poller = HealthPoller(Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin"),
                          interval=2.0, timeout=1.0)
    opened = count_connections(poller.client)
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])  # control/service.py's
    wall, cpu = time.monotonic(), cpu_seconds()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(poller.poll_once(), first_poll)
    print(f"first poll: {time.monotonic() - wall:.2f} s, {cpu_seconds() - cpu:.2f} s of CPU, {poller.polls:,} "
          f"boxes polled, {opened[0]:,} connections opened, {poller.client.idle:,} kept", flush=True)
    warm = getattr(poller, "warm", None)
    if warm is not None:
        async def timed_warm() -> int:
            started, used, before = time.monotonic(), cpu_seconds(), opened[0]
            kept: int = await warm()
            print(f"warm-up: {time.monotonic() - started:.2f} s, {cpu_seconds() - used:.2f} s of CPU, "
                  f"{kept:,} kept of {opened[0] - before:,} opened, {poller.client.idle:,} kept in all", flush=True)
            return kept

        poller.warm = timed_warm  # type: ignore[method-assign]
    polled = poller.polls
    poller.start()
    while poller.polls == polled:  # the first round's figures start at its first poll, after any warm-up
        await asyncio.sleep(0.001)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cpu, polls, before, rounds = cpu_seconds(), poller.polls, opened[0], poller.rounds
        while poller.rounds == rounds and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if poller.rounds != rounds and poller.last_round is not None:
            done = poller.polls - polls
            print(f"round {poller.rounds}: {poller.last_round:.2f} s, {done:,} polls, "
                  f"{(cpu_seconds() - cpu) / max(1, done) * 1e6:.0f} µs of CPU a poll, "
                  f"{opened[0] - before:,} connections opened, {poller.skipped:,} skipped since start, "
                  f"{poller.failed_polls:,} failed since start", flush=True)
    await poller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boxes", type=int, default=20_000)
    parser.add_argument("--first-poll", type=float, default=2.0, help="seconds the first poll may take")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the schedule runs")
    parser.add_argument("--port", type=int, default=18_999, help="the fake boxes' port (one address a box)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, \
            fake_boxes.running([f"b{i}" for i in range(args.boxes)], args.port, workdir) as urls:
        uvloop.run(run(urls, args.first_poll, args.seconds))


if __name__ == "__main__":
    main()
