"""How a box grows with the objects it holds: import rate, memory, start-up, rebuild, /status under import, hits.

`python -m loadtest.bench_store --objects 100000,1000000 [--size 4KiB] [--live-import 100000] [--hits 20]
[--json FILE]`: for each N, in a fresh directory,
1. writes N source files of `--size` bytes and imports them with the real import (`oca cache import`, the
   store opened by the command: batches of 1,024 written at their final names, one index commit each, shared
   syncfs); reports objects/s, the command's CPU per object and its peak RSS;
2. starts a box (`oca serve`, 2 workers) on the store and times start to the first hit (200; served from the
   index while the master loads its catalog in the background) and start to loaded (`/status` counts N);
3. for `--hits` seconds GETs random keys over all N on one keep-alive connection: hit p50/p99, then master
   and worker RSS;
4. imports `--live-import` more objects through the running box (the admin API, as a fill or an operator
   does) while polling `/status` every 100 ms with the control plane's 1 s timeout: /status p50/p99/max and
   misses;
5. stops the box, deletes the index and reopens the store (a rebuild from the tiers' sidecars), twice: as a
   box opens it (`rebuild_per_s`: the index rebuilt, servable from then on while the catalog loads from it in
   the background; `rebuild_cpu_us_per_object`, that rebuild's CPU time) and as `oca cache` does
   (`rebuild_and_load_per_s`: the catalog loaded too; its CPU time per object). CPU time, which the machine's
   load does not inflate as much as the wall clock, counts the scan's worker processes too.
`--populate layout|index` fills the store faster than step 1's import, which takes hours at 10^6 on a busy machine:
`layout` writes the N objects straight into the tier's layout (objects and sidecars, as `--rebuild-only` does),
then step 5 runs first (its rebuild builds the index the box opens); `index` writes N index rows directly with
each object file a hard link to one of a few identical files (no inode, no block, no sidecar per object: a hit
on any key reads a real file, but no rebuild can be measured). Either way step 1 then imports
`--import-objects` more (the import's rate and peak RSS into a store already holding N), and steps 2-4 run on
all of them.
`--rebuild-only` does step 5 alone, on N objects written straight into a tier's layout (the object and its
sidecar, with the store's own layout code, as a store leaves them): minutes at 10^6 where the import takes tens.
With `--link-objects` every object file is a hard link to one of a few identical files and only the sidecars
are files of their own (10^7 objects in 10^7 inodes; on an ext4 with inline_data their 148 bytes sit in the
inode); `--writers 2` writes them from two processes; `--box-open-only` times only the box's kind of open.
`--index-only` times only the rebuild's index write (Index.create) of N rows arriving as a scan yields them, in
hash order, not key order (no files: 10^7 fits any disk): rows/s, CPU per row and the process's peak RSS growth.
`--fanout-dirs 512` puts them in 512 of the 65,536 fan-out directories, ~195 objects each at 10^5: about as dense
as 10^7 objects (which do not fit this machine's inodes) fill all of them (~153 each), so a scan's per-directory
cost weighs what it would there.
An N whose files do not fit the work directory's filesystem (three inodes and twice the bytes per object at
the peak) is skipped with the reason. A measurement, never a pass/fail test. Everything listens on 127.0.0.1;
every process is killed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import xxhash

from loadtest.boxes import OCA, Box, kill_box, start_box, write_box_config
from loadtest.wrk import WrkResult, run_wrk
from oca.config.units import parse_size
from oca.storage.index import Index, RowValues, index_path
from oca.storage.layout import Sidecar, TierLayout, key_hash


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def key_of(i: int) -> str:
    return f"titles/{i // 500}/720p/seg_{i % 500:05d}.m4s"


def write_sources(root: str, first: int, count: int, size: int) -> None:
    rng = random.Random(first)
    block = rng.randbytes(size)
    for i in range(first, first + count):
        path = os.path.join(root, key_of(i))
        if i % 500 == 0 or i == first:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(i.to_bytes(8, "big") + block[8:])  # distinct contents, no random bytes per file


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fits(n: int, size: int, live: int, workdir: str, populate: str = "import", import_objects: int = 0) -> str:
    """Why N objects do not fit the work directory's filesystem ('' if they do). Files written through an import
    at the peak have their source file, their stored copy and its sidecar (three inodes, twice their bytes in
    4 KiB blocks, a block of sidecar); objects written into the layout, no source; index rows with hard links,
    no inode and no block, ~100 bytes of directory entry and ~200 of index."""
    imported = (n if populate == "import" else import_objects) + live
    per_block = -(-max(size, 1) // 4096) * 4096
    inodes, blocks = 3 * imported, imported * (2 * per_block + 4096)
    if populate == "layout":
        inodes, blocks = inodes + 2 * n, blocks + n * (per_block + 4096)
    elif populate == "linked-layout":  # --rebuild-only --link-objects: an inode per sidecar, a block unless inline
        inodes, blocks = n, n * (200 if sidecar_inline(workdir) else 4096)
    elif populate == "index":
        blocks += n * 300
    fs = os.statvfs(workdir)
    if fs.f_favail and inodes > fs.f_favail:
        return f"{n:,} objects need ~{inodes:,} inodes; the filesystem has {fs.f_favail:,} free"
    free = fs.f_bavail * fs.f_frsize
    if blocks > free:
        return f"{n:,} objects need ~{blocks / 2**30:.0f} GiB; the filesystem has {free / 2**30:.0f} GiB free"
    return ""


def sidecar_inline(workdir: str) -> bool:
    """Whether a sidecar-sized file takes no block of its own on the work directory's filesystem (ext4's
    inline_data keeps it in the inode)."""
    probe = os.path.join(workdir, ".inline-probe")
    with open(probe, "wb") as fh:
        fh.write(b"x" * 160)
    try:
        os.sync()
        return os.stat(probe).st_blocks < 8  # inline: 0 or 1 (512-byte units), never a 4 KiB block
    finally:
        os.unlink(probe)


def run_one(n: int, size: int, live: int, hit_seconds: float, workdir: str, populate: str = "import",
            import_objects: int = 0, hit_connections: int = 0) -> dict[str, Any]:
    capacity = f"{(n + import_objects + live) * size * 2 // (1 << 30) + 1}GiB"  # room for every object: none evicted
    config_path = write_box_config(workdir, storage={
        "tiers": [{"name": "hdd", "path": os.path.join(workdir, "hdd"), "capacity": capacity}],
        "health_check_interval": "5s", "access_flush_interval": "1s"})
    row: dict[str, Any] = {"objects": n, "size": size, "populate": populate}
    if populate == "import":
        row.update(timed_import(config_path, os.path.join(workdir, "src"), 0, n, size))
        imported = 0
    else:
        if populate == "layout":
            write_layout(n, size, os.path.join(workdir, "hdd"))
            row.update(measure_rebuild(config_path))  # the index it leaves is the one the box opens
        else:
            write_index_rows(n, size, workdir)
        imported = import_objects
        if imported:
            row.update(timed_import(config_path, os.path.join(workdir, "src"), n, imported, size))
    total = n + imported

    started = time.monotonic()
    box = start_box(config_path, workdir, wait=False, session=True, timeout=600)
    try:
        while True:
            try:
                if box.get("/" + key_of(0))[0] == 200:
                    break
            except OSError:
                pass
            if box.process.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError(f"box did not serve:\n{box.log()}")
            time.sleep(0.02)
        row["start_to_first_hit_s"] = round(time.monotonic() - started, 2)
        # the master loads its catalog from the index in the background (Store.open(background=True)): the
        # box serves from the index meanwhile, and /status counts the objects loaded so far
        while box.admin("/status").get("objects") != total:
            if time.monotonic() - started > 3600:
                raise RuntimeError("the master did not load every object within an hour")
            time.sleep(0.2)
        row["start_to_loaded_s"] = round(time.monotonic() - started, 2)

        loader = start_wrk(box.port, workdir, total, hit_seconds, hit_connections) if hit_connections else None
        latencies: list[float] = []
        conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=10)
        rng = random.Random(7)
        deadline = time.monotonic() + hit_seconds
        while time.monotonic() < deadline:
            t = time.perf_counter()
            conn.request("GET", "/" + key_of(rng.randrange(total)))
            resp = conn.getresponse()
            resp.read()
            latencies.append(time.perf_counter() - t)
            if resp.status != 200:
                raise RuntimeError(f"hit answered {resp.status}")
        conn.close()
        if loader is not None:
            wrk = loader.result()
            row["wrk_hits"] = f"{wrk.requests} on {hit_connections} connections ({wrk.errors.total} errors)"
        row["hits"] = len(latencies)
        row["hit_p50_ms"] = round(percentile(latencies, 0.5) * 1000, 2)
        row["hit_p99_ms"] = round(percentile(latencies, 0.99) * 1000, 2)
        row["master_rss_mb"] = round(rss_mb(box.process.pid))
        row["master_rss_bytes_per_object"] = round(rss_mb(box.process.pid) * (1 << 20) / total)
        row["worker_rss_mb"] = [round(rss_mb(pid)) for pid in box.worker_pids()]

        if live:
            row.update(live_import(box, config_path, os.path.join(workdir, "live"), total, live, size))
    finally:
        kill_box(box)

    if populate == "import":
        row.update(measure_rebuild(config_path))
    elif populate == "index":  # no sidecars to rebuild from: said, not left out silently
        row["rebuild_per_s"] = "not measured (index rows only, no sidecars)"
    return row


def start_wrk(port: int, workdir: str, total: int, seconds: float, connections: int) -> Future[WrkResult]:
    """wrk GETting random keys over all `total` objects on `connections` keep-alive connections for `seconds`, in
    the background: enough hits for each worker to meet every one of its per-key tables' limits."""
    paths = os.path.join(workdir, "paths.txt")
    with open(paths, "w", encoding="ascii") as fh:
        fh.writelines(f"/{key_of(i)}\n" for i in range(total))
    pool = ThreadPoolExecutor(1)
    future = pool.submit(run_wrk, "wrk", f"http://127.0.0.1:{port}", paths, connections=connections,
                         seconds=seconds, startup_s=600)
    pool.shutdown(wait=False)
    return future


def live_import(box: Box, config_path: str, live_src: str, first: int, live: int, size: int) -> dict[str, Any]:
    """Step 4: `live` objects imported through the running box while /status is polled every 100 ms."""
    row: dict[str, Any] = {}
    write_sources(live_src, first, live, size)
    polls: list[float] = []
    missed = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal missed
        while not done.is_set():
            t = time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", box.admin_port, timeout=1.0)
                c.request("GET", "/status")
                c.getresponse().read()
                c.close()
                polls.append(time.perf_counter() - t)
            except OSError:
                missed += 1
            time.sleep(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.monotonic()
    try:
        subprocess.run([OCA, "cache", "import", "--config", config_path, live_src], check=True,
                       capture_output=True)
    finally:
        done.set()
        poller.join()
    row["live_import_objects"] = live
    row["live_import_per_s"] = round(live / (time.monotonic() - started))
    row["status_polls"] = len(polls) + missed
    row["status_p50_ms"] = round(statistics.median(polls) * 1000, 1) if polls else None
    row["status_p99_ms"] = round(percentile(polls, 0.99) * 1000, 1)
    row["status_max_ms"] = round(max(polls) * 1000, 1) if polls else None
    row["status_missed_1s"] = missed
    shutil.rmtree(live_src)
    return row


def timed_import(config_path: str, src: str, first: int, count: int, size: int) -> dict[str, Any]:
    """Write `count` source files (keys from `first`) and import them with `oca cache import`, the box stopped:
    objects/s and the command's peak RSS (the catalog of every object already in the store, plus its queue)."""
    started = time.monotonic()
    write_sources(src, first, count, size)
    print(f"  {count} sources written in {time.monotonic() - started:.0f}s", file=sys.stderr)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    peak_kib = run_for_peak_rss([OCA, "cache", "import", "--config", config_path, src])
    import_s = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the command's CPU (user + system, start-up included): steadier than the wall on a loaded machine
    import_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    shutil.rmtree(src)
    return {"import_objects": count, "import_per_s": round(count / import_s),
            "import_cpu_us_per_object": round(import_cpu / count * 1e6), "import_rss_mb": round(peak_kib / 1024)}


def run_for_peak_rss(argv: list[str]) -> int:
    """Run `argv` to its end (an error if it fails) and return its own peak RSS in KiB: its VmHWM, read while it
    runs (a high-water mark: the last reading before it exits holds its peak). Not wait4's ru_maxrss nor
    RUSAGE_CHILDREN: a child started by vfork or fork is charged the parent's RSS before its exec."""
    peak = 0
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while process.poll() is None:
            peak = max(peak, hwm_kib(process.pid))
            time.sleep(0.02)
        if process.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{argv} failed ({process.returncode}):\n{out.read().decode(errors='replace')[-2000:]}")
    return peak


def hwm_kib(pid: int) -> int:
    """A live process's peak RSS so far (VmHWM, proc(5)); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def index_only(n: int, workdir: str, batch: int = 5_000) -> dict[str, Any]:
    """Index.create of n rows as a rebuild's scan hands them over: in parts, keys in random order (a scan reads
    fan-out directories, i.e. hash order; each key here is named by its own hash, so generating rows in number
    order is hash order without holding them to sort)."""
    path = index_path(os.path.join(workdir, "state"))
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def rows(first: int) -> list[RowValues]:
        return [(f"titles/{xxhash.xxh64_hexdigest(i.to_bytes(8, 'big'))}/720p/seg_{i % 500:05d}.m4s", "hdd", 4096,
                 "0" * 32, 1.7e9 + i, 1.7e9 + i, 0, 0) for i in range(first, min(first + batch, n))]

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu, started = time.process_time(), time.monotonic()
    Index.create(path, (rows(first) for first in range(0, n, batch))).close()
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    return {"objects": n, "size": 0, "load_average": round(os.getloadavg()[0], 1),
            "index_create_per_s": round(n / seconds), "index_create_cpu_us_per_row": round(cpu / n * 1e6, 1),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024),
            "index_mb": round(os.path.getsize(path) / 2**20)}


FANOUT_DIRS = 65_536  # a tier's fan-out directories: the first four hex digits of an object's hash


def rebuild_only(n: int, size: int, workdir: str, dirs: int = FANOUT_DIRS, linked: bool = False,
                 writers: int = 1, hows: tuple[str, ...] = ("background", "foreground"),
                 runs: int = 1) -> list[dict[str, Any]]:
    tier = os.path.join(workdir, "hdd")
    config_path = write_box_config(workdir, storage={
        "tiers": [{"name": "hdd", "path": tier, "capacity": f"{n * size * 2 // (1 << 30) + 1}GiB"}]})
    write_layout(n, size, tier, dirs, linked, writers)
    # what the writing left dirty flushed first: a box rebuilds after a restart, not while its tier's last
    # metadata is still being written back (the time is printed: 0 s after 10^7 here, write-back had kept up)
    started = time.monotonic()
    os.sync()
    print(f"  written data flushed in {time.monotonic() - started:.0f}s", file=sys.stderr)
    # each run rebuilds the same layout (a rebuild deletes only junk, and this layout has none): the runs
    # differ only by what the kernel still caches, as a box restarted K times would
    rows = []
    for run in range(1, runs + 1):
        rows.append({"objects": n, "size": size, "fanout_dirs": min(dirs, FANOUT_DIRS), "linked_objects": linked,
                     "run": run, "load_average": round(os.getloadavg()[0], 1), **measure_rebuild(config_path, hows)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def write_layout(n: int, size: int, tier: str, dirs: int = FANOUT_DIRS, linked: bool = False,
                 processes: int = 1) -> None:
    """Objects 0..n-1 (key_of) written straight into a tier's layout as a store leaves them: the object and its
    sidecar, with the store's own layout code; no index (opening the store rebuilds it from the sidecars).
    `linked`: every object the same bytes, its file a hard link to one of a few identical files (an inode per
    sidecar only: 10^7 objects fit a filesystem of 10^7 inodes; a rebuild's scan opens only the sidecars and
    never looks at an object file, so the links change nothing it measures). `processes` > 1 (all fan-out
    directories only): that many processes write interleaved parts of the keys."""
    TierLayout(tier).prepare()
    started = time.monotonic()
    if processes > 1 and dirs >= FANOUT_DIRS:
        ctx = multiprocessing.get_context("fork")
        workers = [ctx.Process(target=_write_layout_part, args=(n, size, tier, linked, p, processes))
                   for p in range(processes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
            if w.exitcode != 0:
                raise RuntimeError(f"a layout writer exited with {w.exitcode}")
    else:
        _write_layout_part(n, size, tier, linked, 0, 1, dirs)
    print(f"  N={n}: written into the layout in {time.monotonic() - started:.0f}s", file=sys.stderr)


def _write_layout_part(n: int, size: int, tier: str, linked: bool, part: int, parts: int,
                       dirs: int = FANOUT_DIRS) -> None:
    """write_layout's objects part, part + parts, part + 2*parts ... (with parts > 1, in a process of its own).
    With `dirs` (one part only), object i takes the i-th key whose hash falls in the first `dirs` fan-out
    directories."""
    layout = TierLayout(tier)
    block = random.Random(n).randbytes(size)
    started = time.monotonic()
    candidate = part
    template = ""
    for done, i in enumerate(range(part, n, parts)):
        while True:
            key = key_of(candidate)
            h = key_hash(key)
            candidate += parts
            if dirs >= FANOUT_DIRS or int(h[:4], 16) < dirs:
                break
        data = block if linked else i.to_bytes(8, "big") + block[8:]
        layout.ensure_fanout(h)
        if not linked:
            with open(layout.object_path(h), "wb") as fh:
                fh.write(data)
        else:  # the templates beside objects/ and tmp/, where no store looks
            if done % LINKS_PER_FILE == 0:
                template = new_template(os.path.join(layout.root, f"link-template-{part}-{done}"), data)
            os.link(template, layout.object_path(h))
        with open(layout.meta_path(h), "wb") as fh:
            fh.write(Sidecar(key, len(data), xxhash.xxh3_128_hexdigest(data), 1.7e9 + i, False, False).to_bytes())
        if part == 0 and done and done * parts % 1_000_000 < parts:
            print(f"  {done * parts:,} written into the layout ({done * parts / (time.monotonic() - started):.0f}/s)",
                  file=sys.stderr)


def new_template(path: str, data: bytes) -> str:
    """A file holding `data` that objects are hard-linked to (at most LINKS_PER_FILE each); returns its path."""
    with open(path, "wb") as fh:
        fh.write(data)
    return path


LINKS_PER_FILE = 60_000  # below ext4's 65,000 links to one inode


def write_index_rows(n: int, size: int, workdir: str, batch: int = 10_000) -> None:
    """Objects 0..n-1 (key_of) as index rows written directly (as tests/storage/test_scale.py does) with, for
    each, its object file in the tier's layout as a hard link to one of a few identical files: a hit on any key
    reads a real file, at the cost of a directory entry instead of an inode and a block per object. No sidecars
    (a rebuild cannot be measured on them); every object has the same bytes, so the page cache holds them all."""
    tier = os.path.join(workdir, "hdd")
    layout = TierLayout(tier)
    layout.prepare()
    data = random.Random(n).randbytes(size)
    digest = xxhash.xxh3_128_hexdigest(data)
    state = os.path.join(workdir, "state")
    os.makedirs(state, exist_ok=True)
    started = time.monotonic()
    template = ""

    def rows(first: int) -> list[RowValues]:
        nonlocal template
        out: list[RowValues] = []
        for i in range(first, min(first + batch, n)):
            if i % LINKS_PER_FILE == 0:  # tmp/ is emptied when a store opens
                template = new_template(os.path.join(layout.tmp_dir, f"..template-{i}"), data)
            key = key_of(i)
            h = key_hash(key)
            layout.ensure_fanout(h)
            os.link(template, layout.object_path(h))
            out.append((key, "hdd", size, digest, 1.7e9 + i, 1.7e9 + i, 0, 0))
        if first and first % 1_000_000 == 0:
            print(f"  {first:,} rows and links ({first / (time.monotonic() - started):.0f}/s)", file=sys.stderr)
        return out

    Index.create(index_path(state), (rows(first) for first in range(0, n, batch))).close(clean=True)
    print(f"  N={n}: index rows and links written in {time.monotonic() - started:.0f}s", file=sys.stderr)


REBUILD = """
import os, resource, sys, time
from oca.config import load_box_config
from oca.storage import Store
config = load_box_config(sys.argv[1])
for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "index.sqlite.clean"):
    if os.path.exists(os.path.join(config.storage.state_dir, name)):
        os.unlink(os.path.join(config.storage.state_dir, name))


def tree_cpu():
    # CPU seconds of this process, of its children it waited for, and of its live children with the children
    # they waited for: the rebuild's scan processes are children of multiprocessing's forkserver, which reaps them
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # utime, stime, cutime, cstime in clock ticks (proc(5))
            total += sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK")
    return total


cpu = tree_cpu()
started = time.monotonic()
store = Store.open(config.storage, background=sys.argv[2] == "background")
opened = time.monotonic() - started
opened_cpu = tree_cpu() - cpu
while store.status()["loading"]:
    time.sleep(0.01)
loaded = time.monotonic() - started
print(store.status()["objects"], opened, loaded, opened_cpu, tree_cpu() - cpu)
store.close()
"""


def measure_rebuild(config_path: str, hows: tuple[str, ...] = ("background", "foreground")) -> dict[str, Any]:
    """Delete the index and open the store twice, each a rebuild from the tiers' sidecars: as a box does
    (`background`: the index rebuilt, then servable while the catalog loads from it) and as `oca cache` does
    (Store.open returns once the catalog is loaded too). Objects/s of each, and CPU seconds per object."""
    row: dict[str, Any] = {}
    for how in hows:
        out = subprocess.run([sys.executable, "-c", REBUILD, config_path, how], check=True, capture_output=True,
                             text=True)
        objects, opened, loaded, opened_cpu, cpu = out.stdout.split()
        n = int(objects)
        row["rebuilt_objects"] = n  # every object found: a layout rebuilt again loses none
        if how == "background":
            row["rebuild_per_s"] = round(n / float(opened))
            row["rebuild_cpu_us_per_object"] = round(float(opened_cpu) / n * 1e6, 1)
            row["rebuild_then_loaded_s"] = round(float(loaded), 2)
        else:
            row["rebuild_and_load_per_s"] = round(n / float(loaded))
            row["rebuild_and_load_cpu_us_per_object"] = round(float(cpu) / n * 1e6, 1)
    return row


def render(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        what = f"objects of {row['size']:,} bytes" if row["size"] else "index rows (no files)"
        lines.append(f"\nN = {row['objects']:,} {what}")
        lines.append("| figure | value |")
        lines.append("|---|---|")
        for name, value in row.items():
            if name not in ("objects", "size"):
                lines.append(f"| {name} | {value} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_store", description=__doc__.split("\n")[0])
    parser.add_argument("--objects", default="100000", help="comma-separated object counts")
    parser.add_argument("--size", default="4KiB", help="bytes per object")
    parser.add_argument("--live-import", type=int, default=100_000, help="objects imported while /status is polled")
    parser.add_argument("--hits", type=float, default=20.0, help="seconds of random hits")
    parser.add_argument("--hit-connections", type=int, default=0,
                        help="also run wrk on this many connections during the hits (random keys over all N), so "
                             "each worker meets its tables' limits however busy the machine (0: none)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--dir", help="work here (default: a temporary directory, removed afterwards)")
    parser.add_argument("--rebuild-only", action="store_true",
                        help="only time rebuilds, of objects written straight into a tier's layout")
    parser.add_argument("--index-only", action="store_true",
                        help="only time the rebuild's index write (Index.create) of N rows in hash order, no files")
    parser.add_argument("--populate", choices=("import", "layout", "index"), default="import",
                        help="how the N objects get into the store: `oca cache import` of N source files; written "
                             "straight into the layout (the rebuild then builds the index); or index rows written "
                             "directly, each object a hard link (no sidecars: no rebuild figures)")
    parser.add_argument("--import-objects", type=int, default=100_000,
                        help="with --populate layout/index: objects imported with the box stopped into the store "
                             "already holding N (the import rate and the command's peak RSS at N)")
    parser.add_argument("--link-objects", action="store_true",
                        help="with --rebuild-only: every object the same bytes, its file a hard link (an inode per "
                             "sidecar only, so 10^7 objects need 10^7 inodes, not 2*10^7)")
    parser.add_argument("--writers", type=int, default=1,
                        help="with --rebuild-only: processes writing the layout (all fan-out directories only)")
    parser.add_argument("--rebuilds", type=int, default=1,
                        help="with --rebuild-only: rebuild the written layout this many times, a row each")
    parser.add_argument("--box-open-only", action="store_true",
                        help="with --rebuild-only: time only the rebuild as a box opens the store (not `oca cache`'s)")
    parser.add_argument("--fanout-dirs", type=int, default=FANOUT_DIRS,
                        help="with --rebuild-only: put the objects in this many fan-out directories only, as "
                             "densely as a bigger store does (512 hold 10^5 ~195 each; 10^7 fill all ~153 each)")
    args = parser.parse_args(argv)
    if args.rebuilds < 1:
        parser.error("--rebuilds: at least 1")
    counts = [int(c) for c in args.objects.split(",") if c.strip()]
    size = parse_size(args.size)
    rows = []
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)  # --dir names where to work; a missing one is made, not a traceback
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    for n in counts:
        workdir = tempfile.mkdtemp(prefix=f"bench-store-{n}-", dir=args.dir)
        problem = ("" if args.index_only
                   else fits(n, size, 0, workdir, "linked-layout" if args.link_objects else "layout", 0)
                   if args.rebuild_only
                   else fits(n, size, args.live_import, workdir, args.populate, args.import_objects))
        if problem:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"skipped N={n:,}: {problem}", file=sys.stderr)
            continue
        try:
            if args.rebuild_only:  # each run's row printed as it ends: a 10^7 run takes minutes
                rows += rebuild_only(n, size, workdir, args.fanout_dirs, args.link_objects, args.writers,
                                     ("background",) if args.box_open_only else ("background", "foreground"),
                                     args.rebuilds)
            else:
                rows.append(index_only(n, workdir) if args.index_only
                            else run_one(n, size, args.live_import, args.hits, workdir, args.populate,
                                         args.import_objects, args.hit_connections))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # before the removal: minutes at 10^6
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    print(render(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
