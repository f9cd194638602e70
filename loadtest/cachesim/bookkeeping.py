"""`python -m loadtest.cachesim.bookkeeping`: the master's per-request bookkeeping cost at a million objects.

A measurement, never a pass/fail test. It fills the real Store (disk and index in memory, as the replay
runs it; configs/oca.yaml's storage section) with --objects objects, then times --requests requests of which
--hit-ratio are hits (`record_hits`, as workers report them: one call per --batch hits; 1, the default, is
the worst case, the master reports each flush interval's hits in one call) and the rest misses (`fill_target`
then `adopt`, each evicting to make room). Printed: CPU microseconds per request, per hit and per miss.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

from loadtest.cachesim.__main__ import DEFAULT_CONFIG
from loadtest.cachesim.replay import FAKE_FILE, TraceClock, memory_store, scaled
from oca.config.loader import load_box_config

SIZE = 1_000_000  # bytes per object: the cache holds exactly --objects of them
DIGEST = "0123456789abcdef" * 2  # a real one's shape: the catalog packs hex digests (an empty one costs a dict entry)
SEGMENTS = 500  # per rendition directory (a stream): a 33-minute rendition of 4 s segments


def key_of(i: int) -> str:
    """The i-th object's key, laid out as titles are: SEGMENTS segments per rendition directory, so the
    policy's streams (oca/storage/streams.py) are as many and as long as a real box's, not one endless one."""
    return f"titles/{i // SEGMENTS}/720p/seg_{i % SEGMENTS:05d}.m4s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cachesim.bookkeeping")
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--hit-ratio", type=float, default=0.8)
    parser.add_argument("--batch", type=int, default=1, help="hits per record_hits call")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    clock = TraceClock()
    store = memory_store(scaled(load_box_config(args.config).storage, args.objects * SIZE), clock)
    started = time.process_time()
    for i in range(args.objects):
        tier, _ = store.fill_target(key_of(i), SIZE)
        store.adopt(FAKE_FILE, key_of(i), tier=tier, size=SIZE, digest=DIGEST)
    print(f"filled {args.objects} objects in {time.process_time() - started:.1f} s CPU")
    rng = random.Random(1)
    held = [key_of(i) for i in range(args.objects)]
    hits = int(args.requests * args.hit_ratio)
    misses = args.requests - hits
    reads = [held[rng.randrange(len(held))] for _ in range(hits)]
    step = max(args.batch, 1)
    batches = [Counter(reads[i:i + step]) for i in range(0, hits, step)]  # made before the clock starts
    fresh = [key_of(args.objects + i) for i in range(misses)]
    # each kind timed as one block: a clock read per call would cost as much as the call
    t0 = time.process_time()
    for batch in batches:
        clock.now += 0.001 * step
        store.record_hits(batch)
    t1 = time.process_time()
    for key in fresh:
        clock.now += 0.001
        tier, _ = store.fill_target(key, SIZE)
        store.adopt(FAKE_FILE, key, tier=tier, size=SIZE, digest=DIGEST)
    t2 = time.process_time()
    per_hit = (t1 - t0) / max(hits, 1) * 1e6
    per_miss = (t2 - t1) / max(misses, 1) * 1e6
    print(f"{store.status()['objects']} objects held; {args.requests} requests ({args.hit_ratio:.0%} hits): "
          f"{(t2 - t0) / args.requests * 1e6:.2f} us per request, {per_hit:.2f} us per hit, "
          f"{per_miss:.2f} us per miss; hits reported {step} per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
