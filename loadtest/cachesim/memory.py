"""`python -m loadtest.cachesim.memory`: the master's memory per object, measured on its real bookkeeping.

A measurement, never a pass/fail test (tests/storage/test_memory.py holds the bound). It fills the real Store
(disk and index in memory, as the replay runs it; configs/oca.yaml's storage section scaled to hold exactly
--objects objects) with --objects keys shaped like a title's segments, then evicts --churn x --objects more
(each miss pushes one out: the ghost fills with keys that left). After each stage it prints the Python heap
(tracemalloc: every block the catalog, the policies, the ghost and the promotion counter allocated) per
object held; with --no-tracemalloc, the process's RSS growth instead (faster: tracemalloc slows the fill).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

from loadtest.cachesim.__main__ import DEFAULT_CONFIG
from loadtest.cachesim.replay import FAKE_FILE, TraceClock, memory_store, scaled
from oca.config.loader import load_box_config
from oca.storage.store import Store

SIZE = 2_000_000  # bytes per object: a 4 s segment at 4 Mb/s
DIGEST = "0f" * 16  # an xxh3-128 digest, as an import or fill records (packed in the catalog's record)


def segment_key(i: int) -> str:
    """The i-th key of a catalog of 2,000-segment renditions, four per title (the shape of the box's keys)."""
    title, rest = divmod(i, 8000)
    rendition, segment = divmod(rest, 2000)
    return f"titles/t{title:06d}/{('360p', '720p', '1080p', '2160p')[rendition]}/seg_{segment:05d}.m4s"


def fill(store: Store, clock: TraceClock, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        clock.now += 0.001
        key = segment_key(i)
        tier, _ = store.fill_target(key, SIZE)
        store.adopt(FAKE_FILE, key, tier=tier, size=SIZE, digest=DIGEST)


def objects_held(store: Store) -> int:
    objects = store.status()["objects"]
    assert isinstance(objects, int)
    return objects


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measured(traced: bool) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if traced else rss()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cachesim.memory")
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=1.0, help="misses after the fill, x --objects")
    parser.add_argument("--no-tracemalloc", dest="traced", action="store_false")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    config = scaled(load_box_config(args.config).storage, args.objects * SIZE)
    what = "Python heap (tracemalloc)" if args.traced else "RSS growth"
    if args.traced:
        tracemalloc.start()
    base = measured(args.traced)
    clock = TraceClock()
    store = memory_store(config, clock)
    started = time.process_time()
    fill(store, clock, 0, args.objects)
    held = objects_held(store)
    grown = measured(args.traced) - base
    print(f"filled {held} objects in {time.process_time() - started:.1f} s CPU: {what} "
          f"{grown / 1e6:.1f} MB, {grown / held:.0f} bytes per object")
    churn = int(args.churn * args.objects)
    if churn:
        fill(store, clock, args.objects, args.objects + churn)
        held = objects_held(store)
        grown = measured(args.traced) - base
        print(f"after {churn} more misses, {held} objects held: {what} {grown / 1e6:.1f} MB, "
              f"{grown / held:.0f} bytes per object held (catalog, policies, ghost, promotion counter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
