"""`python -m loadtest.bench_fill`: does a capped fill move bytes at its cap? A measurement, never a pass/fail test.

It starts, on loopback, an origin (`python -m http.server` over synthetic titles of random bytes), a control
plane (`oca control serve`, with the catalog posted to it) and one box (`oca serve`), then runs
`oca fill run --rate CAP --window <now>-<now + duration>` for each cap: the window ends the fill, so the run
is a fixed-length fill. Meanwhile it samples the box's prefetch job (`GET /prefetch`) twice a second.
It prints one Markdown table (case, figure, goal, verdict) as loadtest.bench_control does.

Rules it keeps:
- The average is bytes moved over the job's life (submission to cancellation, from the runner's JSON log
  lines), so it includes the token
  bucket's one second of burst; the steady rate leaves out the first two seconds. The goal (issue 6) is the
  average within ±10% of the cap.
- Content is random (incompressible) and larger than any cap can move in the window; the box's own
  `fetch.prefetch_rate` is unset, so the job's rate is the only cap.
- Servers it started are stopped on exit, on Ctrl-C and on SIGTERM (loadtest.harness); only this module prints.
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
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xxhash
import yaml

from loadtest.harness import Figure, Run, cpu_name, harness_run, render_figures, write_json
from loadtest.ports import free_port
from loadtest.processes import stop_process

DESCRIPTION = "a capped `oca fill run` on loopback: bytes moved against the cap; prints a Markdown table."
OCA = os.path.join(os.path.dirname(sys.executable), "oca")
TOKEN = "bench-fill-token"
SEGMENT = 256 * 1024
GOAL = 0.10



def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_fill: {what} not within {timeout:.0f}s")
        time.sleep(0.1)


# --- the world -------------------------------------------------------------------------------------------


def write_titles(root: str, total_bytes: int) -> list[dict[str, Any]]:
    """Titles of 16 random segments each under root/titles/, as catalog records (sizes, xxh3-128 digests)."""
    records = []
    written, index = 0, 0
    while written < total_bytes:
        title_id = f"{5000 + index}"
        files = []
        for n in range(16):
            data = os.urandom(SEGMENT)
            rel = f"titles/{title_id}/1080p/seg_{n:05d}.m4s"
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "wb") as fh:
                fh.write(data)
            files.append({"path": rel, "size": len(data), "digest": xxhash.xxh3_128_hexdigest(data)})
            written += len(data)
        records.append({"id": title_id, "renditions": [], "files": files})
        index += 1
    return records


@dataclass
class Servers:
    processes: list[subprocess.Popen[bytes]]
    control_url: str
    admin_url: str
    box_config: str

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)


def start(run: Run, records: list[dict[str, Any]], content: str) -> Servers:
    origin_port, control_port, data_port, admin_port = (free_port() for _ in range(4))
    with open(os.path.join(run.workdir, "token"), "w", encoding="utf-8") as fh:
        fh.write(TOKEN + "\n")
    origin_url = f"http://127.0.0.1:{origin_port}"
    control = {
        "listen": f"127.0.0.1:{control_port}", "state": {"path": "control.db"},
        "fleet": {"origin_url": origin_url,
                  "sites": [{"id": "site", "latitude": 52.0, "longitude": 4.9, "country": "NL"}],
                  "boxes": [{"id": "box-1", "site": "site", "data_url": f"http://127.0.0.1:{data_port}",
                             "admin_url": f"http://127.0.0.1:{admin_port}", "egress_capacity": "10Gbps"}]},
        "health": {"interval": "500ms", "timeout": "1s", "up_after": 1},
        "auth": {"operator_token_file": "token", "box_token_file": "token"},
        "fill": {"window": "always", "headroom": 0.05},
        "log": {"level": "warning"},
    }
    capacity = sum(f["size"] for r in records for f in r["files"]) * 2
    box = {
        "box": {"id": "box-1", "site": "site"},
        "server": {"listen": f"127.0.0.1:{data_port}", "workers": 1},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token_file": "token"},
        "storage": {"state_dir": "state", "tiers": [{"name": "disk", "path": "disk", "capacity": capacity}]},
        "fetch": {"sources": [{"name": "origin", "url": origin_url, "kind": "origin"}]},
        "control": {"url": f"http://127.0.0.1:{control_port}", "credential_file": "token"},
        "tokens": {"required": False},
        "log": {"access_log": None, "level": "warning"},
    }
    paths = {}
    for name, config in (("control.yaml", control), ("oca.yaml", box)):
        paths[name] = os.path.join(run.workdir, name)
        with open(paths[name], "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh)
    log = open(os.path.join(run.workdir, "servers.log"), "ab")  # noqa: SIM115 - kept open for the children
    processes = [
        subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", content,
                          str(origin_port)], stdout=log, stderr=subprocess.STDOUT),
        subprocess.Popen([OCA, "control", "serve", "--config", paths["control.yaml"]], stdout=log,
                         stderr=subprocess.STDOUT),
        subprocess.Popen([OCA, "serve", "--config", paths["oca.yaml"]], stdout=log, stderr=subprocess.STDOUT),
    ]
    servers = Servers(processes, f"http://127.0.0.1:{control_port}", f"http://127.0.0.1:{admin_port}",
                      paths["oca.yaml"])
    try:
        wait(lambda: http_json(servers.control_url + "/v1/fleet") is not None, 30, "the control plane")
        for record in records:
            http_json(f"{servers.control_url}/v1/catalog/{record['id']}", method="POST",
                      body={"title": record, "mpd": None})
        wait(lambda: http_json(servers.admin_url + "/status")["box"] == "box-1", 30, "the box")
        wait(lambda: http_json(servers.control_url + "/v1/fill-plans/box-1")["files"], 30, "a fill plan")
    except BaseException:
        servers.stop()
        raise
    return servers


# --- one measured fill --------------------------------------------------------------------------------------


def measure(run: Run, servers: Servers, cap: int, duration: float) -> list[Figure]:
    """One fill capped at `cap` bytes/s whose window ends `duration` s from now; then the box is emptied."""
    now = time.time()
    start_s, end_s = time.localtime(now - 60), time.localtime(now + duration)
    window = f"{time.strftime('%H:%M:%S', start_s)}-{time.strftime('%H:%M:%S', end_s)}"
    runner = subprocess.Popen([OCA, "fill", "run", "--config", servers.box_config, "--json", "--rate", str(cap),
                               "--window", window], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples: list[tuple[float, int, str]] = []
    while runner.poll() is None:
        try:
            jobs = http_json(servers.admin_url + "/prefetch")["jobs"]
        except (OSError, ValueError):
            jobs = []
        if jobs:
            samples.append((time.monotonic(), int(jobs[-1]["bytes"]), str(jobs[-1]["state"])))
        time.sleep(0.5)
    out, err = runner.communicate()
    summary = json.loads(out) if out.strip() else {}
    events = {}
    for line in err.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") in ("job", "window_end"):
            events[record["event"]] = float(record["time"])
    running = [s for s in samples if s[2] == "running"]
    if len(running) < 4 or len(events) < 2:
        raise SystemExit(f"bench_fill: too few samples of the running job ({len(running)}) or runner events "
                         f"({sorted(events)}); exit {runner.returncode}")
    t0 = running[0][0]
    moved = int(summary.get("bytes", running[-1][1]))
    life = events["window_end"] - events["job"]  # the runner's log: job submitted -> job cancelled
    average = moved / life
    steady = [s for s in running if s[0] - t0 >= 2.0]
    slope = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]) if len(steady) >= 2 else float("nan")
    error = average / cap - 1
    mbit = cap * 8 / 1e6
    rows = [
        Figure(f"{duration:.0f} s fill capped at {cap / 1e6:.2f} MB/s ({mbit:.1f} Mbit/s): average",
            f"{average / 1e6:.3f} MB/s ({100 * error:+.1f}%), {moved / 1e6:.1f} MB in {life:.1f} s",
            f"within ±{100 * GOAL:.0f}% of the cap", "meets" if abs(error) <= GOAL else "misses", average),
        Figure(f"{duration:.0f} s fill capped at {cap / 1e6:.2f} MB/s: steady state (after 2 s)",
            f"{slope / 1e6:.3f} MB/s ({100 * (slope / cap - 1):+.1f}%)", "-", "-", slope),
        Figure(f"{duration:.0f} s fill capped at {cap / 1e6:.2f} MB/s: the window's end",
            f"exit {runner.returncode}, job {summary.get('job_state')}", "exit 4, job cancelled",
            "meets" if runner.returncode == 4 and summary.get("job_state") == "cancelled" else "misses"),
    ]
    run.progress(f"cap {cap:,} B/s: moved {moved:,} B in {life:.1f} s ({100 * error:+.1f}%)")
    wait(lambda: all(j["state"] in ("done", "cancelled") for j in http_json(servers.admin_url + "/prefetch")["jobs"]),
         60, "the cancelled job to stop")
    http_json(servers.admin_url + "/cache/evict", method="POST", body={"prefix": "titles/"})
    return rows


# --- output and command line ----------------------------------------------------------------------------


def machine_line(args: argparse.Namespace) -> str:
    cpu = cpu_name()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: {cpu}, nproc {len(os.sched_getaffinity(0))}, python {platform.python_version()}; "
            f"loopback, one box (1 worker), origin python -m http.server; {args.seconds:g} s per fill; {now}")


def parse_rate(text: str) -> int:
    """Bytes per second: 2MB, 500KB, 4000000."""
    units = {"kb": 1000, "mb": 1000**2, "gb": 1000**3}
    lowered = text.strip().lower().removesuffix("/s")
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[:-2]) * factor)
    return int(lowered)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_fill", description=DESCRIPTION)
    parser.add_argument("--rate", action="append", type=parse_rate, metavar="BYTES_PER_S",
                        help="a cap in bytes per second (2MB, 500KB); repeat for several (default 2MB and 8MB)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each fill window (default 30)")
    parser.add_argument("--quick", action="store_true", help="one 2MB/s fill of 10 s")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.seconds = args.rate or [2_000_000], 10.0
    args.rate = args.rate or [2_000_000, 8_000_000]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(OCA, os.X_OK):
        print(f"bench_fill: {OCA} not found; install oca with `make` (pip install -e .) in this venv", file=sys.stderr)
        return 2
    rows: list[Figure] = []
    with harness_run("bench_fill", args.keep) as run:
        content = os.path.join(run.workdir, "origin")
        records = write_titles(content, int(max(args.rate) * (args.seconds + 2) * 1.3))
        run.progress(f"{len(records)} titles of random bytes written")
        servers = start(run, records, content)
        try:
            run.progress("origin, control plane and box up; plan ready")
            for cap in args.rate:
                rows += measure(run, servers, cap, args.seconds)
        finally:
            servers.stop()
    print(machine_line(args))
    print()
    print(render_figures(rows))
    if args.json:
        write_json(args.json, {"machine": machine_line(args), "rows": [r.as_json() for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
