"""`python -m loadtest.bench`: oca and nginx side by side on loopback, same objects, same wrk load.

It prints one Markdown table: per case both servers' medians and p99s, oca/nginx for throughput and for
p99. It is a measurement, never a pass/fail test, so nothing here asserts a timing.

Rules it keeps:
- Cases are object sets of one size (random bytes) and the video mix: a title made by `oca content make`
  (ffmpeg), requested as player sessions request it (loadtest.video_mix), its summary printed before the
  results so a reader can judge it.
- Both servers serve the same bytes from the same work dir: the objects are written once, nginx serves
  the directory, oca imports it (`oca cache import`, box not running) before it starts. Both run with
  the same worker count, both log every request, both bind 127.0.0.1 only. A sanity check fetches a
  sample of objects from both and compares them with the files before any load.
- For each case the servers are loaded alternately (oca, nginx, oca, nginx, ...), each measured run
  preceded by a short uncounted warm-up; the reported value is the median over rounds. Both servers
  stay up for the whole run, but only one is loaded at a time.
- Every wrk run is bounded in time; the servers are stopped in `finally` (ExitStack), on errors, on
  Ctrl-C and on SIGTERM alike (loadtest.harness). Only `main` prints or exits.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import posixpath
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import yaml

from loadtest import harness
from loadtest.nginx import Nginx, NginxError, NginxSettings, default_user, nginx_version
from loadtest.ports import free_ports
from loadtest.video_mix import VideoMix, build_mix, load_title, mix_line, render_summary
from loadtest.wrk import WrkError, WrkErrors, WrkResult, run_wrk
from oca.tokens import generate_private_key, mint, public_jwk, title_scope, token_path

SERVERS = ("oca", "nginx")
WRK_THREADS = 2
DESCRIPTION = "oca and nginx side by side on loopback over the same objects, driven by wrk; prints oca/nginx ratios."


class BenchError(Exception):
    """The harness could not set up or run a server (exit code 1)."""


# --- what is measured -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSet:
    """`count` objects of `size` random bytes under titles/<n>/720p/seg_<i>.m4s."""

    name: str
    size: int
    count: int
    first_title: int
    per_title: int

    @property
    def metric(self) -> str:
        """Large objects are measured by bandwidth, small ones by request rate."""
        return "MiB/s" if self.size >= 1 << 20 else "req/s"

    def keys(self) -> list[str]:
        return [f"titles/{self.first_title + i // self.per_title}/720p/seg_{i % self.per_title}.m4s"
                for i in range(self.count)]


# Sizes a video session asks for: playlists and audio segments are small (8 KiB stands for them), low-rung
# video segments 100-500 KiB (64 KiB, 512 KiB), high-rung ones megabytes (2 MiB). Title ranges are disjoint.
OBJECT_SETS = {
    "2MiB": ObjectSet("2MiB", 2 << 20, 64, first_title=1, per_title=8),
    "512KiB": ObjectSet("512KiB", 512 << 10, 200, first_title=301, per_title=50),
    "64KiB": ObjectSet("64KiB", 64 << 10, 1000, first_title=201, per_title=100),
    "8KiB": ObjectSet("8KiB", 8 << 10, 2000, first_title=101, per_title=100),
}
VIDEO = "video"  # the video mix: a real title from `oca content make`, requested as player sessions do
VIDEO_TITLE_SECONDS = 30
DEFAULT_CASES = ("2MiB@64,2MiB@256,512KiB@64,512KiB@256,64KiB@64,64KiB@256,8KiB@64,8KiB@256,"
                 f"{VIDEO}@64,{VIDEO}@256")


@dataclass(frozen=True)
class Case:
    name: str
    objects: ObjectSet | None  # None: the video mix
    connections: int

    @property
    def set_name(self) -> str:
        return VIDEO if self.objects is None else self.objects.name

    @property
    def metric(self) -> str:
        return "req/s" if self.objects is None else self.objects.metric


def parse_cases(text: str) -> list[Case]:
    """`2MiB@64,8KiB@256,video@64` -> cases; a bad name says what exists."""
    cases = []
    for item in (part.strip() for part in text.split(",")):
        set_name, sep, conns = item.partition("@")
        if not sep or set_name not in (*OBJECT_SETS, VIDEO) or not conns.isdigit() or int(conns) < 1:
            raise ValueError(f"case {item!r}: expected SET@CONNECTIONS with SET in "
                             f"{', '.join((*OBJECT_SETS, VIDEO))} (e.g. 2MiB@64)")
        cases.append(Case(item, OBJECT_SETS.get(set_name), int(conns)))
    return cases


@dataclass(frozen=True)
class Plan:
    cases: list[Case]
    rounds: int
    duration: int
    warmup: int
    workers: int
    tokens: bool = True  # oca requires tokens and every request carries one (the production set-up)
    media: str | None = None  # where `oca content make` writes (and reuses) the video title; None: the work dir


@dataclass
class Row:
    """One case: the median of each server's runs."""

    case: Case
    runs: dict[str, list[WrkResult]] = field(default_factory=lambda: {s: [] for s in SERVERS})

    def value(self, result: WrkResult) -> float:
        return result.mib_per_sec if self.case.metric == "MiB/s" else result.requests_per_sec

    def median(self, server: str) -> float:
        return statistics.median(self.value(r) for r in self.runs[server])

    def p99(self, server: str) -> float | None:
        values = [r.p99_ms for r in self.runs[server] if r.p99_ms is not None]
        return statistics.median(values) if values else None

    def errors(self, server: str) -> WrkErrors:
        total = WrkErrors()
        for result in self.runs[server]:
            total = total + result.errors
        return total

    def ratio(self) -> float | None:
        nginx = self.median("nginx")
        return self.median("oca") / nginx if nginx > 0 else None

    def p99_ratio(self) -> float | None:
        """oca's p99 over nginx's (lower is better, unlike `ratio`)."""
        oca, nginx = self.p99("oca"), self.p99("nginx")
        return oca / nginx if oca is not None and nginx else None

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case.name, "metric": self.case.metric, "connections": self.case.connections,
            "object_size": None if self.case.objects is None else self.case.objects.size,
            "oca": round(self.median("oca"), 2), "nginx": round(self.median("nginx"), 2),
            "ratio": _round(self.ratio(), 4),
            "oca_p99_ms": _round(self.p99("oca"), 3), "nginx_p99_ms": _round(self.p99("nginx"), 3),
            "p99_ratio": _round(self.p99_ratio(), 4),
            "errors": sum(self.errors(s).total for s in SERVERS),
            **{f"{s}_errors": vars(self.errors(s)) for s in SERVERS},
            **{f"{s}_runs": [round(self.value(r), 2) for r in self.runs[s]] for s in SERVERS},
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# --- output ------------------------------------------------------------------------------------------


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table, ready to quote: medians, throughput ratio, p99s and their ratio per case."""
    lines = ["| case | metric | oca | nginx | ratio (oca/nginx) | oca p99 | nginx p99 | p99 ratio (oca/nginx) "
             "| errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(" | ".join([
            f"| {row.case.name}", row.case.metric, _number(row.median("oca")), _number(row.median("nginx")),
            _ratio(row.ratio()), _ms(row.p99("oca")), _ms(row.p99("nginx")), _ratio(row.p99_ratio()),
            _errors_cell(row)]) + " |")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _number(value: float) -> str:
    return f"{value:,.1f}" if value < 10_000 else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _errors_cell(row: Row) -> str:
    errors = {s: row.errors(s) for s in SERVERS}
    if all(e.total == 0 for e in errors.values()):
        return "0"
    return "; ".join(f"{s} {e.describe()}" for s, e in errors.items())


def machine_line(nginx_binary: str, plan: Plan) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: nproc {len(os.sched_getaffinity(0))}, kernel {platform.release()}, "
            f"python {platform.python_version()}, {nginx_version(nginx_binary)}, workers {plan.workers}, "
            f"{now}; wrk -t{WRK_THREADS}, {plan.rounds} round(s) x {plan.duration}s "
            f"(+{plan.warmup}s warm-up) per server and case; oca "
            f"{'with tokens required (every request carries /t/<jwt>/)' if plan.tokens else 'without tokens'}")


# --- the object set on disk --------------------------------------------------------------------------


def write_objects(root: str, sets: Sequence[ObjectSet]) -> dict[str, str]:
    """Write every set under root; returns set name -> paths file (one request path per line)."""
    paths_files = {}
    for objects in sets:
        keys = objects.keys()
        for key in keys:
            path = os.path.join(root, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(os.urandom(objects.size))
        paths_file = os.path.join(os.path.dirname(root), f"paths-{objects.name}.txt")
        with open(paths_file, "w", encoding="ascii") as fh:
            fh.writelines(f"/{key}\n" for key in keys)
        paths_files[objects.name] = paths_file
    return paths_files


class Signer:
    """Plays the control plane: one Ed25519 key, its JWKS for the box, one token per title (6 h)."""

    def __init__(self, workdir: str) -> None:
        self.key = generate_private_key("EdDSA")
        self.jwks = os.path.join(workdir, "jwks.json")
        with open(self.jwks, "w", encoding="utf-8") as fh:
            json.dump({"keys": [public_jwk(self.key, "bench-1")]}, fh)
        self._tokens: dict[str, str] = {}

    def path(self, key: str) -> str:
        """The request path a steered player would use: /t/<token for the key's title>/<key>."""
        title = key.split("/")[1]
        token = self._tokens.get(title)
        if token is None:
            token = mint(self.key, "bench-1", issuer="bench", scope=title_scope(title), lifetime=6 * 3600,
                         now=time.time())
            self._tokens[title] = token
        return token_path(token, key)


def tokenised_paths(paths_file: str, signer: Signer) -> str:
    """A copy of a paths file with every path carrying its title's token."""
    out = paths_file.replace(".txt", "-tokens.txt")
    with open(paths_file, encoding="ascii") as src, open(out, "w", encoding="ascii") as dst:
        dst.writelines(signer.path(line.strip()[1:]) + "\n" for line in src if line.strip())
    return out


def verify_same_objects(urls: dict[str, str], root: str, sets: Sequence[ObjectSet],
                        signer: Signer | None = None) -> None:
    """The first and last object of each set comes back byte-identical from every server."""
    verify_keys(urls, root, [key for objects in sets for key in {objects.keys()[0], objects.keys()[-1]}], signer)


def verify_keys(urls: dict[str, str], root: str, keys: Sequence[str], signer: Signer | None = None) -> None:
    """Each key comes back from every server byte-identical with its file under root."""
    for key in keys:
        with open(os.path.join(root, key), "rb") as fh:
            data = fh.read()
        want = hashlib.sha256(data).hexdigest()
        for server, url in urls.items():
            path = signer.path(key) if signer is not None and server == "oca" else f"/{key}"
            status, body = http_get(f"{url}{path}")
            got = hashlib.sha256(body).hexdigest()
            if status != 200 or got != want:
                raise BenchError(f"{server}: GET /{key} answered {status} with {len(body)} bytes "
                                 f"(sha256 {got[:12]}), expected 200 with {len(data)} bytes "
                                 f"(sha256 {want[:12]})")


# --- the video title ---------------------------------------------------------------------------------


def make_video_title(oca: str, media: str) -> tuple[str, str]:
    """`oca content make` one real title into `media` (reused if already made there); returns its key prefix
    (titles/<id>) and its multivariant playlist's path inside it."""
    argv = [oca, "content", "make", "--titles", "1", "--duration", str(VIDEO_TITLE_SECONDS), media]
    done = _run(argv, timeout=900)
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exited with {done.returncode}:\n{(done.stderr or done.stdout).strip()}")
    with open(os.path.join(media, "catalog.json"), encoding="utf-8") as fh:
        return video_title(json.load(fh), media)


def video_title(catalog: dict[str, Any], media: str) -> tuple[str, str]:
    """(titles/<id>, its HLS multivariant playlist's path inside it) of the catalog's first title."""
    title = catalog["titles"][0]
    if title.get("synthetic"):
        # without ffmpeg the title's segments are filler of made-up sizes: the mix would not be a real one
        raise BenchError(f"{media}/{title['path']} is synthetic (no ffmpeg?): the video mix needs an encoded "
                         f"title; install ffmpeg or pass --cases without {VIDEO}")
    return str(title["path"]), posixpath.relpath(str(title["hls"]), str(title["path"]))


def place_video_mix(media: str, title: str, master: str, root: str) -> VideoMix:
    """The mix of the title, with every file it requests copied under root (served and imported like the
    other objects; `oca cache import` does not follow symlinks)."""
    playlists, sizes = load_title(os.path.join(media, title), master)
    mix = build_mix(title, master, playlists, sizes)
    for key in (entry.key for entry in mix.entries):
        os.makedirs(os.path.dirname(os.path.join(root, key)), exist_ok=True)
        shutil.copyfile(os.path.join(media, key), os.path.join(root, key))
    return mix


def write_paths(path: str, keys: Sequence[str]) -> str:
    with open(path, "w", encoding="ascii") as fh:
        fh.writelines(f"/{key}\n" for key in keys)
    return path


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- oca as a subprocess -----------------------------------------------------------------------------


class OcaBox:
    """`oca serve` on loopback with its store imported from the object directory; always stopped."""

    def __init__(self, oca: str, workdir: str, port: int, admin_port: int, workers: int,
                 capacity: int) -> None:
        self.oca = oca
        self.workdir = os.path.join(workdir, "oca")
        self.port = port
        self.admin_port = admin_port
        self.workers = workers
        self.capacity = capacity
        self.config_path = os.path.join(self.workdir, "oca.yaml")
        self.log_path = os.path.join(workdir, "oca-serve.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.leftovers = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, access_log: str, jwks: str | None = None) -> None:
        mib = -(-self.capacity // (1 << 20))
        config = {
            "box": {"id": "bench-box", "site": "bench"},
            "server": {"listen": f"127.0.0.1:{self.port}", "workers": self.workers, "shutdown_timeout": "5s"},
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "storage": {
                "state_dir": os.path.join(self.workdir, "state"),
                "tiers": [{"name": "ssd", "path": os.path.join(self.workdir, "ssd"), "capacity": f"{mib}MiB"}],
                "memory_cache": {"max_object_size": "256KiB", "capacity": "256MiB"},
            },
            "log": {"access_log": access_log, "level": "warning"},
            "tokens": {"required": True, "jwks_file": jwks} if jwks else {"required": False},
        }
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.config_path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)

    def import_dir(self, directory: str) -> float:
        """`oca cache import` while the box is down; returns the seconds it took."""
        started = time.monotonic()
        done = _run([self.oca, "cache", "import", "--config", self.config_path, directory], timeout=600)
        if done.returncode != 0:
            raise BenchError(f"`oca cache import --config {self.config_path} {directory}` exited with "
                             f"{done.returncode}:\n{(done.stderr or done.stdout).strip()}")
        return time.monotonic() - started

    def start(self, timeout: float = 60.0) -> None:
        """Start `oca serve`; wait for /healthz 200 and /status workers == N."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([self.oca, "serve", "--config", self.config_path], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"`oca serve --config {self.config_path}` exited with "
                                 f"{self.process.returncode}:\n{self._log_tail()}")
            try:
                status, _ = http_get(self.url + "/healthz", timeout=2)
                _, body = http_get(f"http://127.0.0.1:{self.admin_port}/status", timeout=2)
                workers = json.loads(body).get("workers") if status == 200 else None
                last = f"/healthz {status}, /status workers {workers}"
                if workers == self.workers:
                    return
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BenchError(f"oca not ready within {timeout:.0f}s ({last}):\n{self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the master, then SIGKILL to the process group if anything is still there."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.leftovers = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 0)  # raises when no process of the group is left
            self.leftovers = True
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> OcaBox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:]).strip() or "(empty log)"
        except OSError as exc:
            return f"(no log: {exc})"


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{' '.join(argv)}: {exc}") from exc


# --- the run -----------------------------------------------------------------------------------------


Progress = Callable[[str], None]


def run_cases(plan: Plan, urls: dict[str, str], paths_files: dict[str, dict[str, str]], wrk: str,
              progress: Progress) -> list[Row]:
    rows = []
    for case in plan.cases:
        row = Row(case)
        for round_no in range(1, plan.rounds + 1):
            for server in SERVERS:
                paths = paths_files[server][case.set_name]
                if plan.warmup > 0:
                    run_wrk(wrk, urls[server], paths, connections=case.connections, seconds=plan.warmup,
                            threads=WRK_THREADS)
                result = run_wrk(wrk, urls[server], paths, connections=case.connections,
                                 seconds=plan.duration, threads=WRK_THREADS)
                row.runs[server].append(result)
                progress(f"{case.name} round {round_no}/{plan.rounds} {server}: "
                         f"{_number(row.value(result))} {case.metric}, p99 {_ms(result.p99_ms)}, "
                         f"errors {result.errors.describe()}")
        rows.append(row)
    return rows


def bench(plan: Plan, tools: dict[str, str], workdir: str, progress: Progress) -> tuple[list[Row], VideoMix | None]:
    sets = list({c.objects.name: c.objects for c in plan.cases if c.objects is not None}.values())
    root = os.path.join(workdir, "objects")
    started = time.monotonic()
    plain_paths = write_objects(root, sets)
    total = sum(s.size * s.count for s in sets)
    progress(f"wrote {sum(s.count for s in sets)} objects ({total >> 20} MiB) in "
             f"{time.monotonic() - started:.1f}s under {root}")
    mix = None
    samples = [key for objects in sets for key in {objects.keys()[0], objects.keys()[-1]}]
    if any(case.objects is None for case in plan.cases):
        media = plan.media or os.path.join(workdir, "media")
        started = time.monotonic()
        title, master = make_video_title(tools["oca"], media)
        mix = place_video_mix(media, title, master, root)
        plain_paths[VIDEO] = write_paths(os.path.join(workdir, "paths-video.txt"), mix.request_lines())
        total += sum(entry.size for entry in mix.entries)
        samples += [f"{title}/{master}", max(mix.entries, key=lambda e: e.size).key]
        progress(f"video title {title} from `oca content make` in {media} ({time.monotonic() - started:.1f}s): "
                 f"{len(mix.entries)} objects in the mix")
    signer = Signer(workdir) if plan.tokens else None
    paths_files = {"nginx": plain_paths, "oca": {name: tokenised_paths(f, signer) if signer else f
                                                 for name, f in plain_paths.items()}}
    nginx_port, oca_port, admin_port = free_ports(3)
    oca = OcaBox(tools["oca"], workdir, oca_port, admin_port, plan.workers, capacity=2 * total + (64 << 20))
    oca.write_config(os.path.join(workdir, "oca-access.log"), signer.jwks if signer else None)
    progress(f"oca cache import: {oca.import_dir(root):.1f}s")
    nginx = Nginx(tools["nginx"], NginxSettings(workdir, root, nginx_port, plan.workers, default_user()))
    with contextlib.ExitStack() as stack:
        stack.enter_context(nginx)
        nginx.start("/" + samples[0])
        stack.enter_context(oca)
        started = time.monotonic()
        oca.start()
        progress(f"nginx on {nginx.url}, oca on {oca.url} ({plan.workers} workers each; "
                 f"oca ready in {time.monotonic() - started:.1f}s)")
        urls = {"oca": oca.url, "nginx": nginx.url}
        verify_keys(urls, root, samples, signer)
        rows = run_cases(plan, urls, paths_files, tools["wrk"], progress)
    if oca.leftovers:
        progress("warning: oca serve did not exit cleanly on SIGTERM within 15s (processes were killed)")
    return rows, mix


# --- command line ------------------------------------------------------------------------------------


def find_tools(oca: str) -> dict[str, str] | str:
    """Paths of nginx, wrk and oca, or the one line saying which is missing."""
    return harness.find_tools("bench", oca, {"nginx": "/usr/sbin/nginx", "wrk": "/usr/bin/wrk"})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 3s per server and case (about 2.5 min with every case)")
    parser.add_argument("--duration", type=int, help="seconds per measured run (default 7; quick 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of uncounted wrk before each run")
    parser.add_argument("--rounds", type=int, help="runs per server and case (default 3; quick 1)")
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"SET@CONNECTIONS,... (default {DEFAULT_CASES})")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes of both servers (default: CPU count)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--no-tokens", action="store_true",
                        help="oca without tokens (default: tokens required, every request carries its title's token)")
    parser.add_argument("--media", metavar="DIR",
                        help=f"where `oca content make` writes the {VIDEO} case's title, reused by later runs "
                             "(default: made afresh in the work dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs, objects)")
    parser.add_argument("--oca", default=os.path.join(os.path.dirname(sys.executable), "oca"),
                        help="the oca executable (default: next to this python)")
    args = parser.parse_args(argv)
    for name in ("duration", "rounds", "workers", "warmup"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name} {value}: must be at least {0 if name == 'warmup' else 1}")
    try:
        args.case_list = parse_cases(args.cases)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = find_tools(args.oca)
    if isinstance(tools, str):
        print(tools, file=sys.stderr)
        return 2
    plan = Plan(args.case_list, args.rounds or (1 if args.quick else 3),
                args.duration or (3 if args.quick else 7), args.warmup, args.workers, not args.no_tokens,
                os.path.abspath(args.media) if args.media else None)
    with harness.harness_run("bench", args.keep) as work:
        try:
            rows, mix = bench(plan, tools, work.workdir, work.progress)
        except (BenchError, NginxError, WrkError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted; servers stopped", file=sys.stderr)
            return 130
        except SystemExit:
            print("bench: terminated; servers stopped", file=sys.stderr)
            raise
    print(machine_line(tools["nginx"], plan))
    print()
    if mix is not None:
        print(mix_line(mix))
        print()
        print(render_summary(mix))
        print()
    print(render_table(rows))
    if args.json:
        harness.write_json(args.json, [row.as_json() for row in rows])
    work.progress(f"done in {work.elapsed():.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
