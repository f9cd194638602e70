"""The default policy and placement through the real Store (disk and index in memory, as the replay tool runs
it): new objects land on the fastest tier, a tier never holds more than its capacity, pinned objects never
leave, and a scan of one-time keys does not push out what is being read."""

from __future__ import annotations

import dataclasses

from hypothesis import example, given, settings
from hypothesis import strategies as st

from loadtest.cachesim.replay import FAKE_FILE, TraceClock, memory_store
from oca.config.model import StorageConfig, TierConfig
from oca.errors import InsufficientStorage
from oca.storage import Store

HOT_HITS = 3  # N: an object read more than N times since a scan began survives the scan


def config(ssd: int = 1_000, hdd: int = 9_000, policy: str = "s3fifo") -> StorageConfig:
    return StorageConfig(state_dir="/nonexistent", policy=policy,
                         tiers=(TierConfig("ssd", "/nonexistent/ssd", ssd), TierConfig("hdd", "/nonexistent/hdd", hdd)))


def put(store: Store, key: str, size: int, pin: bool = False) -> bool:
    if store.get(key) is not None:
        return True
    try:
        tier, _ = store.fill_target(key, size, hot=pin)
        store.adopt(FAKE_FILE, key, tier=tier, size=size, digest="", pin=pin)
    except InsufficientStorage:
        return False
    return True


def request(store: Store, key: str, size: int) -> None:
    if store.get(key) is not None:
        store.record_hits({key: 1})
    else:
        put(store, key, size)


def test_new_objects_land_on_the_fastest_tier_read_ones_stay_one_timers_move_into_free_room() -> None:
    store = memory_store(config(ssd=300, hdd=1000), TraceClock())
    put(store, "a", 100)
    assert store.get("a").tier == "ssd"  # type: ignore[union-attr]
    store.record_hits({"a": 1})
    for i in range(5):
        put(store, f"new{i}", 100)
    assert store.get("a").tier == "ssd"  # type: ignore[union-attr]  # read: in main, one-timers go first
    assert store.get("new0").tier == "hdd"  # type: ignore[union-attr]  # never read, but the HDD had room


def test_a_one_timer_in_the_hdds_free_room_goes_before_an_object_that_was_read() -> None:
    """Free room comes back on the HDD when an eviction frees more than it needed, and an SSD one-timer (never
    read) moves into it. When the HDD next needs room, that one-timer goes, not the oldest object that was read
    there (it used to enter the HDD's main queue at the tail, so a read object left in its stead: replay at
    Zipf 1.0, 2%, README)."""
    store = memory_store(config(ssd=100, hdd=300), TraceClock())  # the SSD's small queue: 20 bytes
    for key in ("e1", "e2", "e3", "e4"):  # each read, then pushed down to the HDD's main by the next
        request(store, key, 100)
        request(store, key, 100)
    request(store, "x", 60)
    request(store, "x", 60)
    request(store, "t", 10)  # the one-timer
    request(store, "u", 40)  # x (read) moves down: e2 leaves the HDD, freeing 40 bytes more than x needed
    assert where(store) == {"e3": "hdd", "e4": "hdd", "x": "hdd", "t": "ssd", "u": "ssd"}
    request(store, "o", 60)  # t, never read, moves into the HDD's free room
    request(store, "u", 40)
    request(store, "v", 50)  # o, never read, is dropped (no room for it below)
    request(store, "v", 50)
    assert where(store) == {"e3": "hdd", "e4": "hdd", "x": "hdd", "t": "hdd", "u": "ssd", "v": "ssd"}
    request(store, "w", 20)  # u (read) moves down and needs 10 bytes of the HDD: t goes, e3 stays
    assert where(store) == {"e3": "hdd", "e4": "hdd", "x": "hdd", "u": "hdd", "v": "ssd", "w": "ssd"}


def where(store: Store) -> dict[str, str]:
    return {info.key: info.tier for info in store.list()}


def test_a_returning_only_ssd_takes_what_left_the_cache_and_came_back() -> None:
    base = config(ssd=300, hdd=300)
    ssd = dataclasses.replace(base.tiers[0], admission="returning")
    store = memory_store(dataclasses.replace(base, tiers=(ssd, base.tiers[1])), TraceClock())
    put(store, "a", 100)
    assert store.get("a").tier == "hdd"  # type: ignore[union-attr]
    for i in range(4):
        put(store, f"x{i}", 100)
    assert store.get("a") is None
    put(store, "a", 100)
    assert store.get("a").tier == "ssd"  # type: ignore[union-attr]


ops = st.lists(st.tuples(st.sampled_from(["req", "req", "req", "pin", "unpin"]), st.integers(0, 60),
                         st.integers(1, 400)), max_size=300)


@settings(max_examples=60, deadline=None)
@given(ops, st.sampled_from(["s3fifo", "lru"]))
def test_tiers_never_exceed_capacity_and_pinned_objects_never_leave(steps: list[tuple[str, int, int]],
                                                                    policy: str) -> None:
    store = memory_store(config(policy=policy), TraceClock())
    sizes: dict[str, int] = {}
    pinned: set[str] = set()
    for op, n, size in steps:
        key = f"k{n}"
        size = sizes.setdefault(key, size)
        if op == "req":
            request(store, key, size)
        elif op == "pin" and put(store, key, size, pin=True):
            store.set_pinned(key, True)
            pinned.add(key)
        elif op == "unpin" and key in pinned:
            store.set_pinned(key, False)
            pinned.discard(key)
        for tier in store.status()["tiers"]:  # type: ignore[attr-defined]
            assert tier["used"] <= tier["capacity"]
        assert all(store.get(k) is not None for k in pinned)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 200), st.integers(1, 40), st.randoms(use_true_random=False))
def test_a_scan_of_one_time_keys_does_not_evict_what_is_read(hot: int, scan: int, every: int, rnd: object) -> None:
    """Hot objects read more than N times since the scan began (spread over it) are all still cached after a
    scan of one-time keys many times the cache's size."""
    import random
    assert isinstance(rnd, random.Random)
    store = memory_store(config(), TraceClock())
    for i in range(hot):
        request(store, f"hot{i}", 50)
    reads = 0
    for s in range(scan * 10):  # up to 2,000 one-time keys of 10..100 bytes: 20x the cache
        request(store, f"scan{s}", rnd.randrange(10, 100))
        if s % every == 0:
            for i in range(hot):
                request(store, f"hot{i}", 50)
            reads += 1
    if reads > HOT_HITS:
        assert all(store.get(f"hot{i}") is not None for i in range(hot))


place_ops = st.lists(st.tuples(st.sampled_from(["req", "req", "pin", "unpin", "evict"]), st.integers(0, 40),
                               st.integers(1, 600)), max_size=200)


@settings(max_examples=60, deadline=None)
@given(place_ops, st.integers(0, 40), st.integers(1, 1_200))
# S3-FIFO's victims once gave up on a main stuck on pins just before the small queue moved an evictable
# object (k1, read twice) into it: the plan refused what the byte counts allowed
@example([("req", 0, 154), ("pin", 0, 1), ("pin", 2, 35), ("pin", 3, 600), ("req", 1, 125), ("req", 1, 1)], 0, 87)
def test_choosing_a_tier_without_a_plan_agrees_with_the_plan(steps: list[tuple[str, int, int]], probe: int,
                                                             probe_size: int) -> None:
    """A put picks its tier from byte counts (Catalog.refusal) and plans only when it commits: after any mix of
    puts, pins, unpins and evictions, each tier's pinned bytes match its pinned objects, and the refusal says
    None exactly when the plan would succeed, for a new key and for one being replaced."""
    store = memory_store(config(ssd=1_000, hdd=1_500), TraceClock())
    cat = store._cat  # the catalog itself: what the store decides from
    sizes: dict[str, int] = {}
    for op, n, size in steps:
        key = f"k{n}"
        size = sizes.setdefault(key, size)
        if op == "req":
            request(store, key, size)
        elif op == "pin" and put(store, key, size, pin=True):
            store.set_pinned(key, True)
        elif op == "unpin" and store.get(key) is not None:
            store.set_pinned(key, False)
        elif op == "evict":
            store.evict(key)
        for tier in cat.tiers:
            assert tier.pinned == sum(e.size for e in cat.on(tier) if e.pinned)
    for key in (f"k{probe}", "new"):
        for tier in cat.tiers:
            refusal = cat.refusal(tier, probe_size, key)
            try:
                cat.plan(tier, probe_size, key, replacing=True)
                planned = True
            except InsufficientStorage:
                planned = False
            assert (refusal is None) == planned, (key, tier.name, refusal)
