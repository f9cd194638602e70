"""`python -m loadtest.bench_rollout`: a firmware roll-out of the lab's boxes while simulated players run — how
long it took, how it ended, and whether any player request failed.

`python -m loadtest.bench_rollout [--devices 60] [--boxes 5] [--bake 5s] [--waves 1,2,100%]
[--max-unavailable 1] [--quick] [--out out/] [--keep]` builds a wheel of this checkout reporting the next micro
version, starts a lab (origin, control plane, `--boxes` boxes in two sites, synthetic titles), signs a bundle of
the wheel with the lab's firmware key, starts the players (`loadtest.devices.players`: ABR sessions with
content steering, counting every request), lets them ramp up, runs the real `oca firmware roll BUNDLE --watch
--json` against the lab's control plane, keeps the players a few seconds on the new release, and stops. It
prints the figures table and writes it, with the raw counts, to `--out`/bench_rollout.json.

Rules it keeps:
- A failed request is an answer with status >= 500 or none at all (players.py's rule); the boxes' and the
  control plane's are counted apart. The exit code is the verdict on what a roll-out promises: 0 only when
  it ended done, every box reports the new version and no request to a box failed; 1 otherwise; 2 when the
  bench could not set up (no checkout to build, the lab did not start).
- The load generator is one Python process sharing the machine with the lab: its own CPU and how late its
  devices wake from their sleeps are reported, so a failure caused by the generator (its own timeouts) is
  told apart from one the roll-out caused.
- Only this module prints or exits.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from packaging.version import Version

from loadtest.devices.players import Tally
from loadtest.harness import Figure, Run, cpu_name, harness_run, render_figures, write_json
from loadtest.lab_load import FleetWatch, json_documents, players_for
from oca import __version__
from oca.config.units import parse_duration
from oca.errors import OcaError
from oca.firmware.build import build_wheel, pack_bundle
from oca.firmware.keys import load_signing_key
from oca.lab import Lab, LabConfig, LabError
from oca.lab.procs import http_get

DESCRIPTION = "a firmware roll-out of the lab's boxes under simulated players; prints a Markdown table."
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCA = os.path.join(os.path.dirname(sys.executable), "oca")
RUNNING = Version(__version__)
NEXT = f"{RUNNING.major}.{RUNNING.minor}.{RUNNING.micro + 1}"
TITLE_SECONDS = 30
# a generator whose devices wake this late, or that burns this much of its one GIL-bound core, is measuring
# itself: its requests queue behind its own threads
LAG_LIMIT = 0.5
CPU_LIMIT = 0.9


@dataclass(frozen=True)
class Rollout:
    """What `oca firmware roll --watch --json` ended with."""

    state: str  # done, halted, aborted; "error" when the CLI printed no roll-out
    reason: str
    seconds: float  # the CLI's wall time: upload, every step, the last poll
    waves: list[int]  # boxes per wave
    view: dict[str, Any]
    exit_code: int


def roll(lab: Lab, bundle: str, args: argparse.Namespace) -> Rollout:
    command = [OCA, "firmware", "roll", bundle, "--waves", args.waves, "--max-unavailable", args.max_unavailable,
               "--bake", f"{args.bake:g}s", "--watch", "--json", "--control", lab.control_url,
               "--token-file", lab.paths.operator_token]
    # every box: drain, upload, upgrade (a release's own health gate: up to 20 s), bake, gate, undrain
    timeout = 120 + len(lab.boxes) * (args.bake + 60)
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Rollout("error", f"not over within {timeout:.0f}s", time.monotonic() - started, [], {}, -1)
    took = time.monotonic() - started
    try:
        views = json_documents(done.stdout)
    except ValueError:
        views = []
    if not views:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return Rollout("error", why[0], took, [], {}, done.returncode)
    view = views[-1]
    sizes = [sum(len(batch) for batch in wave["batches"]) for wave in view.get("waves", [])]
    return Rollout(view["state"], view.get("reason") or "", took, sizes, view, done.returncode)


def versions(lab: Lab) -> dict[str, str]:
    """Box id -> the version its admin /status reports ("?" when it does not answer)."""
    out = {}
    for box in lab.boxes:
        try:
            status, body = http_get(box.admin_url + "/status", lab.box_token, timeout=5)
            out[box.id] = str(json.loads(body)["version"]) if status == 200 else f"? ({status})"
        except (OSError, ValueError, KeyError):
            out[box.id] = "?"
    return out


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU so far, from /proc/stat; (0, 0) where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class Load:
    """The generator's own cost over the players' run."""

    seconds: float  # the players' wall time
    cpu: float  # this process's CPU seconds / wall seconds (1.0 = one core)
    machine: float | None  # share of all CPUs busy, or None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def measure(run: Run, args: argparse.Namespace) -> tuple[Rollout, Tally, FleetWatch, Load, dict[str, str]]:
    wheel = build_wheel(ROOT, NEXT, os.path.join(run.workdir, "wheel"))
    run.progress(f"wheel of {NEXT} built")
    config = LabConfig(workdir=os.path.join(run.workdir, "lab"), titles=args.titles, boxes=args.boxes,
                       duration=TITLE_SECONDS, synthetic=True, control_port=0, box_ports=0)
    with Lab(config, say=run.progress) as lab:
        bundle = os.path.join(run.workdir, f"oca-{NEXT}.bundle")
        pack_bundle(wheel, NEXT, load_signing_key(lab.paths.firmware_key), bundle)
        run.progress(f"lab up ({len(lab.boxes)} boxes, titles {', '.join(lab.titles)}); bundle signed; "
                     f"{args.devices} devices starting over {args.ramp:g}s")
        busy0, total0 = machine_busy()
        cpu0, wall0 = time.process_time(), time.monotonic()
        with FleetWatch(lab) as watch, players_for(lab, args.devices, args.ramp / args.devices) as players:
            time.sleep(args.ramp + 1)  # every device under way before the first drain
            run.progress(f"rolling {__version__} -> {NEXT}: waves {args.waves}, bake {args.bake:g}s")
            rollout = roll(lab, bundle, args)
            run.progress(f"roll-out {rollout.state} in {rollout.seconds:.1f}s")
            time.sleep(args.tail)  # and a while on the new release everywhere
            cpu1, wall1 = time.process_time(), time.monotonic()
        busy1, total1 = machine_busy()
        load = Load(wall1 - wall0, (cpu1 - cpu0) / (wall1 - wall0),
                    (busy1 - busy0) / (total1 - total0) if total1 > total0 else None)
        found = versions(lab)
        for line in lab.check():
            run.progress(f"lab: {line}")
    return rollout, players.tally, watch, load, found


# --- the table ------------------------------------------------------------------------------------------


def _counts(counter: Counter[int]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in sorted(counter.items())) or "none"


def _verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def rows(args: argparse.Namespace, rollout: Rollout, tally: Tally, watch: FleetWatch, load: Load,
         found: dict[str, str]) -> list[Figure]:
    def box(target: str) -> bool:
        return target != "control"

    box_requests = sum(n for target, n in tally.requests.items() if box(target))
    control_requests = tally.requests.get("control", 0)
    box_failed, control_failed = len(tally.failed(targets=box)), len(tally.failed(targets=lambda t: not box(t)))
    statuses: dict[bool, Counter[int]] = {True: Counter(), False: Counter()}
    for (target, status), n in tally.statuses.items():
        statuses[box(target)][status] += n
    # a box the lab put no title on gets players only when steering has nothing better: shown, not hidden
    per_box = ", ".join(f"{b} {tally.requests.get(b, 0)}" for b in sorted(found))
    box_seconds = [s for target, values in tally.seconds.items() if box(target) for s in values]
    lag99, lag_max = percentile(tally.lags, 0.99), max(tally.lags, default=0.0)
    played = tally.play_time + tally.stall_time
    unavailable = int(args.max_unavailable) if args.max_unavailable.isdigit() else None
    machine = f"; machine {100 * load.machine:.0f}% busy" if load.machine is not None else ""
    generator_ok = load.cpu < CPU_LIMIT and lag99 < LAG_LIMIT
    return [
        Figure("players", f"{args.devices} devices (half keep-alive), {args.titles} titles of {TITLE_SECONDS}s, "
               f"{load.seconds:.0f}s", "-", "-"),
        Figure("roll-out", f"{rollout.seconds:.1f}s: {len(found)} boxes in waves of "
               f"{', '.join(map(str, rollout.waves)) or '?'} ({args.waves}), max unavailable "
               f"{args.max_unavailable}, bake {args.bake:g}s", "-", "-"),
        Figure("outcome", rollout.state + (f" ({rollout.reason})" if rollout.reason else ""), "done",
               _verdict(rollout.state == "done")),
        Figure("player requests", f"{tally.total()} ({tally.total() / load.seconds:.0f}/s): boxes {box_requests} "
               f"({per_box}), control plane {control_requests}", "-", "-"),
        Figure("failed requests, boxes", str(box_failed), "0", _verdict(box_failed == 0)),
        Figure("failed requests, control plane", str(control_failed), "0 (not in the exit code)",
               _verdict(control_failed == 0)),
        Figure("statuses", f"boxes {_counts(statuses[True])}; control plane {_counts(statuses[False])}", "-", "-"),
        Figure("sessions, segments", f"{tally.sessions} sessions, {tally.segments} segments, rebuffering "
               f"{100 * tally.stall_time / played if played else 0:.1f}% of play time, {tally.retried} retried on "
               f"an idle keep-alive connection, playback errors "
               f"{sum(tally.playback_errors.values())}", "-", "-"),
        Figure("box request time", f"p50 {1000 * percentile(box_seconds, 0.5):.0f} ms, p99 "
               f"{1000 * percentile(box_seconds, 0.99):.0f} ms, max {1000 * max(box_seconds, default=0):.0f} ms",
               "-", "-"),
        Figure("most boxes out of steering at once", f"{watch.most_out} (drained by the roll-out: "
               f"{watch.most_drained}; {len(watch.drained)} boxes drained in all)",
               f"≤ {unavailable}" if unavailable is not None else "-",
               _verdict(watch.most_out <= unavailable) if unavailable is not None else "-"),
        Figure("box versions at the end", ", ".join(f"{b} {v}" for b, v in sorted(found.items())), f"all {NEXT}",
               _verdict(bool(found) and set(found.values()) == {NEXT})),
        Figure("load generator (this process)", f"CPU {100 * load.cpu:.0f}% of a core, wake-up lag p99 "
               f"{1000 * lag99:.0f} ms, max {1000 * lag_max:.0f} ms{machine}",
               f"< {100 * CPU_LIMIT:.0f}% of a core, lag p99 < {1000 * LAG_LIMIT:.0f} ms",
               "meets" if generator_ok else "misses: the generator measures itself"),
    ]


def passed(rollout: Rollout, tally: Tally, found: dict[str, str]) -> bool:
    return (rollout.state == "done" and not tally.failed(targets=lambda target: target != "control")
            and bool(found) and set(found.values()) == {NEXT})


# --- output and command line ----------------------------------------------------------------------------


def machine_line(args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: {cpu_name()}, nproc {len(os.sched_getaffinity(0))}, python {platform.python_version()}; "
            f"loopback lab of {args.boxes} boxes (1 worker each), control plane and origin; players in one "
            f"process; roll-out {__version__} -> {NEXT}; {now}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_rollout", description=DESCRIPTION)
    parser.add_argument("--devices", type=int, help="simulated players (default 60; quick 10)")
    parser.add_argument("--boxes", type=int, default=5, help="boxes in the lab (default 5)")
    parser.add_argument("--titles", type=int, default=2, help="synthetic titles in the lab (default 2)")
    parser.add_argument("--bake", help="how long each batch runs before its gate (default 5s; quick 1s)")
    parser.add_argument("--waves", default="1,2,100%", help="cumulative wave sizes (default 1,2,100%%)")
    parser.add_argument("--max-unavailable", default="1", help="boxes out of service at once (default 1)")
    parser.add_argument("--quick", action="store_true", help="10 devices, bake 1s, shorter ramp and tail")
    parser.add_argument("--out", default="out", help="directory of bench_rollout.json (default out/)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (the lab's logs)")
    args = parser.parse_args(argv)
    args.devices = args.devices if args.devices is not None else (10 if args.quick else 60)
    try:
        args.bake = parse_duration(args.bake if args.bake is not None else ("1s" if args.quick else "5s"))
    except ValueError as exc:
        parser.error(f"--bake {args.bake}: {exc}")
    args.ramp, args.tail = (3.0, 2.0) if args.quick else (5.0, 3.0)
    if args.devices < 1:
        parser.error(f"--devices {args.devices}: must be at least 1")
    if args.boxes < 2 or args.titles < 1:
        parser.error(f"--boxes {args.boxes} --titles {args.titles}: at least 2 boxes (one per site) and 1 title")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(OCA, os.X_OK):
        print(f"bench_rollout: {OCA} not found; install oca with `make` (pip install -e .) in this venv",
              file=sys.stderr)
        return 2
    with harness_run("bench_rollout", args.keep) as run:
        try:
            rollout, tally, watch, load, found = measure(run, args)
        except (OcaError, LabError) as exc:
            print(f"bench_rollout: {exc}", file=sys.stderr)
            return 2
    table = rows(args, rollout, tally, watch, load, found)
    print(machine_line(args))
    print()
    print(render_figures(table))
    failures = tally.failed()
    for line in failures[:10]:
        print(f"failed: {line}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "bench_rollout.json"), {
        "machine": machine_line(args), "rows": [r.as_json() for r in table],
        "rollout": {"state": rollout.state, "reason": rollout.reason, "seconds": rollout.seconds,
                    "waves": rollout.waves, "exit_code": rollout.exit_code, "view": rollout.view},
        "players": {"devices": args.devices, "requests": dict(tally.requests),
                    "statuses": [[t, s, n] for (t, s), n in sorted(tally.statuses.items())],
                    "failures": failures[:100], "sessions": tally.sessions, "segments": tally.segments,
                    "retried": tally.retried, "reconnected": tally.reconnected,
                    "playback_errors": dict(tally.playback_errors)},
        "generator": asdict(load), "versions": found, "most_out": watch.most_out,
        "most_drained": watch.most_drained})
    ok = passed(rollout, tally, found)
    run.progress("done" if ok else "FAILED: see the table (rerun with --keep for the lab's logs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
