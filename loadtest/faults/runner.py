"""`python -m loadtest.faults`: every fault scenario against real processes, one table, a verdict per row.

    python -m loadtest.faults [--quick] [--scenario NAME ...] [--json FILE] [--keep] [--list]

Each scenario (loadtest/faults/{storage,origin,clients,fleet}.py) starts what it needs — boxes (`oca serve`),
the fault-injecting origin (loadtest/origin.py), the lab (origin, control plane, 3 boxes) for the fleet
scenarios — injects its fault, drives clients, and fills in its row; the runner judges the row (report.py)
and stops everything the scenario started. The exit code is 1 if any row fails, 2 on bad usage, 0 otherwise.

Rules it keeps:
- Bounded: every load has a count and a deadline; everything binds to 127.0.0.0/8.
- Every process started is killed at the end of its scenario (the lab at the end of the run), tmpfs mounts
  are unmounted, and the run dir is removed unless --keep, on success, failure, Ctrl-C and SIGTERM alike.
- Progress on stderr; the table (and nothing else) on stdout. Only `main` prints or exits.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from loadtest import harness
from loadtest.faults import clients, fleet, origin, storage
from loadtest.faults.common import Findings, Say, Scenario, Skip, scenario_ctx
from loadtest.faults.report import FAIL, Row, judge, render, summary

SCENARIOS: list[Scenario] = [*storage.SCENARIOS, *origin.SCENARIOS, *clients.SCENARIOS, *fleet.SCENARIOS]
DESCRIPTION = ("every fault scenario (storage, origin, clients, fleet) against real box, origin and control-plane "
               "processes; one table; exit 1 if any row fails")


def run_one(scenario: Scenario, run_dir: str, shared: dict[str, Any], say: Say) -> Row:
    found = Findings()
    error = skipped = None
    started = time.monotonic()
    tracebacks: list[str] = []
    with scenario_ctx(os.path.join(run_dir, scenario.name), say, shared) as ctx:
        try:
            if scenario.lab:
                fleet.use_lab(ctx)
            scenario.run(ctx, found)
        except Skip as exc:
            skipped = str(exc)
        except Exception as exc:  # a scenario that breaks is a failed row, and the run goes on
            error = f"{type(exc).__name__}: {exc}"
            found.notes.append(traceback.format_exc())
        finally:
            tracebacks = ctx.tracebacks()
    row = judge(scenario.name, scenario.group, found, tracebacks, error, skipped, time.monotonic() - started)
    short = run_dir.rstrip("/") + "/"  # paths in the table relative to the run dir, which is gone by then
    row.injected, row.clients, row.lost, row.recovery = (text.replace(short, "") for text in (
        row.injected, row.clients, row.lost, row.recovery))
    row.why = [text.replace(short, "") for text in row.why]
    say(f"{scenario.name}: {row.verdict} in {row.seconds:.1f}s" + (f" ({'; '.join(row.why)})" if row.why else ""))
    return row


def run(scenarios: Sequence[Scenario], run_dir: str, say: Say) -> list[Row]:
    shared: dict[str, Any] = {"run_dir": run_dir}
    rows = []
    try:
        for scenario in scenarios:
            say(f"{scenario.name}: starting")
            rows.append(run_one(scenario, run_dir, shared, say))
    finally:
        fleet.stop_lab(shared)
    return rows


def machine_line(quick: bool) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: {harness.cpu_name()}, nproc {len(os.sched_getaffinity(0))}, kernel {platform.release()}, "
            f"python {platform.python_version()}; {'--quick' if quick else 'full run'}; {now}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.faults", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="the cheap, high-value subset (under 3 minutes): " +
                             ", ".join(s.name for s in SCENARIOS if s.quick))
    parser.add_argument("--scenario", action="append", metavar="NAME", help="run this one (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the run dir (configs, logs)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> list[Scenario] | str:
    by_name = {s.name: s for s in SCENARIOS}
    if args.scenario:
        unknown = [n for n in args.scenario if n not in by_name]
        if unknown:
            return f"unknown scenario {', '.join(unknown)}; known: {', '.join(by_name)}"
        return [by_name[n] for n in args.scenario]
    return [s for s in SCENARIOS if s.quick or not args.quick]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:24} {s.group:8} {'quick' if s.quick else ''}")
        return 0
    chosen = select(args)
    if isinstance(chosen, str):
        print(f"faults: {chosen}", file=sys.stderr)
        return 2
    with harness.harness_run("faults", args.keep) as work:
        try:
            rows = run(chosen, work.workdir, work.progress)
        except KeyboardInterrupt:
            print("faults: interrupted; everything started was stopped", file=sys.stderr)
            return 130
        seconds = work.elapsed()
    print(machine_line(args.quick))
    print()
    print(render(rows))
    print()
    print(f"{summary(rows)}; wall time {seconds:.0f}s")
    if args.json:
        harness.write_json(args.json, {"machine": machine_line(args.quick), "quick": args.quick,
                                       "seconds": round(seconds, 1), "rows": [r.as_json() for r in rows]})
    return 1 if any(r.verdict == FAIL for r in rows) else 0
