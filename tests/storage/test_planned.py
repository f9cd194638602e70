"""Fill-aware eviction (oca/storage/planned.py): planned files outrank unplanned ones, lowest score goes
first among them, pins hold, and a new plan moves keys between the planned set and the tier's own policy."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.storage import Store
from oca.storage.planned import PlannedPolicy
from oca.storage.policy import LRUPolicy
from oca.storage.s3fifo import S3FIFOPolicy
from tests.clock import FakeClock
from tests.storage.conftest import storage_config
from tests.storage.test_policy_contract import Sized


def nothing_pinned(key: str) -> bool:
    return False


def wrapped(scores: dict[str, float], keys: list[str], size: int = 10) -> PlannedPolicy:
    policy = Sized(LRUPolicy(), scores)
    for key in keys:
        policy.add(key, size)
    return policy


@pytest.mark.parametrize(("scores", "need", "pinned", "expected"), [
    ({}, 20, (), ["p1", "u1"]),  # no plan: the tier's own order (LRU)
    ({"p1": 5.0, "p2": 1.0}, 20, (), ["u1", "u2"]),  # unplanned first, however recent
    ({"p1": 5.0, "p2": 1.0}, 30, (), ["u1", "u2", "p2"]),  # then the lowest score
    ({"p1": 5.0, "p2": 1.0}, 50, (), ["u1", "u2", "p2", "p1"]),
    ({"p1": 5.0, "p2": 1.0}, 50, ("p2",), ["u1", "u2", "p1"]),  # a pinned planned file never goes
    ({"p1": 1.0, "p2": 1.0}, 20, ("u1",), ["u2", "p1"]),  # equal scores: by key
])
def test_victims_are_unplanned_first_then_planned_by_score(scores: dict[str, float], need: int,
                                                            pinned: tuple[str, ...], expected: list[str]) -> None:
    policy = wrapped(scores, ["p1", "u1", "p2", "u2"])
    assert policy.victims(need, lambda k: k in pinned) == expected
    assert policy.victims(need, lambda k: k in pinned) == expected  # asking twice changes nothing


def test_a_planned_key_is_kept_and_admitted_and_reads_do_not_reorder_it() -> None:
    policy = wrapped({"p": 1.0}, ["p", "u"])
    policy.touch("p")
    assert policy.worth_keeping("p") and policy.admits("p") and not policy.admits("never-seen")
    assert policy.victims(10, nothing_pinned) == ["u"]


def test_replan_moves_keys_between_the_plan_and_the_tiers_own_policy() -> None:
    policy = wrapped({"a": 1.0}, ["a", "b", "c"])
    policy.replan({"b": 3.0}, ["a", "b", "c"])
    # a is unplanned now (newest in LRU order), b is planned: c, then a, then b
    assert policy.victims(30, nothing_pinned) == ["c", "a", "b"]
    policy.replan({}, ["a", "b", "c"])
    assert policy.victims(30, nothing_pinned) == ["c", "a", "b"] and len(policy) == 3


@given(st.lists(st.tuples(st.sampled_from("apr"), st.integers(0, 11), st.integers(1, 30)), max_size=60),
       st.integers(1, 200), st.integers(0, 2**32))
def test_property_no_pinned_victim_and_a_planned_one_only_after_every_unplanned_one(
        ops: list[tuple[str, int, int]], need: int, seed: int) -> None:
    rng = random.Random(seed)
    scores = {f"k{i}": float(rng.randrange(5)) for i in range(12) if rng.random() < 0.5}
    pinned = {f"k{i}" for i in range(12) if rng.random() < 0.2}
    policy = Sized(S3FIFOPolicy(), scores)
    held: dict[str, int] = {}
    for op, i, size in ops:
        key = f"k{i}"
        if op == "a":
            policy.add(key, size)
            held[key] = size
        elif op == "r":
            policy.remove(key)
            held.pop(key, None)
        else:
            policy.touch(key)
    chosen = policy.victims(need, pinned.__contains__)
    assert not set(chosen) & pinned and len(set(chosen)) == len(chosen) and set(chosen) <= set(held)
    planned = [k for k in chosen if k in scores]
    if planned:  # the unplanned unpinned keys were all given up before any planned one
        assert {k for k in held if k not in scores and k not in pinned} <= set(chosen)
        assert [scores[k] for k in planned] == sorted(scores[k] for k in planned)
    freed = sum(held[k] for k in chosen)
    assert freed >= need or set(chosen) == {k for k in held if k not in pinned}


def test_the_store_keeps_planned_files_while_unplanned_ones_can_go(tmp_path: Path, src: Callable[..., str]) -> None:
    clock = FakeClock()
    with Store.open(storage_config(tmp_path, ssd=300, hdd=500, ssd_admission="all"), clock) as store:
        store.set_fill_scores({"p0": 1.0, "p1": 9.0})
        for key in ("p0", "p1", "u0", "u1", "u2", "u3", "u4", "u5"):  # 8 x 100 bytes in 800
            store.put_file(src(size=100, seed=key), key)
            clock.advance(1)
        for i in range(10):  # far more than the unplanned room: unplanned objects make it among themselves
            store.put_file(src(size=100, seed=i), f"n{i}")
            clock.advance(1)
        keys = {info.key for info in store.list()}
        assert {"p0", "p1"} <= keys and not {"u0", "u1", "u2", "u3", "u4", "u5"} & keys
        store.set_fill_scores({})  # the next plan names nothing: they compete like any other object (LRU)
        for i in range(8):
            store.put_file(src(size=100, seed=f"m{i}"), f"m{i}")
            clock.advance(1)
        assert not {"p0", "p1"} & {info.key for info in store.list()}


def test_wrapping_a_policy_that_already_holds_keys_counts_them_by_the_stores_sizes() -> None:
    inner = LRUPolicy()
    for key in ("a", "b", "c"):
        inner.add(key, 10)
    policy = PlannedPolicy(inner, {"a": 10, "b": 10, "c": 10}.__getitem__)
    policy.replan({"a": 1.0}, ["a", "b", "c"])
    assert policy.victims(20, nothing_pinned) == ["b", "c"]
    assert policy.victims(25, nothing_pinned) == ["b", "c", "a"]


def test_a_cold_fill_lands_on_the_slowest_tier_with_room_a_hot_one_on_the_fastest(tmp_path: Path,
                                                                                  src: Callable[..., str]) -> None:
    with Store.open(storage_config(tmp_path, ssd=300, hdd=300, ssd_admission="all", policy="s3fifo"),
                    FakeClock()) as store:
        assert store.fill_target("titles/1/a", 100)[0] == "ssd"  # a client's miss: the fastest tier
        assert store.fill_target("titles/1/a", 100, cold=True)[0] == "hdd"  # a prefetch: the slowest
        assert store.fill_target("titles/1/a", 100, hot=True, cold=True)[0] == "ssd"  # hot wins
        for i in range(3):  # pre-position three pinned files the way a prefetch does
            key = f"titles/2/p{i}"
            tier, _ = store.fill_target(key, 100, cold=True)
            store.adopt(src(size=100, seed=i), key, tier=tier, size=100, digest="", pin=True)
        assert {info.tier for info in store.list()} == {"hdd"}
        # the slowest tier is all pinned: a cold fill takes the fastest tier with room, as any fill would
        assert store.fill_target("titles/4/x", 100, cold=True)[0] == "ssd"


def test_the_planned_order_follows_adds_removes_and_replans_between_evictions() -> None:
    # the order of planned keys is kept between misses (not sorted on each): every change must renew it
    policy = wrapped({"p1": 5.0, "p2": 1.0, "p3": 3.0}, ["p1", "p2"])
    assert policy.victims(10, nothing_pinned) == ["p2"]
    policy.add("p3", 10)
    assert policy.victims(20, nothing_pinned) == ["p2", "p3"]
    policy.remove("p2")
    assert policy.victims(10, nothing_pinned) == ["p3"]
    policy.replan({"p1": 0.5, "p3": 3.0}, ["p1", "p3"])
    assert policy.victims(10, nothing_pinned) == ["p1"]


@pytest.mark.parametrize(("policy", "on_ssd", "miss"), [("s3fifo", 5, "ssd"), ("lru", 10, "hdd")])
def test_hot_pre_positioned_files_leave_the_fast_tiers_small_queue_to_new_objects(
        tmp_path: Path, src: Callable[..., str], policy: str, on_ssd: int, miss: str) -> None:
    # S3-FIFO's small queue is 5% of all bytes (500 of 10,000), on the SSD: a plan's hot, pinned files take the
    # SSD only up to its other 500 bytes and the rest go to the HDD; LRU reserves nothing (the SSD fills up)
    with Store.open(storage_config(tmp_path, ssd=1000, hdd=9000, ssd_admission="all", policy=policy),
                    FakeClock()) as store:
        for i in range(12):
            key = f"titles/1/h{i}"
            tier, _ = store.fill_target(key, 100, hot=True, cold=True)
            store.adopt(src(size=100, seed=i), key, tier=tier, size=100, digest="", hot=True, pin=True)
        tiers = [info.tier for info in store.list()]
        assert tiers.count("ssd") == on_ssd
        # with S3-FIFO a client's miss still lands on the SSD, in the small queue; LRU's SSD is pinned full
        assert store.fill_target("titles/2/new", 100)[0] == miss
