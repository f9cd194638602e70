"""`python -m loadtest.slowloris`: slowloris connections against a box while wrk fetches its objects.

A box (`oca serve`, 2 workers, the given header_timeout) serves a set of small objects on 127.0.0.1.
First wrk alone fetches them for `duration` seconds (the baseline). Then N slowloris connections are
opened, each sending a partial request head and one more header line every `trickle` seconds, never the
blank line that would end it; when the box closes one, it is opened again, so N stay open throughout.
Once all N are up, wrk runs again for `duration` seconds. Then no new ones are opened and the harness
waits for the box to close the rest. It prints two Markdown tables: the normal clients' numbers beside
the baseline, and when the box closed the slowloris connections, relative to header_timeout.

Rules it keeps:
- A measurement, never a pass/fail test: nothing here asserts (tests/loadtest/test_slowloris.py does,
  on a small run). Every phase is bounded in time; wrk by its own -d and a subprocess timeout.
- Everything binds and connects to 127.0.0.1. RLIMIT_NOFILE is raised (up to the hard limit) before
  anything starts, so the box, which inherits it, and the harness both have room for the connections.
- A slowloris connection's lifetime runs from its first byte to the box's close (EOF or reset), on the
  harness's clock: it includes any wait in the listen backlog, so it can only overstate the box's delay.
- The box is always stopped (ExitStack), on errors, Ctrl-C and SIGTERM alike. Only `main` prints or exits.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import itertools
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import uvloop
import yaml

from loadtest import harness
from loadtest.bench import (
    BenchError,
    ObjectSet,
    OcaBox,
    Progress,
    verify_same_objects,
    write_objects,
)
from loadtest.ports import free_ports
from loadtest.wrk import WrkError, WrkResult, run_wrk

OBJECTS = ObjectSet("64KiB", 64 << 10, 200, first_title=1, per_title=50)
WRK_THREADS = 2
SWEEP = 1.0  # the box checks timeouts once a second (oca.serve.server)
DESCRIPTION = ("N slowloris connections against an oca box on loopback while wrk fetches objects; prints the "
               "normal clients' latency beside a run without them, and when the box closed the slowloris ones.")


@dataclass(frozen=True)
class Settings:
    connections: int = 2000
    duration: float = 20.0
    header_timeout: float = 5.0
    trickle: float = 2.0  # seconds between the header lines a slowloris connection sends
    workers: int = 2
    wrk_connections: int = 32
    slack: float = 2.0  # beyond header_timeout + one sweep, before a connection counts as overdue

    @property
    def close_bound(self) -> float:
        """The latest a box that keeps its header_timeout may close a slowloris connection."""
        return self.header_timeout + SWEEP + self.slack


# --- the slowloris side ------------------------------------------------------------------------------


@dataclass
class Attack:
    """What happened to the slowloris connections."""

    lifetimes: list[float] = field(default_factory=list)  # first byte -> closed by the box, seconds
    answered_408: int = 0
    resets: int = 0  # closed with RST rather than FIN (counted in lifetimes too)
    connect_errors: int = 0
    still_open: list[float] = field(default_factory=list)  # ages of those the box had not closed at the end
    open_now: int = 0
    held_min: int | None = None  # open at once while wrk ran
    held_max: int = 0
    harness_cpu: float = 0.0  # CPU seconds this process spent while the slowloris connections ran

    @property
    def opened(self) -> int:
        return len(self.lifetimes) + len(self.still_open)

    def overdue(self, bound: float) -> int:
        """Connections the box kept (or is keeping) past `bound` seconds."""
        return sum(t > bound for t in self.lifetimes) + sum(t > bound for t in self.still_open)


async def _slowloris(port: int, settings: Settings, attack: Attack, stop: asyncio.Event, delay: float) -> None:
    """One slot: a connection that never finishes its head, opened again each time the box closes it."""
    await asyncio.sleep(delay)
    first = f"GET /{OBJECTS.keys()[0]} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            attack.connect_errors += 1
            await asyncio.sleep(settings.trickle)
            continue
        started = time.monotonic()
        attack.open_now += 1
        answer = b""
        try:
            writer.write(first)
            lines = 0
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(4096), settings.trickle)
                except TimeoutError:
                    lines += 1
                    writer.write(b"X-Slow-%d: %d\r\n" % (lines, lines))  # never the blank line
                    continue
                if not data:
                    break
                answer += data
        except (ConnectionResetError, BrokenPipeError):
            attack.resets += 1
        except asyncio.CancelledError:
            attack.still_open.append(time.monotonic() - started)
            raise
        finally:
            attack.open_now -= 1
            writer.close()
        attack.lifetimes.append(time.monotonic() - started)
        if answer.startswith(b"HTTP/1.1 408 "):
            attack.answered_408 += 1


async def _watch(attack: Attack, stop: asyncio.Event) -> None:
    """Sample how many slowloris connections are open at once."""
    while not stop.is_set():
        now = attack.open_now
        attack.held_min = now if attack.held_min is None else min(attack.held_min, now)
        attack.held_max = max(attack.held_max, now)
        await asyncio.sleep(0.1)


# --- the run -----------------------------------------------------------------------------------------


@dataclass
class Report:
    settings: Settings
    baseline: WrkResult
    under_attack: WrkResult
    attack: Attack

    def as_json(self) -> dict[str, Any]:
        lifetimes = self.attack.lifetimes
        return {
            "settings": asdict(self.settings),
            "normal": {name: {"requests": load.requests, "requests_per_sec": load.requests_per_sec,
                              "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "errors": vars(load.errors)}
                       for name, load in (("baseline", self.baseline), ("slowloris", self.under_attack))},
            "slowloris": {
                "opened": self.attack.opened, "closed_by_box": len(lifetimes),
                "answered_408": self.attack.answered_408, "resets": self.attack.resets,
                "connect_errors": self.attack.connect_errors, "harness_cpu_s": round(self.attack.harness_cpu, 2),
                "held_min": self.attack.held_min,
                "held_max": self.attack.held_max, "still_open": len(self.attack.still_open),
                "overdue": self.attack.overdue(self.settings.close_bound),
                "close_bound_s": self.settings.close_bound,
                "time_to_close_s": {name: round(value, 3) for name, value in percentiles(lifetimes).items()},
                "histogram": [[label, count] for label, count in histogram(lifetimes, self.settings.header_timeout)],
            },
        }


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; the soft limit now in force (BenchError if short)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchError(f"RLIMIT_NOFILE is {soft} (hard limit {hard}); this run needs about {needed}")
    return int(soft)


class SlowlorisBox(OcaBox):
    """bench's box, with the header_timeout under test and no tokens."""

    def __init__(self, oca: str, workdir: str, port: int, admin_port: int, settings: Settings) -> None:
        super().__init__(oca, workdir, port, admin_port, settings.workers,
                         capacity=2 * OBJECTS.size * OBJECTS.count + (64 << 20))
        self.header_timeout = settings.header_timeout

    def write_config(self, access_log: str, *args: Any, **kwargs: Any) -> None:
        super().write_config(access_log, *args, **kwargs)
        with open(self.config_path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
        config["server"]["header_timeout"] = f"{round(self.header_timeout * 1000)}ms"
        config.setdefault("tokens", {})["required"] = False  # the normal clients fetch plain paths
        with open(self.config_path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)


async def _attack_while_loaded(port: int, settings: Settings, load: Callable[[], WrkResult],
                               progress: Progress) -> tuple[WrkResult, Attack]:
    attack = Attack()
    stop = asyncio.Event()
    ramp = min(settings.header_timeout, 2.0)  # staggered starts: reconnections do not come in one wave
    slots = [asyncio.create_task(_slowloris(port, settings, attack, stop, ramp * i / settings.connections))
             for i in range(settings.connections)]
    deadline = time.monotonic() + ramp + 10
    while attack.open_now < settings.connections * 0.98 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    progress(f"{attack.open_now} slowloris connections open ({attack.connect_errors} connect errors); "
             f"wrk for {settings.duration:.0f}s")
    stopped_watching = asyncio.Event()
    watcher = asyncio.create_task(_watch(attack, stopped_watching))
    try:
        result = await asyncio.get_running_loop().run_in_executor(None, load)
    finally:
        stopped_watching.set()
        stop.set()  # no new connections; the box closes the open ones within its header_timeout
        progress(f"wrk done; waiting up to {settings.close_bound + 1:.0f}s for the box to close "
                 f"{attack.open_now} slowloris connections")
        _, pending = await asyncio.wait(slots, timeout=settings.close_bound + 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, watcher, return_exceptions=True)
    return result, attack


def run(settings: Settings, tools: dict[str, str], workdir: str, progress: Progress) -> Report:
    """The whole scenario: box up, baseline, slowloris with load, box down."""
    raise_fd_limit(settings.connections + settings.wrk_connections + 512)
    root = os.path.join(workdir, "objects")
    paths_file = write_objects(root, [OBJECTS])[OBJECTS.name]
    port, admin_port = free_ports(2)
    box = SlowlorisBox(tools["oca"], workdir, port, admin_port, settings)
    box.write_config(os.path.join(workdir, "oca-access.log"))
    box.import_dir(root)
    with contextlib.ExitStack() as stack:
        stack.enter_context(box)
        box.start()
        verify_same_objects({"oca": box.url}, root, [OBJECTS])
        progress(f"oca on {box.url}, {settings.workers} workers, header_timeout {settings.header_timeout:g}s; "
                 f"baseline: wrk for {settings.duration:.0f}s")

        def load() -> WrkResult:
            return run_wrk(tools["wrk"], box.url, paths_file, connections=settings.wrk_connections,
                           seconds=settings.duration, threads=WRK_THREADS)

        baseline = load()
        progress(f"baseline: {baseline.requests_per_sec:,.0f} req/s, p99 {_ms(baseline.p99_ms)}; "
                 f"opening {settings.connections} slowloris connections")
        cpu = time.process_time()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # a cheaper attacker
            under_attack, attack = runner.run(_attack_while_loaded(port, settings, load, progress))
        attack.harness_cpu = time.process_time() - cpu
    return Report(settings, baseline, under_attack, attack)


# --- output ------------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """min, p50, p90, p99, max (nearest rank); empty for no values."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"min": ordered[0], "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1]}


def histogram(lifetimes: Sequence[float], header_timeout: float) -> list[tuple[str, int]]:
    """Counts of time-to-close in bins relative to header_timeout (ht): below it, then ht+0 .. ht+3 s, above."""
    edges = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    labels = ["< ht", *(f"ht+{lo:g}s .. ht+{hi:g}s" for lo, hi in itertools.pairwise(edges)), f">= ht+{edges[-1]:g}s"]
    counts = [0] * len(labels)
    for t in lifetimes:
        counts[bisect.bisect_right(edges, t - header_timeout)] += 1
    return list(zip(labels, counts, strict=True))


def render_tables(report: Report) -> str:
    s, attack = report.settings, report.attack
    lines = ["| normal clients (wrk) | req/s | p50 | p99 | requests | errors |", "|---|---:|---:|---:|---:|---|"]
    for name, r in (("baseline (no slowloris)", report.baseline),
                    (f"with {s.connections:,} slowloris", report.under_attack)):
        lines.append(f"| {name} | {r.requests_per_sec:,.0f} | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | "
                     f"{r.requests:,} | {r.errors.describe()} |")
    stats = percentiles(attack.lifetimes)
    lines += ["", "| slowloris | opened | closed by the box | answered 408 | held open | time to close p50 | "
              f"p99 | max | overdue (> ht+{s.close_bound - s.header_timeout:g}s) | connect errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    held = f"{attack.held_min if attack.held_min is not None else 0:,}-{attack.held_max:,}"
    lines.append(f"| header_timeout {s.header_timeout:g}s, a line every {s.trickle:g}s | {attack.opened:,} | "
                 f"{len(attack.lifetimes):,} | {attack.answered_408:,} | {held} | {_s(stats.get('p50'))} | "
                 f"{_s(stats.get('p99'))} | {_s(stats.get('max'))} | {attack.overdue(s.close_bound):,} | "
                 f"{attack.connect_errors:,} |")
    lines += ["", "| time to close | slowloris connections |", "|---|---:|"]
    lines += [f"| {label} | {count:,} |" for label, count in histogram(attack.lifetimes, s.header_timeout)]
    if attack.still_open:
        lines.append(f"| still open at the end | {len(attack.still_open):,} |")
    lines += ["", f"The slowloris clients ran in this harness, which used {attack.harness_cpu:.1f} CPU seconds "
                  f"meanwhile, on the same machine as the box and wrk."]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def machine_line(settings: Settings) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: nproc {len(os.sched_getaffinity(0))}, kernel {platform.release()}, "
            f"python {platform.python_version()}, oca workers {settings.workers}, {now}; "
            f"wrk -t{WRK_THREADS} -c{settings.wrk_connections}, {settings.duration:g}s per run, "
            f"{OBJECTS.count} objects of {OBJECTS.name}")


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m loadtest.slowloris", description=DESCRIPTION)
    parser.add_argument("--connections", type=int, help=f"slowloris connections (default {defaults.connections}; "
                                                        "quick 200)")
    parser.add_argument("--duration", type=float, help=f"seconds per wrk run (default {defaults.duration:g}; "
                                                       "quick 5)")
    parser.add_argument("--header-timeout", type=float, help=f"the box's server.header_timeout in seconds "
                                                             f"(default {defaults.header_timeout:g}; quick 2)")
    parser.add_argument("--trickle", type=float, help="seconds between a slowloris connection's header lines "
                                                      "(default: 0.4 x header timeout)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="box workers (default 2)")
    parser.add_argument("--wrk-connections", type=int, default=defaults.wrk_connections,
                        help=f"wrk's connections (default {defaults.wrk_connections})")
    parser.add_argument("--quick", action="store_true", help="200 connections, header timeout 2s, 5s runs")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (config, logs, objects)")
    parser.add_argument("--oca", default=os.path.join(os.path.dirname(sys.executable), "oca"),
                        help="the oca executable (default: next to this python)")
    args = parser.parse_args(argv)
    for name in ("connections", "duration", "header_timeout", "trickle", "workers", "wrk_connections"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} {value}: must be above 0")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    header_timeout = args.header_timeout or (2.0 if args.quick else Settings.header_timeout)
    return Settings(
        connections=args.connections or (200 if args.quick else Settings.connections),
        duration=args.duration or (5.0 if args.quick else Settings.duration),
        header_timeout=header_timeout, trickle=args.trickle or 0.4 * header_timeout,
        workers=args.workers, wrk_connections=args.wrk_connections)


def find_tools(oca: str) -> dict[str, str] | str:
    return harness.find_tools("slowloris", oca, {"wrk": "/usr/bin/wrk"})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = find_tools(args.oca)
    if isinstance(tools, str):
        print(tools, file=sys.stderr)
        return 2
    settings = settings_from(args)
    with harness.harness_run("slowloris", args.keep) as work:
        try:
            report = run(settings, tools, work.workdir, work.progress)
        except (BenchError, WrkError) as exc:
            print(f"slowloris: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("slowloris: interrupted; box stopped", file=sys.stderr)
            return 130
    print(machine_line(settings))
    print()
    print(render_tables(report))
    if args.json:
        harness.write_json(args.json, report.as_json())
    work.progress(f"done in {work.elapsed():.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
