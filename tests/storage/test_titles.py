"""Per-title counts kept as objects come and go (pure), and the store's lock-free counters and title feed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

from oca.admin.inventory import TitleInventory
from oca.config.model import StorageConfig
from oca.storage import Store
from oca.storage.storage_owner import StorageOwner
from oca.storage.titles import TitleCounts, TitleFeed, title_of_object

from .locking import store_lock_held

Src = Callable[..., str]


def test_a_slice_counts_under_its_objects_title() -> None:
    assert title_of_object("titles/7/a.mp4@slice000003") == "7"
    assert title_of_object("titles/7@slice000003") is None
    assert title_of_object("public/x") is None


def test_the_first_take_is_full_and_later_ones_only_what_changed() -> None:
    counts = TitleCounts(2)
    counts.add("titles/1/a", 0, 10)
    counts.add("titles/1/b", 1, 5)
    counts.add("titles/2/a", 1, 1)
    counts.add("other/x", 1, 9)
    assert counts.take([True, True]) == TitleFeed(True, {"1": (2, 15), "2": (1, 1)})
    assert counts.take([True, True]) == TitleFeed(False, {})
    counts.remove("titles/1/a", 0, 10)
    counts.remove("titles/2/a", 1, 1)
    counts.add("titles/3/x@slice000001", 0, 4)
    assert counts.take([True, True]) == TitleFeed(False, {"1": (1, 5), "2": (0, 0), "3": (1, 4)})


def test_a_tier_that_stops_serving_drops_out_in_a_full_take() -> None:
    counts = TitleCounts(2)
    counts.add("titles/1/a", 0, 10)
    counts.add("titles/1/b", 1, 5)
    counts.add("titles/2/a", 0, 1)
    counts.take([True, True])
    assert counts.take([False, True]) == TitleFeed(True, {"1": (1, 5)})  # title 2 is only on the failed tier
    assert counts.take([True, True]) == TitleFeed(True, {"1": (2, 15), "2": (1, 1)})


def test_the_inventory_applies_a_feed_of_changes() -> None:
    inventory = TitleInventory(base=1000)
    first = inventory.apply(TitleFeed(True, {"1": (2, 15), "2": (1, 1)}))
    assert first == 1002
    assert inventory.apply(TitleFeed(False, {"1": (2, 15)})) == first  # same counts: no new sequence
    after = inventory.apply(TitleFeed(False, {"2": (0, 0), "3": (1, 4)}))
    delta = inventory.since(first).to_json()
    assert delta["titles"] == {"3": {"objects": 1, "bytes": 4}} and delta["removed"] == ["2"]
    assert inventory.apply(TitleFeed(True, {"3": (1, 4)})) == after + 1  # title 1 missing from a full feed
    assert inventory.since(after).to_json()["removed"] == ["1"]


def _held(inventory: TitleInventory) -> dict[str, tuple[int, int]]:
    return {t: (v["objects"], v["bytes"]) for t, v in inventory.since(-1).to_json()["titles"].items()}


def _listing(store: Store) -> dict[str, tuple[int, int]]:
    inventory = TitleInventory(base=0)
    inventory.refresh((o.key, o.size) for o in store.list("titles/"))
    return _held(inventory)


def test_the_stores_feed_matches_a_full_listing_through_puts_evictions_and_a_failed_tier(
        store: Store, src: Src) -> None:
    inventory = TitleInventory(base=0)
    for i in range(6):
        store.put_file(src(size=100 + i, seed=i), f"titles/{i % 3}/seg{i}", hot=i == 0)
    store.put_file(src(size=50), "public/x")
    inventory.apply(store.title_changes())
    assert _held(inventory) == _listing(store)
    store.evict("titles/1/seg1")
    store.evict_prefix("titles/2/")
    store.put_file(src(size=7), "titles/1/seg1", hot=True)
    inventory.apply(store.title_changes())
    assert _held(inventory) == _listing(store)
    store.report_io_error("ssd", "EIO")  # the hot copies are no longer servable
    inventory.apply(store.title_changes())
    assert _held(inventory) == _listing(store)
    assert _listing(store) == {"0": (1, 103), "1": (1, 104)}  # only the copies on hdd


@pytest.fixture
def lock_held(store: Store) -> Iterator[None]:
    """The store's lock held by another thread (as by a long eviction or index commit) for the test's span."""
    with store_lock_held(store):
        yield


def _answers(fn: Callable[[], object], wait: float = 5.0) -> bool:
    """True if fn() returns (in another thread) within `wait` seconds, long before the lock is let go."""
    done = threading.Event()
    worker = threading.Thread(target=lambda: (fn(), done.set()), daemon=True)
    worker.start()
    return done.wait(wait)


def test_status_and_the_title_feed_answer_while_the_store_lock_is_held(store: Store, src: Src,
                                                                       lock_held: None) -> None:
    assert _answers(store.status)
    assert _answers(store.title_changes)
    assert not _answers(lambda: store.list("titles/"), 0.3)  # the lock is really held: a listing waits for it


def test_the_owner_peeks_at_counters_while_every_storage_thread_waits(config: StorageConfig) -> None:
    async def scenario() -> None:
        owner = StorageOwner(config)
        await owner.open()
        release = threading.Event()
        blocked = [asyncio.ensure_future(owner.call(lambda _s: release.wait(30))) for _ in range(8)]
        try:
            await asyncio.sleep(0)
            status = owner.peek(Store.status)
            assert status["objects"] == 0
            assert owner.peek(Store.title_changes) == TitleFeed(True, {})
        finally:
            release.set()
            await asyncio.gather(*blocked)
            await owner.close()

    asyncio.run(scenario())
