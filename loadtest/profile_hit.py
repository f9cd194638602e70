"""`python -m loadtest.profile_hit`: what one 8 KiB hit costs a worker, in µs, and where it goes.

It starts a box the way `loadtest.bench` does (tokens required, objects of 8 KiB imported; `--set 64KiB` or
another of the bench's sets instead), drives it with
wrk (random objects, every request carrying its title's token) and measures, for one worker:
- its CPU time per request (user and system, from /proc/<pid>/stat over the measured seconds, divided by
  the requests wrk counted: the box has no other traffic);
- with `--py-spy`, where the user time goes: py-spy samples the worker (native frames included, so the
  parser and the event loop show up as themselves), each sample outside a system call is put in one
  bucket by the innermost frame that names a bucket (BUCKETS below), and the bucket's share of those
  samples times the user time per request is its cost in µs; the system time is the kernel's row. Only
  the main thread's samples count (another thread's, asleep, would pass for event-loop time).
- with `--nginx`, nginx's workers measured the same way over the same objects (plain paths);
- with `--bare` / `--bare-httptools`, loadtest.bare_server (a bare uvloop Protocol answering the same files
  from memory) measured the same way: the floor of Python and uvloop, without oca's own work;
  `--bare-sendfile`, the same server sending each body with os.sendfile from a descriptor kept open;
- with `--in-process N`, instead: the worker's own code fed N hits in this process through a transport
  that sends nothing (no kernel, no event loop), in CPU time: the figure to compare two versions of the
  code on a machine that is busy with other work.

A measurement, never a pass/fail test; only `main` prints or exits. Every run is bounded in time and the
box is stopped in `finally` (loadtest.harness: also on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvloop

from loadtest import harness
from loadtest.bench import (
    OBJECT_SETS,
    BenchError,
    ObjectSet,
    OcaBox,
    Signer,
    tokenised_paths,
    write_objects,
)
from loadtest.boxes import write_box_config
from loadtest.nginx import Nginx, NginxError, NginxSettings, default_user
from loadtest.ports import free_ports
from loadtest.processes import stop_process
from loadtest.wrk import WrkError, WrkResult, run_wrk

# bucket -> frame names (py-spy's "function (file)" text) that put a sample in it; the innermost frame that
# matches one decides. Order matters only for frames that could match two (none do).
BUCKETS: dict[str, tuple[str, ...]] = {
    "parse (httptools and its callbacks)": (
        "on_url (", "on_header (", "on_headers_complete (", "on_message_complete (", "check_framing (",
        "llhttp", "parser.c", "feed_data ("),
    "gate (token check)": ("check (oca/serve/gate.py", "verify (oca/tokens"),
    "memo (request bytes answered before)": ("get (oca/serve/memo.py", "touch (oca/serve/objects.py",
                                             "sync (oca/serve/objects.py"),
    "head (status line, Date, CMSD-Dynamic)": ("_head (", "hit_head (", "_with_cmsd (", "now (oca/serve/dates.py",
                                               "head_end (", "etp_from_tcp_info ("),
    "stats (counters)": ("observe (oca/serve/stats.py", "observe_hits ("),
    "access log (record, batched flush)": ("add_fast (", "add (oca/serve/accesslog", "flush (oca/serve/accesslog",
                                           "_format (oca/serve/accesslog"),
    "record (duration, batching for stats and log)": ("record (oca/serve/server.py", "record_hits (",
                                                      "hit (oca/serve/server.py"),
    "handler (key, lookup, response)": ("handle (oca/serve/handler.py", "_fast_hit (", "_parse_target (",
                                        "get (oca/serve/objects.py", "cached_body (", "changed (oca/storage",
                                        "read (oca/storage/generation"),
    "write (transport)": ("_start (oca/serve/connection.py", "write (", "writelines ("),
    "connection bookkeeping": ("data_received (", "_replay (", "_next (", "_finish (", "_discard ("),
}
LOOP = "event loop, other"
KERNEL = "kernel (system calls)"
# libc's system-call wrappers: a sample that stops in one is in the kernel (or waiting there)
_SYSCALLS = ("epoll_wait (", "epoll_pwait (", "read (", "readv (", "write (", "writev (", "recv (", "recvfrom (",
             "send (", "sendto (", "sendfile (", "sendfile64 (")
# frames only a thread started by `threading` has (native, and without --native): not the main thread
_OTHER_THREADS = ("thread_run (", "Thread._bootstrap (")


@dataclass(frozen=True)
class CpuTimes:
    user: float  # seconds
    system: float


def cpu_times(pid: int) -> CpuTimes:
    """utime and stime of a process (/proc/<pid>/stat fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return CpuTimes(int(fields[11]) / ticks, int(fields[12]) / ticks)


def bucket_of(stack: str) -> str:
    """The bucket of one py-spy raw stack (`frame;frame;...`, outermost first)."""
    frames = stack.split(";")
    if frames[-1].startswith(_SYSCALLS) and "libc" in frames[-1]:
        return KERNEL
    for frame in reversed(frames):
        for bucket, names in BUCKETS.items():
            if any(name in frame for name in names):
                return bucket
    return LOOP


def read_raw(path: str, within: tuple[str, ...] = ()) -> Counter[str]:
    """Samples per bucket from py-spy's raw (collapsed stacks) output: `stack count` per line; with `within`,
    only the stacks that pass through a frame naming one of those. Only the main thread's stacks count: py-spy
    samples every thread, and another thread's (the access log's writer, mostly asleep on its condition in an
    unnamed libc frame) would otherwise land in the event loop's bucket and be charged the main thread's user
    time; the loop, the parser and the handler all run on the main thread."""
    counts: Counter[str] = Counter()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if within and not any(name in stack for name in within):
                continue
            if any(root in stack for root in _OTHER_THREADS):
                continue
            if stack and count.isdigit():
                counts[bucket_of(stack)] += int(count)
    return counts


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def per_request(result: WrkResult, cpu: CpuTimes) -> str:
    per = 1e6 / max(1, result.requests)
    return (f"{(cpu.user + cpu.system) * per:.1f} µs ({cpu.user * per:.1f} user, {cpu.system * per:.1f} system); "
            f"wrk {result.requests_per_sec:,.0f} req/s, p99 {result.p99_ms} ms, errors {result.errors.describe()}")


def render_samples(result: WrkResult, cpu: CpuTimes, samples: Counter[str]) -> str:
    """The user time per request split by the samples outside system calls; the system time is the kernel's.
    (py-spy samples wall time: a sample in a system call may be waiting, so those samples size nothing.)"""
    user = cpu.user * 1e6 / max(1, result.requests)
    in_user = sum(n for bucket, n in samples.items() if bucket != KERNEL) or 1
    lines = ["| where | samples (outside system calls) | µs per request |", "|---|---:|---:|"]
    for bucket, count in samples.most_common():
        if bucket != KERNEL:
            lines.append(f"| {bucket} | {count / in_user:.1%} | {count / in_user * user:.2f} |")
    lines.append(f"| {KERNEL} | {samples[KERNEL]} samples | {cpu.system * 1e6 / max(1, result.requests):.2f} |")
    return "\n".join(lines)


def measure(args: argparse.Namespace, tools: dict[str, str], url: str, paths: str, pids: list[int],
            raw: str | None) -> tuple[WrkResult, CpuTimes, Counter[str] | None]:
    """One measured wrk run; the workers' CPU time over it, and py-spy's buckets of the first worker."""
    run_wrk(tools["wrk"], url, paths, connections=args.connections, seconds=2)  # warm: tokens, memory
    spy: subprocess.Popen[bytes] | None = None
    if raw is not None:
        spy = subprocess.Popen([tools["py-spy"], "record", "--native", "-r", str(args.rate), "-d", str(args.seconds),
                                "-f", "raw", "-o", raw, "-p", str(pids[0])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = {pid: cpu_times(pid) for pid in pids}
    result = run_wrk(tools["wrk"], url, paths, connections=args.connections, seconds=args.seconds)
    after = {pid: cpu_times(pid) for pid in pids}
    cpu = CpuTimes(sum(after[p].user - before[p].user for p in pids),
                   sum(after[p].system - before[p].system for p in pids))
    samples = None
    if spy is not None and raw is not None:
        try:
            spy.wait(args.seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        samples = read_raw(raw) if os.path.exists(raw) else None
    return result, cpu, samples


def profile(args: argparse.Namespace, tools: dict[str, str], workdir: str, progress: Callable[[str], None]) -> str:
    objects = OBJECT_SETS[args.set]
    root = os.path.join(workdir, "objects")
    plain = write_objects(root, [objects])[objects.name]
    signer = Signer(workdir)
    paths = tokenised_paths(plain, signer)
    nginx_port, port, admin_port = free_ports(3)
    if args.only_bare:
        return "\n".join(_others(args, tools, workdir, root, plain, nginx_port, progress))
    box = OcaBox(tools["oca"], workdir, port, admin_port, args.workers, capacity=2 * objects.size * objects.count
                 + (64 << 20))
    box.write_config(os.path.join(workdir, "oca-access.log"), signer.jwks)
    box.import_dir(root)
    with box:
        box.start()
        assert box.process is not None
        pids = worker_pids(box.process.pid)
        progress(f"oca up, workers {pids}; measuring {args.seconds}s at {args.connections} connections")
        raw = os.path.join(workdir, "py-spy.txt") if args.py_spy else None
        result, cpu, samples = measure(args, tools, box.url, paths, pids, raw)
        if raw is not None and args.keep_raw and os.path.exists(raw):
            shutil.copy(raw, args.keep_raw)
    lines = [f"oca ({len(pids)} worker(s)), CPU per {args.set} hit: {per_request(result, cpu)}",
             *_others(args, tools, workdir, root, plain, nginx_port, progress)]
    if samples:
        lines += ["", f"oca's first worker, py-spy --native at {args.rate} Hz:", "",
                  render_samples(result, cpu, samples)]
    return "\n".join(lines)


def _others(args: argparse.Namespace, tools: dict[str, str], workdir: str, root: str, plain: str, nginx_port: int,
            progress: Callable[[str], None]) -> list[str]:
    """nginx and the bare servers over the same objects, each measured as oca's worker is: a line each."""
    objects = OBJECT_SETS[args.set]
    lines = []
    if args.nginx:
        settings = NginxSettings(workdir, root, nginx_port, args.workers, default_user())
        with Nginx(tools["nginx"], settings) as nginx:
            nginx.start("/" + objects.keys()[0])
            assert nginx.process is not None
            pids = worker_pids(nginx.process.pid)
            progress(f"nginx up, workers {pids}")
            nginx_result, nginx_cpu, _ = measure(args, tools, nginx.url, plain, pids, None)
            lines.append(f"nginx ({len(pids)} worker(s)), CPU per {args.set} hit: "
                         f"{per_request(nginx_result, nginx_cpu)}")
    for flags in ((((),) if args.bare else ()) + ((("--httptools",),) if args.bare_httptools else ())
                  + ((("--sendfile",),) if args.bare_sendfile else ())):
        bare_result, bare_cpu = measure_bare(args, tools, root, plain, flags, progress)
        lines.append(f"bare uvloop Protocol{' ' + ' '.join(flags) if flags else ''}, CPU per {args.set} hit: "
                     f"{per_request(bare_result, bare_cpu)}")
    return lines


def measure_bare(args: argparse.Namespace, tools: dict[str, str], root: str, paths: str, flags: tuple[str, ...],
                 progress: Callable[[str], None]) -> tuple[WrkResult, CpuTimes]:
    """loadtest.bare_server over the same objects (plain paths), measured as a worker is."""
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "loadtest.bare_server", root, str(port), *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # its line once it listens (bounded: the harness's timeout ends the run)
        if not ready.startswith("bare:"):
            raise BenchError(f"{' '.join(argv)} did not start (exit {proc.poll()})")
        progress(f"bare server up, pid {proc.pid} {' '.join(flags)}")
        result, cpu, _ = measure(args, tools, f"http://127.0.0.1:{port}", paths, [proc.pid], None)
        return result, cpu
    finally:
        stop_process(proc, timeout=10)


class NullTransport(asyncio.Transport):
    """Takes every write and sends nothing: what is left is the worker's own cost, without the kernel's."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": ("127.0.0.1", 1)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@dataclass
class InProcessWorker:
    """The real Worker (tokens required, access log on) with one connection whose transport sends nothing,
    and the request bytes wrk sends for each object (every one answered once already: bodies in memory)."""

    worker: Any  # oca.serve.worker.Worker
    conn: Any  # oca.serve.connection.Connection
    transport: NullTransport
    wire: list[bytes]


@contextlib.contextmanager
def in_process_worker(workdir: str, objects_count: int = 64) -> Iterator[InProcessWorker]:
    """A worker as `in_process` measures it, its access log closed (written whole) on the way out."""
    from oca.config import load_box_config
    from oca.serve.connection import Connection
    from oca.serve.worker import Worker
    from oca.storage import Store

    objects = ObjectSet("8KiB", 8 << 10, objects_count, first_title=101, per_title=32)
    root = os.path.join(workdir, "objects")
    write_objects(root, [objects])
    signer = Signer(workdir)
    config = load_box_config(write_box_config(workdir, tokens={"required": True, "jwks_file": signer.jwks},
                                              log={"access_log": os.path.join(workdir, "access.log")},
                                              storage={"memory_cache": {"max_object_size": "256KiB",
                                                                        "capacity": "256MiB"}}))
    keys = objects.keys()
    with Store.open(config.storage) as store:
        for key in keys:
            store.put_file(os.path.join(root, key), key)
    wire = [f"GET {signer.path(key)} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".encode() for key in keys]
    loop = uvloop.new_event_loop()  # as a worker runs
    listener, peer = socket.socketpair()
    try:
        worker = Worker(config, listener, None, loop)
        conn = Connection(worker.server)
        transport = NullTransport(peer)
        conn.connection_made(transport)
        for data in wire:  # tokens verified, bodies read into memory
            conn.data_received(data)
        yield InProcessWorker(worker, conn, transport, wire)
        worker.server.record_hits()
        # its writer thread may still be writing: the log is whole only once closed
        worker.server.access_log.close()
    finally:
        loop.close()
        listener.close()
        peer.close()


def in_process(requests: int, workdir: str, progress: Callable[[str], None], objects_count: int = 64) -> str:
    """µs per 8 KiB hit spent in the worker's Python alone: the real Worker (tokens required, access log
    on) fed wrk's request bytes on one connection with a transport that sends nothing; the best of 10
    rounds, in CPU time. `objects_count` above 64: that many objects, asked in random order as wrk asks
    (its working set no longer fits the CPU's caches, as under wrk); 64: the historical figure, in order."""
    with in_process_worker(workdir, objects_count) as box:
        conn = box.conn
        gc.collect()
        gc.freeze()
        gc.disable()  # as a worker runs (oca.serve.worker): its sweep collects once a second
        try:
            best = float("inf")
            rounds = 10
            batch = box.wire * max(1, requests // len(box.wire) // rounds)
            if objects_count > 64:
                random.Random(1).shuffle(batch)
            for _ in range(rounds):
                started = time.thread_time()  # CPU time: other processes on the machine do not count
                for data in batch:
                    conn.data_received(data)
                best = min(best, (time.thread_time() - started) / len(batch))
        finally:
            gc.enable()
    progress(f"{len(batch):,} requests x {rounds}, {box.transport.written:,} bytes written")
    return f"in process (no kernel, no event loop): {best * 1e6:.2f} µs of Python per 8 KiB hit"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.profile_hit", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds of wrk (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--set", choices=sorted(OBJECT_SETS), default="8KiB",
                        help="the bench's object set to ask for (default 8KiB; not with --in-process)")
    parser.add_argument("--workers", type=int, default=1, help="box workers (default 1: one process to read)")
    parser.add_argument("--nginx", action="store_true", help="then nginx over the same objects, measured alike")
    parser.add_argument("--bare", action="store_true",
                        help="then loadtest.bare_server (a bare uvloop Protocol) over the same objects, measured alike")
    parser.add_argument("--bare-httptools", action="store_true", help="then the bare server parsing with httptools")
    parser.add_argument("--bare-sendfile", action="store_true",
                        help="then the bare server sending bodies with sendfile from open descriptors")
    parser.add_argument("--only-bare", action="store_true", help="measure no oca box (with --bare or --nginx)")
    parser.add_argument("--py-spy", action="store_true",
                        help="sample the worker (or, with --in-process, this run) with py-spy: the µs per bucket")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second (default 500)")
    parser.add_argument("--keep-raw", metavar="FILE", help="copy py-spy's collapsed stacks to FILE")
    parser.add_argument("--in-process", type=int, metavar="N",
                        help="instead: N hits fed to the worker's code in this process (no wrk, no kernel)")
    parser.add_argument("--objects", type=int, default=64, metavar="N",
                        help="with --in-process: objects the hits spread over; above 64 in random order (default 64)")
    parser.add_argument("--oca", default=os.path.join(os.path.dirname(sys.executable), "oca"))
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.seconds > 120 or args.connections < 1 or args.workers < 1:
        parser.error("--seconds 1..120, --connections and --workers at least 1")
    return args


def in_process_sampled(args: argparse.Namespace, py_spy: str, workdir: str) -> str:
    """`--in-process N` run again under py-spy: its figure, split by the buckets of the samples taken in
    the request path (data_received, and the batched records)."""
    raw = os.path.join(workdir, "in-process.txt")
    argv = [py_spy, "record", "--native", "-r", str(args.rate), "-f", "raw", "-o", raw, "--",
            sys.executable, "-m", "loadtest.profile_hit", "--in-process", str(args.in_process)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    figure = next((line for line in done.stdout.splitlines() if line.startswith("in process")), None)
    if done.returncode != 0 or figure is None or not os.path.exists(raw):
        raise BenchError(f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    micros = float(figure.split(": ")[1].split(" ")[0])
    samples = read_raw(raw, within=("data_received (", "record_hits ("))
    total = sum(samples.values()) or 1
    lines = [figure, "", "| where | share of samples | µs per hit |", "|---|---:|---:|"]
    lines += [f"| {bucket} | {n / total:.1%} | {n / total * micros:.2f} |" for bucket, n in samples.most_common()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.in_process:
        with harness.harness_run("profile_hit", False) as work:
            if not args.py_spy:
                print(in_process(args.in_process, work.workdir, work.progress, args.objects))
                return 0
            py_spy = harness.find_tools("profile_hit", sys.executable,
                                        {"py-spy": os.path.join(os.path.dirname(sys.executable), "py-spy")})
            if isinstance(py_spy, str):
                print(py_spy, file=sys.stderr)
                return 2
            try:
                print(in_process_sampled(args, py_spy["py-spy"], work.workdir))
            except BenchError as exc:
                print(f"profile_hit: {exc}", file=sys.stderr)
                return 1
        return 0
    fallbacks = {"wrk": "/usr/bin/wrk", "nginx": "/usr/sbin/nginx"}
    if args.py_spy:
        fallbacks["py-spy"] = os.path.join(os.path.dirname(sys.executable), "py-spy")
    tools = harness.find_tools("profile_hit", args.oca, fallbacks)
    if isinstance(tools, str):
        print(tools, file=sys.stderr)
        return 2
    with harness.harness_run("profile_hit", False) as work:
        try:
            report = profile(args, tools, work.workdir, work.progress)
        except (BenchError, NginxError, WrkError) as exc:
            print(f"profile_hit: {exc}", file=sys.stderr)
            return 1
    print(report)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
