"""plan_placement and PromotionCounter: pure, table-driven, fake clock, no disk."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.errors import InsufficientStorage, StorageError
from oca.storage.policy import (
    Delete,
    Demote,
    LRUPolicy,
    Move,
    Place,
    PromotionCounter,
    TierSpace,
    plan_placement,
)
from tests.clock import FakeClock


@dataclass
class T:
    """A tier for a test: capacity, objects in LRU order (oldest first), whether it takes new objects."""

    capacity: int
    objects: dict[str, int] = field(default_factory=dict)
    accepts: bool = True


def plan(tiers: list[T], size: int, target: int, pinned: frozenset[str] = frozenset(),
         key: str | None = None, current: int | None = None) -> list[Move]:
    sizes = {k: s for t in tiers for k, s in t.objects.items()}
    spaces = []
    for n, t in enumerate(tiers):
        lru = LRUPolicy()
        for k, s in t.objects.items():
            lru.add(k, s)
        spaces.append(TierSpace(f"t{n}", t.capacity, sum(t.objects.values()), t.accepts, lru))
    return plan_placement(spaces, size, target, size_of=sizes.__getitem__, is_pinned=pinned.__contains__,
                          key=key, current=current)


CASES: list[tuple[str, list[T], int, int, frozenset[str], list[Move]]] = [
    ("fits as is", [T(100), T(300, {"a": 100})], 150, 1, frozenset(), [Place(1, 150)]),
    ("last tier deletes oldest first", [T(100), T(300, {"a": 100, "b": 100, "c": 100})], 150, 1,
     frozenset(), [Delete("a", 1), Delete("b", 1), Place(1, 150)]),
    ("first tier demotes into room below", [T(200, {"a": 100, "b": 100}), T(300)], 100, 0,
     frozenset(), [Demote("a", 0, 1), Place(0, 100)]),
    ("demotion cascades: make room below first", [T(200, {"a": 100, "b": 100}), T(200, {"x": 100, "y": 100})],
     100, 0, frozenset(), [Delete("x", 1), Demote("a", 0, 1), Place(0, 100)]),
    ("pinned objects stay", [T(200, {"a": 100, "b": 100}), T(300)], 100, 0, frozenset({"a"}),
     [Demote("b", 0, 1), Place(0, 100)]),
    ("pinned objects below stay, the demoted one is deleted instead",
     [T(200, {"a": 100, "b": 100}), T(100, {"x": 100})], 100, 0, frozenset({"x"}),
     [Delete("a", 0), Place(0, 100)]),
    ("no demotion into a tier that takes nothing new", [T(100, {"a": 100}), T(300, accepts=False)], 50, 0,
     frozenset(), [Delete("a", 0), Place(0, 50)]),
    ("demotion skips a tier that takes nothing new", [T(100, {"a": 100}), T(300, accepts=False), T(300)], 50, 0,
     frozenset(), [Demote("a", 0, 2), Place(0, 50)]),
    ("an object larger than the tier below is deleted", [T(500, {"a": 400}), T(300)], 200, 0,
     frozenset(), [Delete("a", 0), Place(0, 200)]),
    ("exactly full is fine", [T(100), T(300, {"a": 200})], 100, 1, frozenset(), [Place(1, 100)]),
    ("zero-byte object needs no room", [T(100, {"a": 100}), T(100, {"b": 100})], 0, 0, frozenset(),
     [Place(0, 0)]),
]


@pytest.mark.parametrize(("tiers", "size", "target", "pinned", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(tiers: list[T], size: int, target: int, pinned: frozenset[str], expected: list[Move]) -> None:
    assert plan(tiers, size, target, pinned) == expected


def test_replacement_frees_the_old_copy_and_never_evicts_it() -> None:
    tiers = [T(100), T(300, {"k": 100, "a": 100, "b": 100})]
    assert plan(tiers, 120, 1, key="k", current=1) == [Delete("a", 1), Place(1, 120)]


def test_key_being_placed_is_never_a_victim() -> None:
    tiers = [T(100, {"a": 100}), T(300, {"k": 100, "b": 100, "c": 100})]
    assert plan(tiers, 100, 0, key="k") == [Delete("b", 1), Demote("a", 0, 1), Place(0, 100)]


def test_everything_pinned_raises_insufficient_storage() -> None:
    with pytest.raises(InsufficientStorage, match="pinned"):
        plan([T(100), T(200, {"a": 100, "b": 100})], 50, 1, frozenset({"a", "b"}))


def test_larger_than_the_tier_raises_insufficient_storage() -> None:
    with pytest.raises(InsufficientStorage, match="larger than tier t1"):
        plan([T(100), T(200)], 201, 1)


def test_target_that_takes_nothing_raises() -> None:
    with pytest.raises(StorageError, match="takes no new objects"):
        plan([T(100, accepts=False), T(200)], 10, 0)


tier_strategy = st.builds(
    T,
    capacity=st.integers(1, 400),
    objects=st.dictionaries(st.sampled_from("abcdefghijklmnop"), st.integers(0, 150), max_size=6),
    accepts=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(tiers=st.lists(tier_strategy, min_size=1, max_size=3), size=st.integers(0, 300),
       target=st.integers(0, 2), pinned=st.frozensets(st.sampled_from("abcdefghijklmnop")))
def test_running_a_plan_never_exceeds_capacity(tiers: list[T], size: int, target: int,
                                               pinned: frozenset[str]) -> None:
    target %= len(tiers)
    tiers[target].accepts = True
    seen: set[str] = set()
    for t in tiers:  # keys are unique across tiers and each tier starts within capacity
        for k in [k for k in t.objects if k in seen]:
            del t.objects[k]
        while sum(t.objects.values()) > t.capacity:
            t.objects.popitem()
        seen |= t.objects.keys()
    try:
        moves = plan(tiers, size, target, pinned)
    except InsufficientStorage:
        return
    members = [dict(t.objects) for t in tiers]
    used = [sum(t.objects.values()) for t in tiers]
    for move in moves:
        if isinstance(move, Place):
            used[move.tier] += move.size
            assert used[move.tier] <= tiers[move.tier].capacity
            continue
        src = move.src if isinstance(move, Demote) else move.tier
        assert move.key not in pinned
        size_moved = members[src].pop(move.key)
        used[src] -= size_moved
        if isinstance(move, Demote):
            assert move.dst > move.src and tiers[move.dst].accepts
            members[move.dst][move.key] = size_moved
            used[move.dst] += size_moved
            assert used[move.dst] <= tiers[move.dst].capacity
    assert isinstance(moves[-1], Place) and moves[-1] == Place(target, size)


class TestPromotionCounter:
    def make(self, hits: int = 3, window: float = 10.0) -> tuple[PromotionCounter, FakeClock]:
        clock = FakeClock(0.0)
        return PromotionCounter(hits, window, clock), clock

    def test_n_hits_within_the_window_earn_promotion(self) -> None:
        counter, clock = self.make()
        assert not counter.hit("k")
        clock.now = 4.0
        assert not counter.hit("k")
        clock.now = 9.0
        assert counter.hit("k")

    def test_n_hits_spread_beyond_the_window_do_not(self) -> None:
        counter, clock = self.make()
        for t in (0.0, 6.0, 12.0, 18.0, 24.0):
            clock.now = t
            assert not counter.hit("k")

    def test_window_edge_is_inclusive(self) -> None:
        counter, clock = self.make(hits=2, window=10.0)
        counter.hit("k")
        clock.now = 10.0
        assert counter.hit("k")

    def test_a_batch_counts_all_its_hits(self) -> None:
        counter, _ = self.make(hits=5)
        assert not counter.hit("k", 4)
        assert counter.hit("k", 1)
        assert self.make(hits=5)[0].hit("k", 5)

    def test_keys_are_independent_and_zero_counts_nothing(self) -> None:
        counter, _ = self.make(hits=2)
        assert not counter.hit("a")
        assert not counter.hit("b")
        assert not counter.hit("a", 0)
        assert counter.hit("a")

    def test_forget_starts_over(self) -> None:
        counter, _ = self.make(hits=2)
        counter.hit("k")
        counter.forget("k")
        assert not counter.hit("k")

    def test_prune_drops_keys_idle_longer_than_the_window(self) -> None:
        counter, clock = self.make(hits=5, window=10.0)
        counter.hit("old")
        clock.now = 8.0
        counter.hit("new")
        clock.now = 15.0
        assert counter.prune() == 1
        assert len(counter) == 1

    def test_a_window_opens_at_a_keys_first_hit_and_a_hit_after_it_closes_opens_the_next(self) -> None:
        counter, clock = self.make(hits=3, window=10.0)
        for t in (0.0, 9.0):
            clock.now = t
            assert not counter.hit("k")
        clock.now = 11.0  # the window of 0.0 closed: 11.0 opens the next one, and 9.0 is not in it
        assert not counter.hit("k")
        clock.now = 19.0  # 9.0, 11.0 and 19.0 are within 10 s (a sliding window would promote), but
        assert not counter.hit("k")  # only two hits are in the window that opened at 11.0
        clock.now = 21.0
        assert counter.hit("k")

    def test_prune_keeps_a_key_whose_window_reopened(self) -> None:
        counter, clock = self.make(hits=5, window=10.0)
        counter.hit("a")
        clock.now = 1.0
        counter.hit("b")
        clock.now = 12.0
        counter.hit("a")  # a new window for a, after b's
        clock.now = 13.0
        assert counter.prune() == 1  # b only
        assert len(counter) == 1 and not counter.hit("a", 3) and counter.hit("a")

    def test_rejects_nonsense_settings(self) -> None:
        with pytest.raises(ValueError, match="hits >= 1"):
            PromotionCounter(0, 1.0, lambda: 0.0)
