"""Bounded memory per object in the master (issue 20): the catalog and the S3-FIFO policies at 10^5 objects.

Measured with tracemalloc (the Python heap's blocks), never with time. The catalog keeps each key's bytes,
never its str.
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


def _key(i: int) -> str:
    return f"titles/t{i // 8000:06d}/720p/seg_{i % 8000:05d}.m4s"


def _keys(n: int, start: int = 0) -> list[str]:
    return [_key(i) for i in range(start, start + n)]


def _entry(key: str) -> CatalogEntry:
    return CatalogEntry(key, "", 0, 2_000_000, "0f" * 16, 1.7e9, 1.7e9, hot=False, pinned=False)


@contextmanager
def _heap(grown: list[int], only: tuple[str, ...] = ()) -> Iterator[None]:
    """Appends to `grown` the bytes allocated (and still held) inside the block, by files ending in one of
    `only` if given."""
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
            grown.append(sum(s.size_diff for s in stats if s.traceback[0].filename.endswith(only)))
    finally:
        tracemalloc.stop()


def _box(n_tiers: int = 2) -> Catalog:
    tiers = [TierConfig(f"t{i}", f"/nonexistent/t{i}", 1 << 50) for i in range(n_tiers)]
    return Catalog.with_policy(tiers, "s3fifo")


def test_catalog_and_s3fifo_hold_under_140_bytes_per_object_its_key_included() -> None:
    """Each key is made inside the measurement and dropped by the caller, as a request's is: what stays is what
    the catalog keeps. KeySlots: the key's 36 bytes, 8 of hash, 8 of place and the table's 4-byte buckets (~10
    at this fill); 46 bytes of record, 18 of policy arrays: ~133 measured, with the arrays' spare room. Before
    the keys' table was compacted (slots.py) the key's str (~77), a dict slot, an int per record number and a
    list slot made it ~220; before the policy was keyed by record number, ~160 more."""
    cat = _box()
    grown: list[int] = []
    with _heap(grown):
        for i in range(N):
            cat.attach(_entry(_key(i)))
    assert len(cat.tiers[0].policy) == N
    assert grown[0] / N < 140, grown[0] / N


def test_the_catalog_keeps_no_key_str_alive() -> None:
    """Referenced as often as keys the catalog never saw (but for the last one added, which KeySlots remembers
    for the next lookup)."""
    keys, unseen = _keys(1000), _keys(1000, 1000)
    cat = _box()
    for key in keys:
        cat.attach(_entry(key))
    assert {sys.getrefcount(key) for key in keys[:-1]} == {sys.getrefcount(key) for key in unseen[:-1]}


def test_s3fifo_state_per_object_is_its_arrays_only() -> None:
    """Per object, s3fifo.py allocates the Book's 18 bytes (next, prev, size, queue, freq), whatever the
    number of tiers: one Book serves every tier of a box."""
    keys = _keys(N)
    cat = _box(3)
    grown: list[int] = []
    with _heap(grown, only=("s3fifo.py",)):
        for i, key in enumerate(keys):
            entry = _entry(key)
            entry.tier = i % 3
            cat.attach(entry)
    assert sum(len(t.policy) for t in cat.tiers) == N
    assert grown[0] / N < 20, grown[0] / N


def test_the_ghost_remembers_a_key_in_under_60_bytes_and_not_its_string() -> None:
    """A key that left is its hash and size in the ring (16 bytes) and its place in the ghost's table (8-byte
    buckets: ~21 per key at this fill, and ~11 more while the table it grew from is still being moved): ~50
    measured. It was a dict entry from hash to place and an int (~136), and before that the key's string, an
    OrderedDict node and a size int (~260)."""
    ghost = Ghost(1 << 60)
    policy = S3FIFOPolicy(ghost)
    keys = _keys(N)
    for key in keys:
        policy.add(key, 1)
    grown: list[int] = []
    with _heap(grown, only=("s3fifo.py", "hashtable.py")):
        for key in keys:
            policy.remove(key)
    assert len(ghost) == N and len(policy) == 0
    per_key = grown[0] / N
    assert per_key < 60, per_key
    # the strings are not kept alive: referenced as often as keys the policy never saw (but for the last key
    # removed, which Ghost.leaving holds until the next add)
    unseen = _keys(N, N)
    assert {sys.getrefcount(key) for key in keys[:-1]} == {sys.getrefcount(key) for key in unseen[:-1]}
