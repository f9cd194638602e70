"""Replays a trace through the box's real storage code: Store, Engine, Catalog and the configured policies,
with the disk and the index replaced by in-memory fakes.

Rules kept here:
- Only I/O is faked: file copies, renames, unlinks, the SQLite index and the generation file. Tier choice,
  admission, placement plans, eviction order, demotion and promotion are the box's own code, reached through
  the Store's public calls a box makes: `get` (a worker's lookup), `record_hits` (workers' hit reports),
  `fill_target` then `adopt` (a miss filled from upstream).
- The tiers keep the configured split (e.g. 500 GiB SSD : 4 TiB HDD) scaled to the total asked for.
- The clock is the trace's: promotion windows and ghost ages run on trace time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence

from loadtest.cachesim.reference import Result, Trace
from oca.config.model import StorageConfig
from oca.errors import InsufficientStorage
from oca.storage.catalog import Catalog, CatalogEntry, Tier
from oca.storage.engine import Engine
from oca.storage.generation import Generation
from oca.storage.index import Index, Pending, Row, RowValues
from oca.storage.model import TierState
from oca.storage.policy import PromotionCounter
from oca.storage.store import Store

FAKE_FILE = "/nonexistent/oca-cachesim-fill"  # what `adopt` is handed: never opened, its unlink finds nothing


_NO_TRANSACTION = contextlib.nullcontext()


class MemoryIndex(Index):
    """An index that keeps nothing: the catalog in memory is the replay's only record."""

    def __init__(self) -> None:  # no SQLite connection
        self.path = ":memory:"

    def close(self, clean: bool = False) -> None:
        pass

    # one shared no-op context, not a generator per call: the fake's own cost is none of the box's bookkeeping
    # (Index declares the generator-based manager its @contextmanager makes; callers only enter and exit it)
    def transaction(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return _NO_TRANSACTION

    def rows(self) -> Iterator[RowValues]:
        return iter(())

    def put(self, row: Row) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def set_pinned(self, key: str, pinned: bool) -> None:
        pass

    def set_accessed(self, accessed: dict[str, float]) -> None:
        pass

    def add_pending(self, tier: str, h: str, key: str, intent: str) -> None:
        pass

    def clear_pending(self, tier: str, h: str) -> None:
        pass

    def pending(self) -> list[Pending]:
        return []

    def set_tier_state(self, name: str, state: TierState, error: str) -> None:
        pass

    def tier_states(self) -> dict[str, TierState]:
        return {}

    def drop_tiers_except(self, names: Sequence[str]) -> int:
        return 0


class MemoryGeneration(Generation):
    def __init__(self) -> None:  # no mapped file
        self.path, self._value = ":memory:", 0

    @property
    def value(self) -> int:
        return self._value

    def read(self) -> int:
        return self._value

    def bump(self) -> int:
        self._value += 1
        return self._value

    def close(self) -> None:
        pass


class MemoryEngine(Engine):
    """The engine with its file work taken out: installing attaches, moving re-attaches, removing is free."""

    def prepare(self, tier: Tier, entry: CatalogEntry, sync: bool = True, tmp_dir: str = "") -> str:
        return ""

    def install(self, tier: Tier, staged_path: str, meta_tmp: str, entry: CatalogEntry) -> None:
        entry.tier = tier.number
        self.cat.attach(entry)

    def write_sidecar(self, tier: Tier, entry: CatalogEntry) -> None:
        pass

    def move(self, entry: CatalogEntry, dst: Tier) -> bool:
        self.cat.relocate(entry, dst)  # as Engine.move once the files and the index row have moved
        return True

    def remove_files(self, tier: Tier, hashes: Sequence[str]) -> None:
        pass

    def present(self, tier: Tier) -> bool:
        return tier.state is not TierState.FAILED


class TraceClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scaled(config: StorageConfig, total: int) -> StorageConfig:
    """The storage config with its tiers' capacities scaled to add up to `total` bytes, split as configured."""
    configured = sum(t.capacity for t in config.tiers)
    tiers = [dataclasses.replace(t, capacity=max(1, t.capacity * total // configured)) for t in config.tiers]
    return dataclasses.replace(config, tiers=tuple(tiers))


def memory_store(config: StorageConfig, clock: TraceClock) -> Store:
    """A Store over `config` whose disk and index are in memory (never call its close: it owns no lock)."""
    catalog = Catalog.with_policy(config.tiers, config.policy)
    counter = PromotionCounter(config.promotion.hits, config.promotion.window, clock)
    engine = MemoryEngine(catalog, MemoryIndex(), MemoryGeneration(), counter, clock)
    return Store(config, clock, catalog, engine, -1)


def replay(trace: Trace, config: StorageConfig, total: int, start: int = 0,
           before_start: Callable[[Store], object] | None = None) -> tuple[Result, Store]:
    """Replay `trace` through a memory store of `total` bytes; hits counted from request `start` on.
    `before_start` is called with the store just before request `start` is replayed (the nightly fill)."""
    clock = TraceClock()
    store = memory_store(scaled(config, total), clock)
    if before_start is None:
        return _run(trace, store, clock, 0, len(trace), start), store
    _run(trace, store, clock, 0, start, start)
    before_start(store)
    return _run(trace, store, clock, start, len(trace), start), store


def _run(trace: Trace, store: Store, clock: TraceClock, lo: int, hi: int, start: int) -> Result:
    ids, times, keys, sizes = trace.ids, trace.times, trace.keys, trace.sizes
    hit_bytes = hits = 0
    get, record, target, adopt = store.get, store.record_hits, store.fill_target, store.adopt
    for i in range(lo, hi):
        n = ids[i]
        key = keys[n]
        clock.now = times[i]
        if get(key) is not None:
            record({key: 1})
            if i >= start:
                hit_bytes += sizes[n]
                hits += 1
            continue
        size = sizes[n]
        try:
            tier, _ = target(key, size)
            adopt(FAKE_FILE, key, tier=tier, size=size, digest="")
        except InsufficientStorage:
            pass  # larger than any tier, or no room that is not pinned: served, not cached
    return hit_bytes, hits

