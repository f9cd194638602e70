"""Bounded memory per object in the master (issue 20): the catalog and the S3-FIFO policies at 10^5 objects.

Measured with tracemalloc (the Python heap's blocks), never with time. Keys are made before measuring: their
strings are the index's, not the policy's.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

from oca.config.model import TierConfig
from oca.storage.catalog import Catalog, CatalogEntry
from oca.storage.s3fifo import Ghost, S3FIFOPolicy

N = 100_000


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"titles/t{i // 8000:06d}/720p/seg_{i % 8000:05d}.m4s" for i in range(start, start + n)]


def _entry(key: str) -> CatalogEntry:
    return CatalogEntry(key, "", 0, 2_000_000, "0f" * 16, 1.7e9, 1.7e9, hot=False, pinned=False)


@contextmanager
def _heap(grown: list[int], only: str | None = None) -> Iterator[None]:
    """Appends to `grown` the bytes allocated (and still held) inside the block, by files ending in `only` if
    given."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot() if only else None
        start = tracemalloc.get_traced_memory()[0]
        yield
        gc.collect()
        if before is None:
            grown.append(tracemalloc.get_traced_memory()[0] - start)
        else:
            stats = tracemalloc.take_snapshot().compare_to(before, "filename")
            grown.append(sum(s.size_diff for s in stats if s.traceback[0].filename.endswith(only or "")))
    finally:
        tracemalloc.stop()


def _box(n_tiers: int = 2) -> Catalog:
    tiers = [TierConfig(f"t{i}", f"/nonexistent/t{i}", 1 << 50) for i in range(n_tiers)]
    return Catalog.with_policy(tiers, "s3fifo")


def test_catalog_and_s3fifo_hold_under_170_bytes_per_object_beyond_the_key() -> None:
    """A dict slot, a record number and 8 bytes of KeySlots, 46 bytes of record, 18 of policy arrays: ~140
    (with the arrays' and the dict's spare room). Before the policy was keyed by record number, its
    OrderedDict nodes, frequency dict and size ints added ~160 to the catalog's ~110."""
    keys = _keys(N)
    cat = _box()
    grown: list[int] = []
    with _heap(grown):
        for key in keys:
            cat.attach(_entry(key))
    assert len(cat.tiers[0].policy) == N
    assert grown[0] / N < 170, grown[0] / N


def test_s3fifo_state_per_object_is_its_arrays_only() -> None:
    """Per object, s3fifo.py allocates the Book's 18 bytes (next, prev, size, queue, freq), whatever the
    number of tiers: one Book serves every tier of a box."""
    keys = _keys(N)
    cat = _box(3)
    grown: list[int] = []
    with _heap(grown, only="s3fifo.py"):
        for i, key in enumerate(keys):
            entry = _entry(key)
            entry.tier = i % 3
            cat.attach(entry)
    assert sum(len(t.policy) for t in cat.tiers) == N
    assert grown[0] / N < 24, grown[0] / N


def test_the_ghost_remembers_a_key_in_under_180_bytes_and_not_its_string() -> None:
    """A key that left is a hash, its size and its place (a dict entry and three 8-byte numbers: ~150 bytes
    with the dict's spare room); the key's string is not kept alive (it was ~90 bytes more, with an OrderedDict
    node and a size int: ~260)."""
    ghost = Ghost(1 << 60)
    policy = S3FIFOPolicy(ghost)
    keys = _keys(N)
    for key in keys:
        policy.add(key, 1)
    grown: list[int] = []
    with _heap(grown, only="s3fifo.py"):
        for key in keys:
            policy.remove(key)
    assert len(ghost) == N and len(policy) == 0
    per_key = grown[0] / N
    assert per_key < 180, per_key
    # the strings are not kept alive: referenced as often as keys the policy never saw (but for the last key
    # removed, which Ghost.leaving holds until the next add)
    unseen = _keys(N, N)
    assert {sys.getrefcount(key) for key in keys[:-1]} == {sys.getrefcount(key) for key in unseen[:-1]}
