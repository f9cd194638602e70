"""The master's bookkeeping per miss, counted in operations, not time (time is the benchmark's:
`python -m loadtest.cachesim.bookkeeping`). A miss on a full box installs one object, demotes what leaves the
SSD and evicts from the HDD: one record made, one freed, one plan, and the demoted object keeps its record
(Catalog.relocate) instead of being freed and made again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.cachesim.replay import FAKE_FILE, TraceClock, memory_store
from oca.config.model import StorageConfig, TierConfig
from oca.storage import Store, catalog
from oca.storage.catalog import Entries
from oca.storage.s3fifo import Ghost
from oca.storage.slots import KeySlots
from oca.storage.titles import TitleCounts
from tests.clock import FakeClock

from .conftest import assert_consistent, storage_config

Src = Callable[..., str]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts calls of the catalog's record operations and the planner while a test runs."""
    counted: Counter[str] = Counter()

    def count(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[label] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    count(KeySlots, "add", "record made")
    count(KeySlots, "remove", "record freed")
    count(Entries, "entry", "entry copied")
    count(TitleCounts, "add", "title counted")
    count(TitleCounts, "remove", "title counted")
    count(TitleCounts, "move", "title counted")
    count(catalog, "plan_placement", "plan")
    count(Ghost, "put", "ghost insert")
    count(Ghost, "pop", "ghost take")
    yield counted


def test_a_miss_that_demotes_and_evicts_makes_one_record_and_frees_one(
        tmp_path: Path, clock: FakeClock, src: Src, calls: Counter[str]) -> None:
    # LRU and hot puts, so the placement is known: h0 leaves the full SSD for the full HDD, where c0 goes
    with Store.open(storage_config(tmp_path, ssd=300, hdd=500), clock) as store:
        for i in range(5):
            store.put_file(src(size=100, seed=i), f"c{i}")
        for i in range(3):
            store.put_file(src(size=100, seed=10 + i), f"h{i}", hot=True)
        record = store._cat.entries.slots["h0"]
        calls.clear()
        store.put_file(src(size=100, seed=20), "h3", hot=True)
        # one record for h3, one freed (c0's); a copy of each victim's entry; each count changed once
        assert calls == {"record made": 1, "record freed": 1, "plan": 1, "entry copied": 2, "title counted": 3}
        assert store.get("h0").tier == "hdd" and store.get("c0") is None  # type: ignore[union-attr]
        assert store.status()["demotions"] == 1
        assert store._cat.entries.slots["h0"] == record, "a demoted object keeps its record"
        assert_consistent(store)
        store.close()
        with Store.open(storage_config(tmp_path, ssd=300, hdd=500), clock) as again:  # the index agrees
            assert {i.key: i.tier for i in again.list()} == {
                "c1": "hdd", "c2": "hdd", "c3": "hdd", "c4": "hdd", "h0": "hdd", "h1": "ssd", "h2": "ssd", "h3": "ssd"}


def test_titles_are_counted_once_per_object_that_comes_goes_or_moves(
        tmp_path: Path, clock: FakeClock, src: Src, calls: Counter[str]) -> None:
    with Store.open(storage_config(tmp_path, ssd=300, hdd=500), clock) as store:
        for i in range(5):
            store.put_file(src(size=100, seed=i), f"titles/c/{i}.ts")
        for i in range(3):
            store.put_file(src(size=100, seed=10 + i), f"titles/h/{i}.ts", hot=True)
        store.title_changes()
        calls.clear()
        store.put_file(src(size=100, seed=20), "titles/n/0.ts", hot=True)
        assert calls["title counted"] == 3  # the new object, the demoted one, the evicted one
        feed = store.title_changes()
        assert not feed.full and feed.titles == {"c": (4, 400), "h": (3, 300), "n": (1, 100)}


def test_misses_on_a_full_box_under_the_default_policy_cost_one_record_one_plan_and_one_copy_per_victim(
        calls: Counter[str]) -> None:
    objects, size, misses = 400, 1_000, 300
    config = StorageConfig(state_dir="/nonexistent", tiers=(
        TierConfig("ssd", "/nonexistent/ssd", 100 * size), TierConfig("hdd", "/nonexistent/hdd", 300 * size)))
    clock = TraceClock()
    store = memory_store(config, clock)

    def miss(key: str) -> None:
        clock.now += 1
        tier, _ = store.fill_target(key, size)
        store.adopt(FAKE_FILE, key, tier=tier, size=size, digest="")

    for i in range(objects):
        miss(f"titles/{i // 50}/720p/{i % 50:03d}.m4s")
    for i in range(0, objects, 3):  # read some, so the SSD's victims are worth keeping: demotions
        store.record_hits({f"titles/{i // 50}/720p/{i % 50:03d}.m4s": 1})
    demoted, evicted = store.status()["demotions"], store.status()["evictions"]
    assert isinstance(demoted, int) and isinstance(evicted, dict)
    before = demoted, sum(evicted.values())
    calls.clear()
    for i in range(misses):
        miss(f"titles/new{i // 50}/720p/{i % 50:03d}.m4s")
    demoted, evicted = store.status()["demotions"], store.status()["evictions"]
    assert isinstance(demoted, int) and isinstance(evicted, dict)
    demotions, victims = demoted - before[0], sum(evicted.values()) - before[1]
    assert demotions > 0 and victims == misses + demotions  # full: each miss deletes one object, some demote too
    assert calls["record made"] == misses and calls["record freed"] == misses  # none for a demotion
    assert calls["plan"] == misses
    assert calls["entry copied"] == victims
    # the ghost's table: each deleted victim's key remembered, each new key looked for; a demoted object's key
    # never enters it (it leaves one tier and is back on the next at once)
    assert calls["ghost insert"] == misses and calls["ghost take"] == misses
