"""The miss path: a cold object through a box (one coalesced upstream fetch, streamed while it arrives) against
the same object straight from the origin — first-byte latency and throughput, in the figures table format.

`python -m loadtest.bench_miss [--quick] [--objects 20] [--size 8MiB] [--json FILE]` writes the objects, starts
the lab's origin (`python -m oca.lab.origin`) and a box (2 workers, tokens off, fetch from that origin) on
loopback, then for each object: GET it from the origin directly, then GET it through the box (a miss), then
GET it through the box again (a hit). It reports the medians of first-byte time and of throughput for each,
and the ratio box-miss / origin. A measurement, never a pass/fail test.
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
import time
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from loadtest.harness import Figure, cpu_name, harness_run, render_figures, write_json
from oca.config.units import parse_size


@dataclass(frozen=True)
class Timing:
    first_byte: float  # seconds from the request to the first body byte
    total: float  # seconds to the last body byte
    size: int


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
    return Timing((first or end) - started, end - started, size)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fetch(port, path)
            return
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered {path} on port {port} within {timeout:g}s")


def measure(args: argparse.Namespace, workdir: str) -> tuple[list[Timing], list[Timing], list[Timing]]:
    """Each object's timings: straight from the origin, through the box (a miss), through it again (a hit).
    The box's access log is `workdir`/access.log."""
    content = os.path.join(workdir, "content")
    keys = [f"titles/{9000 + i // 10}/1080p/seg_{i:05d}.m4s" for i in range(args.objects)]
    for key in keys:
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
                               "capacity": f"{2 * args.size * args.objects // (1 << 20) + 64}MiB"}]},
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
            for key in keys:
                direct.append(fetch(origin_port, f"/{key}"))
                miss.append(fetch(port, f"/{key}"))
                hit.append(fetch(port, f"/{key}"))
        finally:
            for process in (box, origin):
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    return direct, miss, hit


def rows(direct: list[Timing], miss: list[Timing], hit: list[Timing], size: int) -> list[Figure]:
    def ms(timings: list[Timing]) -> float:
        return statistics.median(t.first_byte for t in timings) * 1000

    def mib_s(timings: list[Timing]) -> float:
        return statistics.median(t.size / t.total for t in timings) / (1 << 20)

    mib = size / (1 << 20)
    out = [
        Figure(f"first byte, origin direct ({mib:g} MiB)", f"{ms(direct):.2f} ms", "-", "-"),
        Figure("first byte, through the box (cold miss)", f"{ms(miss):.2f} ms",
            "close to origin", f"{ms(miss) - ms(direct):+.2f} ms"),
        Figure("first byte, through the box (hit)", f"{ms(hit):.2f} ms", "-", "-"),
        Figure("throughput, origin direct", f"{mib_s(direct):,.0f} MiB/s", "-", "-"),
        Figure("throughput, through the box (cold miss)", f"{mib_s(miss):,.0f} MiB/s", "-",
            f"{mib_s(miss) / mib_s(direct):.2f}x origin"),
        Figure("throughput, through the box (hit)", f"{mib_s(hit):,.0f} MiB/s", "-", "-"),
    ]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_miss", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 objects of 2 MiB")
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--size", default="8MiB")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    try:
        args.size = parse_size(args.size)
    except ValueError as exc:
        parser.error(f"--size: {exc}")
    if args.quick:
        args.objects, args.size = 5, 2 << 20
    if args.objects < 1 or args.size < 1:
        parser.error("--objects and --size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with harness_run("bench_miss", args.keep) as run:
        table = rows(*measure(args, run.workdir), args.size)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"machine: {cpu_name()}, nproc {len(os.sched_getaffinity(0))}, python {platform.python_version()}; "
          f"{args.objects} cold objects of {args.size >> 20} MiB, one at a time, box with 2 workers; {now}")
    print()
    print(render_figures(table))
    if args.json:
        write_json(args.json, [row.as_json() for row in table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
