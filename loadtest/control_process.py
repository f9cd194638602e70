"""A real `oca control serve` over a synthetic fleet, for `loadtest.bench_control`: the fleet written as
config files, start-up time, resident memory, and master playlists per second over HTTP (wrk).

Rules it keeps:
- The config is written the way an operator would write it, in one of two shapes: `inline` (every box's
  announced prefixes in the fleet YAML, coverage in CSV) or `files` (the fleet YAML names a prefix file,
  `prefix,box` per line, beside the coverage CSV). Nothing here changes what the control plane does.
- Start-up is timed from just before exec to the first 200 from `GET /healthz`; RSS is VmRSS from
  /proc/PID/status read right then, before any request but that one.
- With `poll_seconds` > 0 every box is a fake box on its own loopback address (loadtest.fake_boxes, a few
  asyncio processes answering /status and /inventory like a box), polled every 2 s with a 1 s timeout as
  configs/control.yaml ships: the figures say when every box had been polled once (from exec), how long
  the poll rounds then took (from /v1/status, sampled for `poll_seconds`) and the RSS after them; the HTTP
  playlists then list healthy boxes. With 0, the admin URLs point at a loopback port nothing listens on
  (every poll refused at once, origin-only playlists) and `health.interval` is an hour.
- Every wait is bounded; the process is stopped (SIGTERM, then SIGKILL) in a `finally`.
- Only loadtest.bench_control prints or exits; this module returns values or raises ProcessError.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control.catalog.codec import title_to_json
from control.model import Fleet, Title
from control.status_client import default_max_idle
from loadtest import fake_boxes
from loadtest.ports import free_port
from loadtest.processes import stop_process
from loadtest.wrk import WrkError, WrkResult, parse_output

OCA = os.path.join(os.path.dirname(sys.executable), "oca")
LUA_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "steer_clients.lua")
FORMATS = ("inline", "files")
CLIENT_HEADER = "X-Forwarded-For"


class ProcessError(Exception):
    """The control plane did not start, or a measurement of it failed; the message says which."""


@dataclass(frozen=True)
class Polling:
    """The health polling of the real process over fake boxes."""

    interval: float
    all_polled_s: float  # exec to every box polled once (/v1/status health.unpolled_boxes 0)
    all_polled_cpu_s: float  # CPU time the process had used by then
    rounds: list[float]  # seconds each round took, every round completed while sampled (the first excluded)
    since_start: list[float]  # seconds of every round since start, in order (the latest 64 when more)
    rounds_total: int  # rounds done since start
    skipped: int  # polls not started because the box's previous one still ran, over the whole run
    rss_bytes: int  # VmRSS after the rounds
    round_cpu: float  # CPU time used while the rounds were sampled, per second of wall clock
    cpu_per_poll: float | None  # that CPU time over the polls done meanwhile: what a round costs apart from load
    kept_connections: str  # how many boxes keep a connection between polls (the open-file limit bounds it)


@dataclass(frozen=True)
class ProcessFigures:
    startup_s: float
    startup_cpu_s: float  # CPU time the process had used by its first answer
    rss_bytes: int
    config_bytes: int  # what the fleet's files weigh on disk
    http: WrkResult | None  # None when wrk is not installed or not asked for
    http_note: str
    polling: Polling | None = None  # None without fake boxes (poll_seconds 0)



def write_config(fleet: Fleet, workdir: str, port: int, shape: str,
                 admin_urls: Mapping[str, str] | None = None) -> tuple[str, int]:
    """control.yaml and the fleet's files in `workdir`; (path of control.yaml, bytes of the fleet's files).
    Without `admin_urls` (box id -> URL) every admin URL is a port nothing listens on and nothing is polled."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every poll is refused at once
    fleet_path = os.path.join(workdir, "fleet.yaml")
    coverage_path = os.path.join(workdir, "coverage.csv")
    prefix_path = os.path.join(workdir, "prefixes.csv")
    with open(fleet_path, "w", encoding="utf-8") as fh:
        fh.write(f"origin_url: {fleet.origin_url}\n")
        if shape == "files":
            fh.write("prefixes_file: prefixes.csv\n")
        fh.write("sites:\n")
        for site in fleet.sites.values():
            parent = site.parent if site.parent is not None else "null"
            fh.write(f"  - {{id: {site.id}, latitude: {site.latitude:.4f}, longitude: {site.longitude:.4f}, "
                     f"country: {site.country}, parent: {parent}}}\n")
        fh.write("boxes:\n")
        for box in fleet.boxes.values():
            fh.write(f"  - id: {box.id}\n    site: {box.site}\n    data_url: {box.data_url}\n"
                     f"    admin_url: {admin_urls[box.id] if admin_urls else dead}\n"
                     f"    egress_capacity: {box.egress_capacity}\n")
            if shape == "inline" and box.prefixes:
                fh.write("    prefixes: [" + ", ".join(f'"{p}"' for p in box.prefixes) + "]\n")
    if shape == "files":
        with open(prefix_path, "w", encoding="utf-8") as fh:
            fh.write("prefix,box\n")
            for box in fleet.boxes.values():
                fh.writelines(f"{p},{box.id}\n" for p in box.prefixes)
    with open(coverage_path, "w", encoding="utf-8") as fh:
        fh.write("prefix,lat,lon,country\n")
        fh.writelines(f"{a.prefix},{a.latitude:.4f},{a.longitude:.4f},{a.country}\n" for a in fleet.coverage)
    control_path = os.path.join(workdir, "control.yaml")
    with open(control_path, "w", encoding="utf-8") as fh:
        fh.write(f"listen: 127.0.0.1:{port}\n"
                 "coverage_file: coverage.csv\n"
                 "state: {path: state.db}\n"
                 "fleet: {file: fleet.yaml}\n"
                 f"health: {{interval: {'2s' if admin_urls else '1h'}, timeout: 1s}}\n"
                 f"steering: {{client_ip_header: {CLIENT_HEADER}}}\n"
                 "log: {level: warning}\n")
    size = sum(os.path.getsize(p) for p in (fleet_path, coverage_path, prefix_path) if os.path.exists(p))
    return control_path, size


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (/proc/PID/stat fields 14 and 15): on a machine shared
    with other work, what a start-up cost apart from how long it waited for a core."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ProcessError(f"no VmRSS in /proc/{pid}/status")


def measure_process(fleet: Fleet, titles: Sequence[Title], mpd: str, clients: Sequence[str], workdir: str, *,
                    shape: str, http_seconds: float, poll_seconds: float = 0.0, connections: int = 32,
                    start_timeout: float = 180.0) -> ProcessFigures:
    """Start `oca control serve` on the fleet written in `shape`, time it to its first answer, read its RSS;
    with `poll_seconds`, over fake boxes: time to every box polled and the poll rounds (see the module
    rules); then post a few titles and drive their master playlists with wrk for `http_seconds`."""
    if not os.access(OCA, os.X_OK):
        raise ProcessError(f"{OCA} not found; install oca (pip install -e .) in this venv")
    with _boxes(fleet, workdir, poll_seconds > 0) as admin_urls:
        port = free_port()
        control_path, config_bytes = write_config(fleet, workdir, port, shape, admin_urls)
        base = f"http://127.0.0.1:{port}"
        log_path = os.path.join(workdir, "control.log")
        with open(log_path, "wb") as log:
            started = time.monotonic()
            process = subprocess.Popen([OCA, "control", "serve", "--config", control_path], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        try:
            while True:
                if process.poll() is not None:
                    raise ProcessError(f"oca control serve exited with {process.returncode}: {_tail(log_path)}")
                try:
                    if _get(base + "/healthz", timeout=1.0) == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() - started > start_timeout:
                    raise ProcessError(f"oca control serve not answering /healthz within {start_timeout:.0f}s")
                time.sleep(0.02)
            startup = time.monotonic() - started
            startup_cpu = cpu_seconds(process.pid)
            rss = rss_bytes(process.pid)
            polling = None
            if admin_urls is not None:
                polling = _polling(base, process.pid, started, poll_seconds, start_timeout, len(fleet.boxes))
            http, note = _http(base, titles, mpd, clients, workdir, http_seconds, connections)
            return ProcessFigures(startup, startup_cpu, rss, config_bytes, http, note, polling)
        finally:
            _stop(process)


@contextlib.contextmanager
def _boxes(fleet: Fleet, workdir: str, fake: bool) -> Iterator[dict[str, str] | None]:
    if not fake:
        yield None
        return
    ids = list(fleet.boxes)
    try:
        with fake_boxes.running(ids, free_port(), workdir) as urls:
            yield dict(zip(ids, urls, strict=True))
    except RuntimeError as exc:
        raise ProcessError(str(exc)) from None


def _status(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/v1/status", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _polling(base: str, pid: int, started: float, seconds: float, timeout: float, boxes: int) -> Polling:
    """Exec to every box polled once, then how long each poll round that ended within the next `seconds`
    took, and every round since start (/v1/status keeps the latest 64)."""
    while True:
        health = _status(base)["health"]
        if health["unpolled_boxes"] == 0:
            break
        if time.monotonic() - started > timeout:
            raise ProcessError(f"{health['unpolled_boxes']} boxes not polled within {timeout:.0f}s of exec")
        time.sleep(0.1)
    all_polled, all_polled_cpu = time.monotonic() - started, cpu_seconds(pid)
    first, polls = health["rounds"], health["polls"]
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    health = _status(base)["health"]
    done = health["rounds"] - first  # rounds that ended while we waited: the last `done` of the recent ones
    rounds = [float(r) for r in health["recent_rounds_seconds"][-done:]] if done > 0 else []
    cpu = cpu_seconds(pid) - cpu_before
    round_cpu = cpu / (time.monotonic() - wall_before)
    polled = health["polls"] - polls
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    kept = min(boxes, default_max_idle())  # what the control process (same limit) keeps
    since_start = [float(r) for r in health["recent_rounds_seconds"]]
    return Polling(float(health["interval"]), all_polled, all_polled_cpu, rounds, since_start, int(health["rounds"]),
                   int(health["skipped_polls"]),
                   rss_bytes(pid), round_cpu, cpu / polled if polled > 0 else None,
                   f"{kept:,} of {boxes:,} boxes keep their connection (open-file limit {soft:,})")


def rounds_since_start(polling: Polling) -> str:
    """Every round's seconds since start, in order: the first rounds are where start-up work shows."""
    shown = ", ".join(f"{r:.2f}" for r in polling.since_start)
    dropped = polling.rounds_total - len(polling.since_start)
    return f"{shown} (the first {dropped} not kept)" if dropped > 0 else shown


def round_summary(polling: Polling) -> str:
    if not polling.rounds:
        return "no round completed while sampled"
    per_poll = f", {polling.cpu_per_poll * 1e6:.0f} µs of CPU a poll" if polling.cpu_per_poll is not None else ""
    return (f"median {statistics.median(polling.rounds):.2f} s, max {max(polling.rounds):.2f} s over "
            f"{len(polling.rounds)} rounds, {polling.skipped:,} polls skipped, the process at "
            f"{polling.round_cpu:.0%} of a core{per_poll}")


def _http(base: str, titles: Sequence[Title], mpd: str, clients: Sequence[str], workdir: str, seconds: float,
          connections: int) -> tuple[WrkResult | None, str]:
    if seconds <= 0:
        return None, "not asked for (--http-seconds 0)"
    wrk = shutil.which("wrk")
    if wrk is None:
        return None, "wrk not installed"
    open_titles = [t for t in titles if not t.countries][:20]
    for title in open_titles:
        body = json.dumps({"title": title_to_json(title), "mpd": mpd if title.dash_manifest else None}).encode()
        request = urllib.request.Request(f"{base}/v1/catalog/{title.id}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    lines = os.path.join(workdir, "requests.txt")
    with open(lines, "w", encoding="utf-8") as fh:
        for i, client in enumerate(clients[:2000]):
            fh.write(f"/v1/play/{open_titles[i % len(open_titles)].id}/master.m3u8 {client}\n")
    argv = [wrk, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout=5s", "--latency",
            "-s", LUA_SCRIPT, base, "--", lines, CLIENT_HEADER]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 40, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(f"wrk did not stop: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise ProcessError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    try:
        result = parse_output(done.stdout)
    except WrkError as exc:
        raise ProcessError(str(exc)) from None
    return result, f"wrk -t2 -c{connections}, {len(open_titles)} titles, {min(len(clients), 2000):,} client addresses"


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, timeout=20)


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return " | ".join(fh.read().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
