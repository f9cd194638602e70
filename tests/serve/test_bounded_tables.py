"""Every per-key table in a worker has a size limit and an eviction rule: random hits over many more keys
than the limit never take a table past it (30 s of random hits over 554k keys once took a worker from
43 MB to ~530 MB with a 256 MiB memory cache: the entry table had no limit)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from oca.bounded import LimitedDict, run_bounded
from oca.config.model import HttpConfig, MemoryCacheConfig
from oca.fetch import remote
from oca.fetch.remote import RemoteFills
from oca.protocol.messages import Absent, Sliced, SliceMeta
from oca.serve import stats
from oca.serve.objects import ENTRY_BYTES, ObjectCache
from oca.serve.stats import WorkerStats
from oca.storage import ObjectInfo, StoreView
from tests.clock import FakeClock


class FakeView:
    """Every key exists, as a file of `size` bytes at `path`; the generation never moves."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size, self.lookups = path, size, 0
        self.generation_word = [0]

    def changed(self) -> bool:
        return False

    def lookup(self, key: str) -> ObjectInfo:
        self.lookups += 1
        return ObjectInfo(key, "hdd", self.path, self.size, "0" * 32, 1.0e9, False, False)


def test_the_bodies_and_the_entries_own_memory_fit_the_capacity_together(tmp_path: Path) -> None:
    """A worker at its entry limit once held 256 MiB of bodies besides ~96 MiB of entries (416 MB after 200,000
    random hits over 10^6 keys, 256 MiB configured): the entries' memory now comes out of the capacity, the least
    recently used bodies giving way."""
    body = tmp_path / "obj"
    body.write_bytes(b"x" * 1000)
    view = FakeView(str(body), 1000)
    capacity = 200_000  # 100 entries' metadata is 153,600 bytes: room for 46 bodies, not 100
    cache = ObjectCache(cast(StoreView, view), HttpConfig(),
                        MemoryCacheConfig(max_object_size=4096, capacity=capacity, max_entries=100))
    fd = os.open(body, os.O_RDONLY)
    try:
        for i in range(1000):
            entry = cache.get(f"titles/1/seg{i}")
            assert entry is not None
            if cache.cached_body(entry) is None:
                cache.load_body(entry, fd)
            assert cache._body_bytes + len(cache) * ENTRY_BYTES <= capacity
        assert len(cache) == 100 and cache._body_bytes == 46_000
        last = cache.get("titles/1/seg999")
        assert last is not None and last.body is not None  # the most recently used keep theirs
    finally:
        os.close(fd)


def test_the_object_cache_keeps_at_most_max_entries_and_its_bodies_within_capacity(tmp_path: Path) -> None:
    body = tmp_path / "obj"
    body.write_bytes(b"x" * 1000)
    view = FakeView(str(body), 1000)
    cache = ObjectCache(cast(StoreView, view), HttpConfig(),
                        MemoryCacheConfig(max_object_size=4096, capacity=50_000, max_entries=100))
    rng = random.Random(1)
    fd = os.open(body, os.O_RDONLY)
    try:
        for _ in range(5000):
            entry = cache.get(f"titles/1/seg{rng.randrange(20_000)}")
            assert entry is not None
            if cache.cached_body(entry) is None:
                cache.load_body(entry, fd)
            assert len(cache) <= 100
            assert cache._body_bytes <= 50_000
    finally:
        os.close(fd)


def test_the_object_cache_drops_the_least_recently_used_entry(tmp_path: Path) -> None:
    view = FakeView(str(tmp_path / "none"), 10)
    cache = ObjectCache(cast(StoreView, view), HttpConfig(), MemoryCacheConfig(max_entries=16))
    for i in range(16):
        cache.get(f"k{i}")
    cache.get("k0")  # used again: k1 is now the least recently used
    cache.get("new")
    lookups = view.lookups
    cache.get("k0")
    assert view.lookups == lookups  # still held
    cache.get("k1")
    assert view.lookups == lookups + 1  # pushed out, asked again


def test_a_limited_dict_never_exceeds_its_limit_and_drops_the_least_recently_used() -> None:
    table: LimitedDict[str, int] = LimitedDict(3)
    for i in range(10):
        table[f"k{i}"] = i
        assert len(table) <= 3
    table.touch("k7")
    table["k10"] = 10
    assert list(table) == ["k9", "k7", "k10"]
    with pytest.raises(ValueError):
        LimitedDict(0)


def test_a_workers_negative_answers_and_slice_layouts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "MAX_ABSENT", 50)
    monkeypatch.setattr(remote, "MAX_SLICED", 20)
    fills = RemoteFills(clock=FakeClock())
    link: Any = None
    for i in range(500):
        fill = fills.acquire(f"titles/1/a{i}")  # no link: fails at once, but the master's answer still comes
        fills.on_message(link, Absent(fill.key, 60))
        fills.release(fill)
        fill = fills.acquire(f"titles/1/s{i}")
        fills.on_message(link, Sliced(fill.key, SliceMeta(10, 5)))
        fills.release(fill)
        assert len(fills.absent) <= 50 and len(fills.sliced) <= 20
    assert fills.is_absent("titles/1/a499") and not fills.is_absent("titles/1/a0")
    assert len(fills.fills) == 0


def test_a_workers_hit_counts_per_flush_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "MAX_FLUSH_HITS", 100)
    worker = WorkerStats()
    for i in range(1000):
        worker.observe(200, "hit", "hdd", 10, 0.001, f"k{i % 300}")
        assert len(worker.hits) <= 100
    assert worker.hits["k0"] == 4  # keys already counted keep counting
    assert worker.take(0).hits and worker.hits == {}


def test_bulk_work_reads_its_items_as_it_goes_with_a_bounded_number_in_flight() -> None:
    pulled = finished = 0
    most = 0

    def items() -> Iterator[int]:
        nonlocal pulled, most
        for i in range(2000):
            pulled += 1
            most = max(most, pulled - finished)
            yield i

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = []
        for item, future in run_bounded(pool, lambda i: i * 2, items(), 8):
            finished += 1
            results.append((item, future.result()))
    assert sorted(results) == [(i, i * 2) for i in range(2000)]
    assert most <= 8  # never more than the window ahead of what was handed back
    with pytest.raises(ValueError):
        list(run_bounded(ThreadPoolExecutor(1), lambda i: i, [1], 0))


def test_an_entry_used_outside_get_is_not_the_one_pushed_out(tmp_path: Path) -> None:
    """A memo replay only marks its entry (ObjectCache.touch): the mark still keeps it from being the least
    recently used one, and the next unmarked one goes instead."""
    view = FakeView(str(tmp_path / "none"), 10)
    cache = ObjectCache(cast(StoreView, view), HttpConfig(), MemoryCacheConfig(max_entries=4))
    entries = [cache.get(f"k{i}") for i in range(4)]
    assert entries[0] is not None
    entries[0].body = b"x" * 10  # as load_body leaves it: touch counts only entries holding their body
    assert cache.touch(entries[0])
    cache.get("new")
    lookups = view.lookups
    assert cache.get("k0") is entries[0] and view.lookups == lookups  # still held
    cache.get("k1")
    assert view.lookups == lookups + 1  # pushed out in its place, asked again
