"""`python -m loadtest.bench_replicas`: a control-plane replica SIGKILLed under load — issue 14's "Done when".

It starts a lab with two control-plane replicas (`--control-replicas 2`: the lab's PostgreSQL, HAProxy on the
control URL), then locust devices (`loadtest/locustfile.py`, as `make loadtest` runs them; default 100) and
one real hls.js player (the lab's /lab page in Debian's headless Chromium), all through HAProxy. After a
warm-up it SIGKILLs replica r1, waits, restarts it, waits, stops, and prints a Markdown table: the devices'
failed requests before the kill, during HAProxy's check window (FALL x CHECK_INTERVAL after the kill), after
it while r1 is down, and after the restart; how long HAProxy took to mark r1 DOWN and UP again; the real
player's stalls and longest stall after the kill.

Rules kept here:
- A failed request is one locust counts as failed (no answer, or a status other than 200/206); the
  locustfile appends each with its time to OCA_LOCUST_FAILURES, which is how they are split by phase.
- The player plays a real H.264/AAC title (ffmpeg makes it once; the lab reuses it), keeping only 6 s
  buffered (`buffer=6` on the page) so it keeps fetching while the replica is down; its stalls are the
  page's own account (`window.labState`: playback that should advance and does not for > 250 ms).
- Exit code 0 when the Done-when holds (0 failures after the check window, no stall > 1 s, r1 UP again),
  1 otherwise, 2 when a tool is missing (ffmpeg, chromium, postgresql, haproxy, locust).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oca.lab import Lab, LabConfig
from oca.lab.haproxy import CHECK_INTERVAL_MS, FALL, RISE, frontend_requests
from oca.lab.postgres import server_bindir

LOCUSTFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locustfile.py")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--autoplay-policy=no-user-gesture-required"]
WINDOW = FALL * CHECK_INTERVAL_MS / 1000
RETRIED = re.compile(r" \d+/\d+/\d+/\d+/\+[1-9]\d* ")  # actconn/feconn/beconn/srv_conn/retries, retried


@dataclass
class Timeline:
    """Unix times of the run's instants."""

    start: float = 0.0
    kill: float = 0.0
    down: float = 0.0  # HAProxy marked r1 DOWN
    restart: float = 0.0  # r1 answers /healthz again
    up: float = 0.0  # HAProxy marked r1 UP
    end: float = 0.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100, help="locust devices (default 100)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the kill (default 20)")
    parser.add_argument("--down", type=float, default=20.0, help="seconds r1 stays down (default 20)")
    parser.add_argument("--after", type=float, default=15.0, help="seconds after r1 is UP again (default 15)")
    parser.add_argument("--dir", default="run/bench-replicas-lab", help="the lab's work directory (content reused)")
    parser.add_argument("--out", default="out/bench_replicas", help="prefix of locust's CSV files and the JSON")
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    return args


def missing_tools() -> list[str]:
    missing = [name for name, ok in (("ffmpeg", shutil.which("ffmpeg") is not None),
                                     ("chromium", os.path.exists(CHROMIUM)),
                                     ("postgresql", server_bindir() is not None),
                                     ("haproxy", shutil.which("haproxy") is not None
                                      or os.path.exists("/usr/sbin/haproxy"))) if not ok]
    # found, not imported: importing locust monkey-patches this process with gevent
    if importlib.util.find_spec("locust") is None or importlib.util.find_spec("playwright") is None:
        missing.append("locust/playwright (pip install -e '.[test]')")
    return missing


def wait_until(check: Any, timeout: float) -> float:
    """Unix time `check()` first held; 0.0 if it did not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(0.05)
    return 0.0


def failures(path: str) -> list[tuple[float, str]]:
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                at, _, what = line.partition(" ")
                out.append((float(at), what.strip()))
    except OSError:
        pass
    return out


def redispatched(log_path: str, offset: int) -> int:
    """Requests HAProxy logged with retries (the "+N" of its connection counters) after `offset` in its log."""
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        return sum(1 for line in fh if RETRIED.search(line))


def locust_totals(prefix: str) -> tuple[int, int]:
    """(requests, failures) on locust's Aggregated row."""
    import csv

    with open(f"{prefix}_stats.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    return 0, 0


def replicated_lab(workdir: str, out: str) -> tuple[str, LabConfig]:
    """(an empty file the devices' failures go to, the config of a lab with two replicas behind HAProxy)."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    failure_file = f"{out}_failures.txt"
    with open(failure_file, "w", encoding="utf-8"):
        pass
    return failure_file, LabConfig(workdir=workdir, titles=2, duration=120, control_port=0, box_ports=0,
                                   control_replicas=2)


def start_devices(lab: Lab, devices: int, seconds: float, out: str, failure_file: str) -> subprocess.Popen[bytes]:
    """Locust devices (loadtest/locustfile.py, as `make loadtest` runs them) on the lab's control URL, for
    `seconds` at most; their failed requests, each with its time, go to `failure_file`."""
    env = dict(os.environ, OCA_LOCUST_TITLES=",".join(lab.titles), OCA_LOCUST_FAILURES=failure_file,
               OCA_LOCUST_CLIENTS=",".join(lab.site_clients.values()), OCA_LOCUST_HEADER=lab.client_header)
    command = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-u", str(devices),
               "-r", str(min(devices, 20)), "-t", f"{int(seconds)}s", "--host", lab.control_url,
               "--csv", out, "--only-summary", "--stop-timeout", "5"]
    with open(f"{out}_locust.log", "w", encoding="utf-8") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_devices(locust: subprocess.Popen[bytes]) -> None:
    if locust.poll() is None:
        locust.send_signal(2)  # SIGINT: locust writes its CSV files and stops
    try:
        locust.wait(60)
    except subprocess.TimeoutExpired:
        locust.kill()
        locust.wait()


def say(line: str) -> None:
    print(f"bench_replicas: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    failure_file, config = replicated_lab(args.dir, args.out)
    t = Timeline()
    with Lab(config, say=say) as lab:
        locust = start_devices(lab, args.devices, args.warmup + args.down + args.after + 30, args.out, failure_file)
        profile = tempfile.mkdtemp(prefix="oca-bench-chromium-")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=FLAGS)
                page = browser.new_page()
                page.goto(f"{lab.page_url}?title={lab.titles[0]}&site=a&player=hls&autoplay=1&buffer=6")
                page.wait_for_function("() => window.labState && window.labState.playing", timeout=60_000)
                t.start = time.time()
                say(f"{args.devices} devices and the player running; r1 is SIGKILLed in {args.warmup:.0f}s")
                page.wait_for_timeout(args.warmup * 1000)
                at_kill = frontend_requests(lab.paths.haproxy_socket)
                log_offset = os.path.getsize(lab.paths.haproxy_log)
                t.kill = time.time()
                lab.stop_control("kill", replica=1)
                t.down = wait_until(lambda: lab.balancer_states().get("r1", "").startswith("DOWN"), 10)
                time.sleep(max(0.0, t.kill + WINDOW - time.time()))
                in_window = frontend_requests(lab.paths.haproxy_socket) - at_kill
                page.wait_for_timeout(max(0.0, t.kill + args.down - time.time()) * 1000)
                lab.start_control(replica=1)
                t.restart = time.time()
                t.up = wait_until(lambda: lab.balancer_up() == {"r1", "r2"}, 30)
                page.wait_for_timeout(args.after * 1000)
                t.end = time.time()
                state = page.evaluate("() => window.labState")
                browser.close()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
            stop_devices(locust)
        problems = lab.check()
        retried = redispatched(lab.paths.haproxy_log, log_offset)
    requests, failed_total = locust_totals(args.out)
    failed = failures(failure_file)

    def count(lo: float, hi: float) -> int:
        return sum(lo <= at < hi for at, _ in failed)

    stalls_after = [s for s in state["stalls"] if s["at"] / 1000 >= t.kill]
    result = {
        "devices": args.devices, "requests": requests, "failed_total": failed_total,
        "failed_before_kill": count(0, t.kill), "failed_in_window": count(t.kill, t.kill + WINDOW),
        "failed_after_window_r1_down": count(t.kill + WINDOW, t.restart),
        "failed_after_restart": count(t.restart, t.end), "failed_after_end": count(t.end, float("inf")),
        "failures": [f"{at - t.kill:+.2f}s {what}" for at, what in failed][:50],
        "control_requests_in_window": in_window, "retried_by_haproxy": retried,
        "down_after_s": t.down - t.kill if t.down else None,
        "up_after_s": t.up - t.restart if t.up else None,
        "player": {"fragments": len(state["fragments"]), "fragments_after_kill":
                   sum(f["at"] / 1000 >= t.kill for f in state["fragments"]),
                   "stalls_after_kill": len(stalls_after), "longest_stall_after_kill_ms":
                   max((s["ms"] for s in stalls_after), default=0), "max_stall_ms": state["maxStallMs"],
                   "fatal_errors": [e for e in state["errors"] if e["fatal"]], "playing": state["playing"]},
        "lab_problems": problems, "check_interval_ms": CHECK_INTERVAL_MS, "fall": FALL, "rise": RISE,
    }
    return result


def table(r: dict[str, Any]) -> str:
    p = r["player"]
    rows = [
        ("check", f"GET /healthz every {r['check_interval_ms']} ms, fall {r['fall']} rise {r['rise']}: "
                  f"window {WINDOW:.1f}s"),
        ("devices", f"{r['devices']} locust devices, {r['requests']} requests, {r['failed_total']} failed"),
        ("r1 DOWN at HAProxy", "-" if r["down_after_s"] is None else f"{r['down_after_s']:.2f}s after SIGKILL"),
        ("failed before the kill", str(r["failed_before_kill"])),
        (f"failed in the check window (0-{WINDOW:.1f}s)",
         f"{r['failed_in_window']} (of {r['control_requests_in_window']} control-URL requests through HAProxy)"),
        ("failed after the window, r1 down", str(r["failed_after_window_r1_down"])),
        ("requests HAProxy retried on r2", f"{r['retried_by_haproxy']} (connection to r1 refused or cut; "
                                           "each answered by r2)"),
        ("r1 UP again", "-" if r["up_after_s"] is None else f"{r['up_after_s']:.2f}s after it answered"),
        ("failed after the restart", str(r["failed_after_restart"])),
        ("hls.js player", f"{p['fragments']} fragments ({p['fragments_after_kill']} after the kill), "
                          f"{p['stalls_after_kill']} stalls after the kill, longest {p['longest_stall_after_kill_ms']} "
                          f"ms; fatal errors {len(p['fatal_errors'])}"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def passed(r: dict[str, Any]) -> bool:
    p = r["player"]
    return (r["failed_after_window_r1_down"] == 0 and r["failed_after_restart"] == 0 and r["up_after_s"] is not None
            and p["longest_stall_after_kill_ms"] <= 1000 and not p["fatal_errors"] and p["fragments_after_kill"] > 0)


def verdict(result: dict[str, Any], out: str, rows: str, ok: bool, holds: str) -> int:
    """Write the JSON report, print the table and one PASS/FAIL line naming what must hold; the exit code."""
    with open(f"{out}.json", "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    print(rows)
    print(f"\n{'PASS' if ok else 'FAIL'}: {holds} (details: {out}.json)")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"bench_replicas: missing {', '.join(missing)}: make system-deps installs the Debian ones",
              file=sys.stderr)
        return 2
    result = run(args)
    return verdict(result, args.out, table(result), passed(result),
                   "0 failed device requests after the check window, no player stall > 1 s, r1 rejoins")


if __name__ == "__main__":
    sys.exit(main())
