"""What a plain hit from memory costs in Python operations (issue 16): under wrk a worker's user time per hit
follows how much of its own Python runs, so the replayed hit (oca.serve.memo) is held to a count of calls.
Counted with sys.setprofile over the real worker of `loadtest.profile_hit --in-process` (tokens required,
access log on, CMSD on), the batched records, the log's formatting and the report's counts included."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest.profile_hit import InProcessWorker, in_process_worker

ROUNDS = 4


def calls_per_hit(box: InProcessWorker) -> tuple[float, Counter[str]]:
    """Python functions called per replayed hit (the test transport's own writelines left out), and every
    call by name, over ROUNDS requests of each object."""
    server = box.worker.server
    for data in box.wire:  # each object's second request: the normal path remembers it
        box.conn.data_received(data)
    server.record_hits()
    server.access_log.flush()
    counts: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            counts[frame.f_code.co_qualname] += 1
        elif event == "c_call":
            counts["C " + getattr(arg, "__qualname__", "?")] += 1

    batch = box.wire * ROUNDS
    sys.setprofile(profile)
    try:
        for data in batch:
            box.conn.data_received(data)
        server.record_hits()
        server.access_log.flush()
        box.worker.stats.take(0)  # the report adds the entries' counts up by key
    finally:
        sys.setprofile(None)
    python = sum(n for name, n in counts.items() if not name.startswith("C ") and not name.startswith("NullTransport"))
    return python / len(batch), counts


def test_a_replayed_hit_moves_no_lru_order_and_makes_few_python_calls(tmp_path: Path) -> None:
    with in_process_worker(str(tmp_path), 64) as box:
        per_hit, counts = calls_per_hit(box)
        assert counts["Server.hit"] == 64 * ROUNDS and counts["ResponseMemo.get"] == 64 * ROUNDS  # all replayed
    # before: 12.35 calls (the memo's generation read through three calls, ObjectCache.touch, cast,
    # _with_cmsd) and two OrderedDict.move_to_end per hit
    assert counts["C OrderedDict.move_to_end"] == 0
    assert per_hit <= 6.5, counts.most_common(12)
    # the memo's own look-up a hit, and one a key and report where the per-key hit count took one a hit (and a
    # set); before: 2.0 dict.get a hit, 1.28 now
    assert counts["C dict.get"] / (64 * ROUNDS) <= 1.5, counts.most_common(12)
