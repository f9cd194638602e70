"""How long store operations wait for the lock while a box's catalog loads in the background.

`python -m loadtest.bench_load_lock --objects 1000000 [--probe-every 0.05] [--json FILE]`: writes N index rows
directly (as tests/storage/test_scale.py does: the catalog needs no object files), opens the store as a box
does (`Store.open(background=True)`), and until the load ends times, every `--probe-every` seconds, one store
operation that needs the lock, in turn: an import of a new 4 KiB object (`put_file`), a purge of a key stored
during the load, a `lookup` of an indexed key, a `list` of one title, and the lock taken and released alone
(`lock`: the wait without any operation's own work, such as a put's fsyncs). Reports, per kind and over all, the
longest wait and the count, and the load's total time (open to `loading` false). Then it opens the store once
more, in the foreground, untouched, to time a load without probes. A measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from oca.config.model import StorageConfig, TierConfig
from oca.storage import Store
from oca.storage.index import Index, Row, index_path


def write_rows(state: str, n: int) -> None:
    batches = ([Row(f"titles/{i % 1000}/{i}", "hdd", 4096, f"{i:032x}", 1.7e9 + i, 1.7e9 + i, False,
                    False).values() for i in range(first, min(first + 10_000, n))] for first in range(0, n, 10_000))
    Index.create(index_path(state), batches).close(clean=True)


def run(n: int, probe_every: float, workdir: str) -> dict[str, Any]:
    state, hdd = os.path.join(workdir, "state"), os.path.join(workdir, "hdd")
    os.makedirs(state)
    os.makedirs(os.path.join(hdd, "objects"))
    started = time.monotonic()
    write_rows(state, n)
    print(f"  {n:,} rows written in {time.monotonic() - started:.1f}s", file=sys.stderr)
    source = os.path.join(workdir, "source")
    with open(source, "wb") as fh:
        fh.write(os.urandom(4096))
    config = StorageConfig(state_dir=state, policy="s3fifo", tiers=(TierConfig("hdd", hdd, 1 << 50),))
    kinds = ("put", "purge", "lookup", "list", "lock")
    waits: dict[str, list[float]] = {k: [] for k in kinds}
    opened = time.monotonic()
    store = Store.open(config, background=True)
    returned = time.monotonic() - opened
    probes = 0
    at: list[float] = []  # when each probe started, seconds after the open
    try:
        while store.status()["loading"]:
            kind = kinds[probes % len(kinds)]
            t0 = time.monotonic()
            if kind == "put":
                store.put_file(source, f"new/{probes}")
            elif kind == "purge":
                store.evict(f"new/{probes - 1}")  # the put just before
            elif kind == "lookup":
                store.lookup([f"titles/{probes % 1000}/{probes}"])
            elif kind == "list":
                store.list(f"titles/{probes % 1000}/")
            else:
                with store._lock:  # the wait for the lock alone, without an operation's own work (fsyncs)
                    pass
            waits[kind].append(time.monotonic() - t0)
            at.append(t0 - opened)
            probes += 1
            time.sleep(probe_every)
        loaded = time.monotonic() - opened
        objects = store.status()["objects"]
    finally:
        store.close()
    again = time.monotonic()
    with Store.open(config) as quiet:
        quiet_objects = quiet.status()["objects"]
    quiet_load = time.monotonic() - again
    every = [w for ws in waits.values() for w in ws]
    ordered = [waits[kinds[i % len(kinds)]][i // len(kinds)] for i in range(probes)]
    worst = max(range(probes), key=lambda i: ordered[i], default=0)
    return {
        "objects": n, "open_returned_s": round(returned, 3), "loaded_s": round(loaded, 2),
        "objects_loaded": objects, "foreground_load_s": round(quiet_load, 2), "foreground_objects": quiet_objects,
        "probes": probes, "max_wait_ms": round(1000 * max(every, default=0.0), 1),
        "max_wait_at_s": round(at[worst], 2) if at else None,
        "waits_over_100ms": sum(w > 0.1 for w in every),
        "p99_wait_ms": round(1000 * sorted(every)[int(0.99 * (len(every) - 1))], 1) if every else None,
        **{f"max_{k}_ms": round(1000 * max(v, default=0.0), 1) for k, v in waits.items()},
        "load_average": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_load_lock", description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--probe-every", type=float, default=0.05, help="seconds between two timed operations")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    parser.add_argument("--dir", help="work here (default: a temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        result = run(args.objects, args.probe_every, tempfile.mkdtemp(dir=args.dir))
    else:
        with tempfile.TemporaryDirectory() as workdir:
            result = run(args.objects, args.probe_every, workdir)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
