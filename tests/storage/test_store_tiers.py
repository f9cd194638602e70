"""Tier behaviour on real files: capacity, LRU eviction, demotion, promotion, pinning."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oca.errors import InsufficientStorage
from oca.storage import Store
from tests.clock import FakeClock

from .conftest import assert_consistent, storage_config

Src = Callable[..., str]


@pytest.fixture
def small(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    """SSD holds 3 objects of 100 bytes, HDD holds 5; promotion after 3 hits within 60 s."""
    s = Store.open(storage_config(tmp_path, ssd=300, hdd=500, hits=3, window=60.0), clock)
    yield s
    s.close()


def where(store: Store) -> dict[str, str]:
    return {i.key: i.tier for i in store.list()}


def test_hdd_eviction_deletes_least_recently_used(small: Store, src: Src, clock: FakeClock) -> None:
    for i in range(5):
        small.put_file(src(size=100, seed=i), f"k{i}")
        clock.advance(1)
    small.record_hits({"k0": 1})
    small.put_file(src(size=100), "k5")
    assert "k1" not in where(small) and "k0" in where(small)
    assert small.status()["evictions"] == {"ssd": 0, "hdd": 1}
    assert_consistent(small)


def test_ssd_eviction_demotes_to_hdd(small: Store, src: Src) -> None:
    for i in range(3):
        small.put_file(src(size=100, seed=i), f"h{i}", hot=True)
    small.put_file(src(size=100), "h3", hot=True)
    assert where(small) == {"h0": "hdd", "h1": "ssd", "h2": "ssd", "h3": "ssd"}
    info = small.get("h0")
    assert info is not None and Path(info.path).read_bytes() == Path(src(size=100, seed=0)).read_bytes()
    status = small.status()
    assert (status["demotions"], status["evictions"]) == (1, {"ssd": 1, "hdd": 0})
    assert_consistent(small)


def test_demotion_into_a_full_hdd_evicts_there_first(small: Store, src: Src) -> None:
    for i in range(5):
        small.put_file(src(size=100, seed=i), f"c{i}")
    for i in range(3):
        small.put_file(src(size=100, seed=10 + i), f"h{i}", hot=True)
    small.put_file(src(size=100), "h3", hot=True)
    placed = where(small)
    assert "c0" not in placed and placed["h0"] == "hdd"
    assert_consistent(small)


def test_pinned_objects_are_never_evicted_or_demoted(small: Store, src: Src) -> None:
    small.put_file(src(size=100), "p", hot=True, pin=True)
    for i in range(10):
        small.put_file(src(size=100, seed=i), f"h{i}", hot=True)
    assert where(small)["p"] == "ssd"
    for i in range(10):
        small.put_file(src(size=100, seed=i), f"c{i}")
    small.set_pinned("c9", True)
    small.put_file(src(size=100), "late")
    assert where(small)["c9"] == "hdd"
    assert_consistent(small)


def test_a_tier_all_pinned_refuses_with_507(small: Store, src: Src) -> None:
    for i in range(3):
        small.put_file(src(size=100, seed=i), f"p{i}", hot=True, pin=True)
    for i in range(5):
        small.put_file(src(size=100, seed=i), f"q{i}", pin=True)
    with pytest.raises(InsufficientStorage) as caught:
        small.put_file(src(size=100), "x")
    assert caught.value.status == 507
    assert_consistent(small)


def test_cold_put_falls_back_to_the_first_tier_when_the_last_is_all_pinned(small: Store, src: Src) -> None:
    for i in range(5):
        small.put_file(src(size=100, seed=i), f"q{i}", pin=True)
    assert small.put_file(src(size=100), "x").tier == "ssd"


def test_promotion_after_n_hits_within_the_window(small: Store, src: Src, clock: FakeClock) -> None:
    small.put_file(src(size=100), "k")
    g0 = small.generation
    for _ in range(2):
        small.record_hits({"k": 1})
        clock.advance(20)
        assert small.get("k").tier == "hdd"  # type: ignore[union-attr]
    small.record_hits({"k": 1})
    info = small.get("k")
    assert info is not None and info.tier == "ssd"
    assert Path(info.path).read_bytes() == Path(src(size=100)).read_bytes()
    assert small.status()["promotions"] == 1
    assert small.generation == g0  # same bytes: workers keep what they cache (see engine.py)
    assert_consistent(small)


def test_no_promotion_when_hits_spread_beyond_the_window(small: Store, src: Src, clock: FakeClock) -> None:
    small.put_file(src(size=100), "k")
    for _ in range(10):
        small.record_hits({"k": 1})
        clock.advance(31)
    assert small.get("k").tier == "hdd"  # type: ignore[union-attr]
    assert small.status()["promotions"] == 0


def test_a_batch_of_hits_counts_fully(small: Store, src: Src) -> None:
    small.put_file(src(size=100), "k")
    small.record_hits({"k": 3, "unknown": 5})
    assert small.get("k").tier == "ssd"  # type: ignore[union-attr]


def test_promotion_makes_room_by_demoting(small: Store, src: Src) -> None:
    for i in range(3):
        small.put_file(src(size=100, seed=i), f"h{i}", hot=True)
    small.put_file(src(size=100, seed=9), "k")
    small.record_hits({"k": 3})
    assert where(small) == {"h0": "hdd", "h1": "ssd", "h2": "ssd", "k": "ssd"}
    assert_consistent(small)


def test_pinned_objects_are_not_promoted(small: Store, src: Src) -> None:
    small.put_file(src(size=100), "k", pin=True)
    small.record_hits({"k": 10})
    assert small.get("k").tier == "hdd"  # type: ignore[union-attr]


def test_capacity_never_exceeded_under_random_operations(tmp_path: Path, src: Src, clock: FakeClock) -> None:
    rng = random.Random(1234)
    sources = [src(size=rng.randrange(0, 400), seed=i) for i in range(12)]
    store = Store.open(storage_config(tmp_path, ssd=700, hdd=1500, hits=2, window=30.0), clock)
    try:
        for _ in range(150):
            key = f"titles/{rng.randrange(4)}/{rng.randrange(10)}"
            op = rng.random()
            if op < 0.5:
                with contextlib.suppress(InsufficientStorage):
                    store.put_file(rng.choice(sources), key, hot=rng.random() < 0.3, pin=rng.random() < 0.05)
            elif op < 0.75:
                objects = store.list()
                store.record_hits({i.key: rng.randrange(1, 3) for i in rng.sample(objects, min(3, len(objects)))})
            elif op < 0.85:
                store.evict(key)
            elif op < 0.9:
                store.evict_prefix(f"titles/{rng.randrange(4)}/")
            elif store.get(key) is not None:
                store.set_pinned(key, rng.random() < 0.3)
            clock.advance(rng.random() * 10)
            assert_consistent(store)
        assert store.status()["promotions"] and store.status()["demotions"], store.status()
    finally:
        store.close()


def test_concurrent_puts_hits_and_evictions_stay_consistent(tmp_path: Path, src: Src) -> None:
    sources = [src(size=50 + 10 * i, seed=i) for i in range(8)]
    errors: list[BaseException] = []
    with Store.open(storage_config(tmp_path, ssd=1500, hdd=3000, hits=2, window=60.0)) as store:

        def work(worker: int) -> None:
            rng = random.Random(worker)
            try:
                for i in range(25):
                    key = f"w{rng.randrange(3)}/{rng.randrange(12)}"
                    store.put_file(rng.choice(sources), key, hot=i % 4 == 0)
                    store.record_hits({key: 1, f"w0/{i % 12}": 1})
                    if i % 7 == 0:
                        store.evict_prefix(f"w{rng.randrange(3)}/1")
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert_consistent(store)
