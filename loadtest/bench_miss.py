"""The miss path: cold objects through a box (one coalesced upstream fetch, streamed while it arrives) against
the same objects straight from the origin — first byte and throughput, one object at a time and 16 at once,
as ratios box / origin, in the figures table format.

`python -m loadtest.bench_miss [--quick] [--objects 20] [--concurrent 16] [--rounds 3] [--size 8MiB]
[--json FILE]` writes the objects, starts the lab's origin (`python -m oca.lab.origin`) and a box (2 workers,
tokens off, fetch from that origin) on loopback, then:
- one at a time, for each of `--objects` objects: GET it from the origin directly, then through the box (a
  miss), then through the box again (a hit); medians of first byte and of throughput;
- `--rounds` times, `--concurrent` other objects at once: all of them from the origin directly, then all of
  them through the box (each a miss); the median first byte, and the throughput of the batch (its bytes
  over the time from the first request to the last byte), medians over the rounds.
- CPU per object in the one-at-a-time phase (user + system, from /proc; clock ticks of 10 ms summed over
  the objects): the origin and this client during a direct GET, and during a miss the origin, this client,
  the box's workers, and its master over the whole phase (its miss's tier write and install run after the
  client's last byte; it does nothing for the direct GETs and the hits), and of the master's, its event
  loop's thread (the upstream body and the workers' announcements; the rest is its writer and storage
  threads). On a machine whose cores are busy the throughput ratio follows the CPU ratio.
The goals are issue 16's: a miss's throughput ≥ 0.8x the origin's, its first byte ≤ the origin's + 1 ms.
A measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from loadtest.harness import Figure, cpu_name, harness_run, render_figures, write_json
from loadtest.ports import free_port
from loadtest.processes import stop_process
from oca.config.units import parse_size


@dataclass(frozen=True)
class Timing:
    first_byte: float  # seconds from the request to the first body byte
    total: float  # seconds to the last body byte
    size: int
    started: float = 0.0  # time.perf_counter() at the request


@dataclass(frozen=True)
class Measured:
    direct: list[Timing]  # one object at a time: origin direct
    miss: list[Timing]  # the same objects through the box, cold
    hit: list[Timing]  # and again, now held
    batches_direct: list[list[Timing]]  # each round's concurrent GETs, origin direct
    batches_miss: list[list[Timing]]  # the same objects through the box, cold, all at once
    cpu_direct: dict[str, float] = field(default_factory=dict)  # CPU seconds per direct GET, by process
    cpu_miss: dict[str, float] = field(default_factory=dict)  # and per cold miss


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process and all its threads (/proc/<pid>/stat), or of one of its threads
    (/proc/<pid>/task/<thread>/stat); 0 if it is gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path, encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started (the box's workers), from /proc/<pid>/task/*/children."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                found += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return found


class CpuMeter:
    """CPU seconds of the origin, this client, the box's master and its workers, read between GETs."""

    def __init__(self, origin: int, master: int) -> None:
        self.origin, self.master = origin, master

    def read(self) -> dict[str, float]:
        return {"origin": cpu_seconds(self.origin), "client": time.process_time(),
                "master": cpu_seconds(self.master), "master_loop": cpu_seconds(self.master, self.master),
                "workers": sum(cpu_seconds(p) for p in child_pids(self.master))}


def batch_throughput(batch: list[Timing]) -> float:
    """Bytes per second of a batch of concurrent GETs: all their bytes over first request to last byte."""
    start = min(t.started for t in batch)
    end = max(t.started + t.total for t in batch)
    return sum(t.size for t in batch) / (end - start)


def fetch(port: int, path: str) -> Timing:
    """One GET on a fresh connection, timed at the first body byte and at the last."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"{path}: connection closed before the head")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{path}: {head.splitlines()[0].decode(errors='replace')}")
        first = time.perf_counter() if body else None
        size = len(body)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            if first is None:
                first = time.perf_counter()
            size += len(chunk)
        end = time.perf_counter()
    return Timing((first or end) - started, end - started, size, started)


def fetch_all(port: int, paths: list[str]) -> list[Timing]:
    """One GET per path, all at once (a thread each, released together), each on its own connection."""
    results: list[Timing | BaseException | None] = [None] * len(paths)
    gate = threading.Barrier(len(paths))

    def one(i: int) -> None:
        try:
            gate.wait()
            results[i] = fetch(port, paths[i])
        except BaseException as exc:  # handed to the caller, which raises it
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timings = []
    for result in results:
        if not isinstance(result, Timing):
            raise RuntimeError(f"a concurrent GET failed: {result}")
        timings.append(result)
    return timings



def wait_http(port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fetch(port, path)
            return
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered {path} on port {port} within {timeout:g}s")


def measure(args: argparse.Namespace, workdir: str) -> Measured:
    """One at a time, each object's timings: straight from the origin, through the box (a miss), through it
    again (a hit); then the concurrent rounds. The box's access log is `workdir`/access.log."""
    content = os.path.join(workdir, "content")
    keys = [f"titles/{9000 + i // 10}/1080p/seg_{i:05d}.m4s" for i in range(args.objects)]
    rounds = [[f"titles/{9500 + r}/1080p/seg_{i:05d}.m4s" for i in range(args.concurrent)]
              for r in range(args.rounds)]
    total = len(keys) + sum(len(batch) for batch in rounds)
    for key in keys + [k for batch in rounds for k in batch]:
        path = os.path.join(content, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(os.urandom(args.size))
    origin_port, port, admin_port = free_port(), free_port(), free_port()
    config = {
        "box": {"id": "bench-box", "site": "bench"},
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "storage": {"state_dir": os.path.join(workdir, "state"),
                    "tiers": [{"name": "hdd", "path": os.path.join(workdir, "hdd"),
                               "capacity": f"{2 * args.size * total // (1 << 20) + 64}MiB"}]},
        "log": {"access_log": os.path.join(workdir, "access.log"), "level": "warning"},
        "tokens": {"required": False},
        "fetch": {"sources": [{"name": "origin", "url": f"http://127.0.0.1:{origin_port}", "kind": "origin"}],
                  "slice_size": 0},
    }
    config_path = os.path.join(workdir, "oca.yaml")
    with open(config_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)
    bindir = os.path.dirname(sys.executable)
    with open(os.path.join(workdir, "origin.log"), "wb") as olog, open(os.path.join(workdir, "box.log"), "wb") as blog:
        origin = subprocess.Popen([sys.executable, "-m", "oca.lab.origin", content, f"127.0.0.1:{origin_port}"],
                                  stdout=olog, stderr=subprocess.STDOUT)
        box = subprocess.Popen([os.path.join(bindir, "oca"), "serve", "--config", config_path], stdout=blog,
                               stderr=subprocess.STDOUT)
        try:
            wait_http(origin_port, "/healthz")
            wait_http(port, "/healthz")
            direct, miss, hit = [], [], []
            meter = CpuMeter(origin.pid, box.pid)
            used_direct = dict.fromkeys(("origin", "client"), 0.0)
            used_miss = dict.fromkeys(("origin", "client", "workers"), 0.0)
            phase = meter.read()
            for key in keys:
                before = meter.read()
                direct.append(fetch(origin_port, f"/{key}"))
                between = meter.read()
                miss.append(fetch(port, f"/{key}"))
                after = meter.read()
                hit.append(fetch(port, f"/{key}"))
                for name in used_direct:
                    used_direct[name] += between[name] - before[name]
                for name in used_miss:
                    used_miss[name] += after[name] - between[name]
            end = meter.read()
            for name in ("master", "master_loop"):  # its event loop's thread, apart from its writer threads
                used_miss[name] = end[name] - phase[name]
            cpu_direct = {name: used / len(keys) for name, used in used_direct.items()}
            cpu_miss = {name: used / len(keys) for name, used in used_miss.items()}
            batches_direct, batches_miss = [], []
            for batch in rounds:
                paths = [f"/{key}" for key in batch]
                batches_direct.append(fetch_all(origin_port, paths))
                batches_miss.append(fetch_all(port, paths))
        finally:
            for process in (box, origin):
                stop_process(process)
    return Measured(direct, miss, hit, batches_direct, batches_miss, cpu_direct, cpu_miss)


def rows(measured: Measured, size: int) -> list[Figure]:
    def ms(timings: list[Timing]) -> float:
        return statistics.median(t.first_byte for t in timings) * 1000

    def mib_s(timings: list[Timing]) -> float:
        return statistics.median(t.size / t.total for t in timings) / (1 << 20)

    def batch_ms(batches: list[list[Timing]]) -> float:
        return statistics.median(ms(batch) for batch in batches)

    def batch_mib_s(batches: list[list[Timing]]) -> float:
        return statistics.median(batch_throughput(batch) for batch in batches) / (1 << 20)

    m = measured
    mib = size / (1 << 20)
    out = [
        Figure(f"1 object: first byte, origin direct ({mib:g} MiB)", f"{ms(m.direct):.2f} ms", "-", "-",
               ms(m.direct), "ms"),
        Figure("1 object: first byte, through the box (cold miss)", f"{ms(m.miss):.2f} ms", "≤ origin + 1 ms",
               f"{ms(m.miss) - ms(m.direct):+.2f} ms", ms(m.miss), "ms"),
        Figure("1 object: first byte, through the box (hit)", f"{ms(m.hit):.2f} ms", "-", "-", ms(m.hit), "ms"),
        Figure("1 object: throughput, origin direct", f"{mib_s(m.direct):,.0f} MiB/s", "-", "-",
               mib_s(m.direct), "MiB/s"),
        Figure("1 object: throughput, through the box (cold miss)", f"{mib_s(m.miss):,.0f} MiB/s", "≥ 0.8x origin",
               f"{mib_s(m.miss) / mib_s(m.direct):.2f}x origin", mib_s(m.miss), "MiB/s"),
        Figure("1 object: throughput, through the box (hit)", f"{mib_s(m.hit):,.0f} MiB/s", "-", "-",
               mib_s(m.hit), "MiB/s"),
    ]
    if m.cpu_direct and m.cpu_miss:
        names = ("origin", "master", "workers", "client")
        direct_cpu, miss_cpu = sum(m.cpu_direct.values()) * 1000, sum(m.cpu_miss[name] for name in names) * 1000
        parts = ", ".join(f"{name} {m.cpu_miss[name] * 1000:.1f}" for name in names)
        if "master_loop" in m.cpu_miss:
            parts += f"; of the master's, its event loop {m.cpu_miss['master_loop'] * 1000:.1f}"
        out += [
            Figure("1 object: CPU per GET, origin direct (origin + client)",
                   f"{direct_cpu:.1f} ms (origin {m.cpu_direct['origin'] * 1000:.1f}, "
                   f"client {m.cpu_direct['client'] * 1000:.1f})", "-", "-", direct_cpu, "ms"),
            Figure("1 object: CPU per cold miss (origin + box + client)", f"{miss_cpu:.1f} ms ({parts})", "-",
                   f"{miss_cpu / direct_cpu:.1f}x origin direct" if direct_cpu else "-", miss_cpu, "ms"),
        ]
    if m.batches_direct and m.batches_miss:
        n = len(m.batches_miss[0])
        direct_ms, miss_ms = batch_ms(m.batches_direct), batch_ms(m.batches_miss)
        direct_rate, miss_rate = batch_mib_s(m.batches_direct), batch_mib_s(m.batches_miss)
        out += [
            Figure(f"{n} at once: first byte (median), origin direct", f"{direct_ms:.2f} ms", "-", "-",
                   direct_ms, "ms"),
            Figure(f"{n} at once: first byte (median), through the box (cold misses)", f"{miss_ms:.2f} ms",
                   "≤ origin + 1 ms", f"{miss_ms - direct_ms:+.2f} ms", miss_ms, "ms"),
            Figure(f"{n} at once: throughput of all {n}, origin direct", f"{direct_rate:,.0f} MiB/s", "-", "-",
                   direct_rate, "MiB/s"),
            Figure(f"{n} at once: throughput of all {n}, through the box (cold misses)",
                   f"{miss_rate:,.0f} MiB/s", "≥ 0.8x origin", f"{miss_rate / direct_rate:.2f}x origin",
                   miss_rate, "MiB/s"),
        ]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_miss", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 objects of 2 MiB, one round of 4 at once")
    parser.add_argument("--objects", type=int, default=20, help="objects fetched one at a time")
    parser.add_argument("--concurrent", type=int, default=16, help="objects fetched at once in each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent objects (0: none)")
    parser.add_argument("--size", default="8MiB")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    try:
        args.size = parse_size(args.size)
    except ValueError as exc:
        parser.error(f"--size: {exc}")
    if args.quick:
        args.objects, args.size, args.concurrent, args.rounds = 5, 2 << 20, 4, 1
    if args.objects < 1 or args.size < 1 or args.concurrent < 1:
        parser.error("--objects, --concurrent and --size must be positive")
    if args.rounds < 0:
        parser.error("--rounds must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with harness_run("bench_miss", args.keep) as run:
        table = rows(measure(args, run.workdir), args.size)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"machine: {cpu_name()}, nproc {len(os.sched_getaffinity(0))}, python {platform.python_version()}; "
          f"{args.objects} cold objects of {args.size >> 20} MiB one at a time, then {args.rounds} rounds of "
          f"{args.concurrent} at once; box with 2 workers; {now}")
    print()
    print(render_figures(table))
    if args.json:
        write_json(args.json, [row.as_json() for row in table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
