"""The contract every EvictionPolicy keeps. Add a new policy class to POLICIES and it runs all of these.

Only behaviour common to every policy is asserted here; order-specific behaviour (LRU) is tested below.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from oca.storage.planned import PlannedPolicy
from oca.storage.policy import EvictionPolicy, LRUPolicy, policy_factory
from oca.storage.s3fifo import Ghost, S3FIFOPolicy

POLICIES: list[Callable[[], EvictionPolicy]] = [
    LRUPolicy, S3FIFOPolicy, policy_factory("s3fifo", [1000, 9000]),
    # fill-aware: the wrapper with no plan, and with a plan naming some of the keys these tests use
    lambda: Sized(S3FIFOPolicy()), lambda: Sized(LRUPolicy(), {"a": 1.0, "k1": 2.0, "k3": 0.5})]


class Sized(PlannedPolicy):
    """The fill-aware wrapper with the sizes a store's catalog would give it (the store records an object's size
    before its policy hears of it)."""

    def __init__(self, inner: EvictionPolicy, scores: dict[str, float] | None = None) -> None:
        self.sizes: dict[str, int] = {}
        super().__init__(inner, self.sizes.__getitem__, scores)

    def add(self, key: str, size: int) -> None:
        self.sizes[key] = size
        super().add(key, size)


def nothing_pinned(key: str) -> bool:
    return False


@pytest.fixture(params=POLICIES, ids=lambda p: getattr(p, "__name__", repr(p)))
def policy(request: pytest.FixtureRequest) -> EvictionPolicy:
    made: EvictionPolicy = request.param()
    return made


def filled(policy: EvictionPolicy, sizes: dict[str, int]) -> EvictionPolicy:
    for key, size in sizes.items():
        policy.add(key, size)
    return policy


class TestContract:
    def test_starts_empty(self, policy: EvictionPolicy) -> None:
        assert len(policy) == 0
        assert policy.victims(100, nothing_pinned) == []

    def test_len_counts_distinct_keys(self, policy: EvictionPolicy) -> None:
        filled(policy, {"a": 1, "b": 2})
        policy.add("a", 5)
        assert len(policy) == 2
        policy.remove("a")
        assert len(policy) == 1

    def test_unknown_keys_are_ignored(self, policy: EvictionPolicy) -> None:
        filled(policy, {"a": 1})
        policy.touch("zz")
        policy.remove("zz")
        assert len(policy) == 1

    def test_need_zero_or_less_evicts_nothing(self, policy: EvictionPolicy) -> None:
        filled(policy, {"a": 1, "b": 2})
        assert policy.victims(0, nothing_pinned) == []
        assert policy.victims(-5, nothing_pinned) == []

    def test_victims_free_enough_and_no_more_than_needed(self, policy: EvictionPolicy) -> None:
        sizes = {f"k{i}": 10 + i for i in range(20)}
        filled(policy, sizes)
        for need in (1, 10, 11, 25, 100, 200):
            victims = policy.victims(need, nothing_pinned)
            freed = [sizes[v] for v in victims]
            assert sum(freed) >= need
            assert sum(freed[:-1]) < need  # the shortest run: without the last one it falls short

    def test_victims_are_distinct_members(self, policy: EvictionPolicy) -> None:
        sizes = {f"k{i}": 7 for i in range(30)}
        filled(policy, sizes)
        victims = policy.victims(10_000, nothing_pinned)
        assert len(victims) == len(set(victims)) == 30
        assert set(victims) == set(sizes)

    def test_pinned_are_never_victims(self, policy: EvictionPolicy) -> None:
        sizes = {f"k{i}": 5 for i in range(10)}
        filled(policy, sizes)
        pinned = {"k0", "k3", "k9"}
        victims = policy.victims(10_000, pinned.__contains__)
        assert set(victims) == set(sizes) - pinned

    def test_not_enough_unpinned_returns_every_unpinned(self, policy: EvictionPolicy) -> None:
        filled(policy, {"a": 5, "b": 5, "c": 5})
        victims = policy.victims(100, lambda k: k == "b")
        assert sorted(victims) == ["a", "c"]

    def test_victims_does_not_change_the_policy(self, policy: EvictionPolicy) -> None:
        filled(policy, {f"k{i}": 3 for i in range(10)})
        first = policy.victims(10, nothing_pinned)
        assert policy.victims(10, nothing_pinned) == first
        assert len(policy) == 10

    def test_removed_keys_are_never_victims(self, policy: EvictionPolicy) -> None:
        filled(policy, {f"k{i}": 3 for i in range(10)})
        for i in range(0, 10, 2):
            policy.remove(f"k{i}")
        assert set(policy.victims(10_000, nothing_pinned)) == {f"k{i}" for i in range(1, 10, 2)}

    def test_resized_key_counts_its_new_size(self, policy: EvictionPolicy) -> None:
        filled(policy, {"a": 1})
        policy.add("a", 50)
        assert policy.victims(40, nothing_pinned) == ["a"]

    def test_random_operations_keep_the_contract(self, policy: EvictionPolicy) -> None:
        rng = random.Random(7)
        sizes: dict[str, int] = {}
        for _ in range(2000):
            key = f"k{rng.randrange(50)}"
            op = rng.random()
            if op < 0.4:
                sizes[key] = rng.randrange(1, 100)
                policy.add(key, sizes[key])
            elif op < 0.7:
                policy.touch(key)
            elif op < 0.8:
                sizes.pop(key, None)
                policy.remove(key)
            else:
                pinned = {k for k in sizes if rng.random() < 0.2}
                need = rng.randrange(0, 500)
                victims = policy.victims(need, pinned.__contains__)
                assert set(victims) <= set(sizes) - pinned
                assert len(victims) == len(set(victims))
                if need > 0 and sum(sizes[v] for v in victims) < need:
                    assert set(victims) == set(sizes) - pinned
            assert len(policy) == len(sizes)


class TestLRUOrder:
    def test_oldest_first(self) -> None:
        lru = filled(LRUPolicy(), {"a": 1, "b": 1, "c": 1})
        assert lru.victims(3, nothing_pinned) == ["a", "b", "c"]

    def test_touch_makes_most_recent(self) -> None:
        lru = filled(LRUPolicy(), {"a": 1, "b": 1, "c": 1})
        lru.touch("a")
        assert lru.victims(3, nothing_pinned) == ["b", "c", "a"]

    def test_re_add_makes_most_recent(self) -> None:
        lru = filled(LRUPolicy(), {"a": 1, "b": 1})
        lru.add("a", 1)
        assert lru.victims(1, nothing_pinned) == ["b"]

    def test_skips_pinned_keeping_order(self) -> None:
        lru = filled(LRUPolicy(), {"a": 1, "b": 1, "c": 1, "d": 1})
        assert lru.victims(2, {"a", "c"}.__contains__) == ["b", "d"]


class TestS3FIFO:
    def test_one_time_keys_leave_first_and_are_not_worth_keeping(self) -> None:
        p = filled(S3FIFOPolicy(), {f"k{i}": 1 for i in range(10)})
        p.touch("k0")
        victims = p.victims(2, nothing_pinned)
        assert victims == ["k1", "k2"]  # k0 was read while in the small queue: it moved to main
        assert not p.worth_keeping("k1") and p.worth_keeping("k0")

    def test_a_returning_key_goes_to_main_and_is_admitted(self) -> None:
        ghost = Ghost(100)
        p = filled(S3FIFOPolicy(ghost), {"a": 1, "b": 1})
        assert not p.admits("a")
        p.remove("a")
        assert p.admits("a")
        p.add("a", 1)
        assert p.worth_keeping("a") and not p.admits("a")

    def test_a_key_moved_between_tiers_keeps_its_place_in_main(self) -> None:
        ghost = Ghost(100)
        ssd, hdd = S3FIFOPolicy(ghost), S3FIFOPolicy(ghost)
        ssd.add("k", 5)
        ssd.remove("k")  # a demotion: off one tier...
        hdd.add("k", 5)  # ...onto the next
        assert hdd.worth_keeping("k")

    def test_a_move_between_tiers_leaves_the_ghost_as_it_was(self) -> None:
        """A demotion (a remove and an add of the same key at once: one per miss on a full box) puts nothing
        in the ghost's ring or table, so it costs no insert and no delete there; the key a removal leaves
        behind is still remembered for every other use."""
        ghost = Ghost(1000)
        ssd, hdd = S3FIFOPolicy(ghost), S3FIFOPolicy(ghost)
        for k in ("a", "b"):
            ssd.add(k, 1)
        ring, moved = len(ghost._hashes), ghost.moved
        ssd.remove("a")
        hdd.add("a", 1)
        assert (len(ghost._hashes), len(ghost), ghost.moved) == (ring, 0, moved)
        assert hdd.worth_keeping("a") and not ghost.take("a")
        ssd.remove("b")  # left, not moved: remembered
        assert ghost.take("b") and not ghost.take("b")
        ssd.add("c", 1)
        ssd.remove("c")
        assert "c" in ghost and len(ghost) == 1

    def test_main_reinserts_read_objects_until_their_frequency_is_spent(self) -> None:
        ghost = Ghost(1000)
        p = S3FIFOPolicy(ghost)
        for k in ("a", "b", "c"):
            p.add(k, 1)
            p.remove(k)
            p.add(k, 1)  # returning: straight to main
        for _ in range(3):
            p.touch("a")
        assert p.victims(2, nothing_pinned) == ["b", "c"]

    def test_a_key_moved_between_tiers_keeps_its_frequency(self) -> None:
        ghost = Ghost(1000)
        ssd, hdd = S3FIFOPolicy(ghost), S3FIFOPolicy(ghost)
        ssd.add("hot", 1)
        ssd.touch("hot")
        ssd.touch("hot")
        ssd.remove("hot")  # a promotion or demotion: off one tier and at once onto the other
        hdd.add("hot", 1)  # first in the HDD's main
        for k in ("a", "b"):  # then two objects never read
            hdd.add(k, 1)
            hdd.remove(k)
            hdd.add(k, 1)
        # read twice before the move: its main hand spares it, so the unread ones go first
        assert hdd.victims(2, nothing_pinned) == ["a", "b"]

    @pytest.mark.parametrize("read", [False, True])
    def test_a_one_timer_moved_down_into_free_room_is_the_next_to_go_unless_read(self, read: bool) -> None:
        ghost = Ghost(1000)
        ssd, hdd = S3FIFOPolicy(ghost), S3FIFOPolicy(ghost)
        for k in ("a", "b"):  # in the SSD's main (returning), then demoted: the HDD's main, in that order
            ssd.add(k, 1)
            ssd.remove(k)
            ssd.add(k, 1)
            ssd.remove(k)
            hdd.add(k, 1)
        ssd.add("x", 1)  # a one-timer: never read in the SSD's small queue...
        assert not ssd.worth_keeping("x")
        ssd.remove("x")
        hdd.add("x", 1)  # ...moved into the HDD's free room: the head of its main, not the tail
        if read:
            hdd.touch("x")
        # unread, it goes before the objects that earned their place; read, the hand spares it like any other
        assert hdd.victims(1, nothing_pinned) == (["a"] if read else ["x"])
        assert hdd.victims(3, nothing_pinned) == (["a", "b", "x"] if read else ["x", "a", "b"])

    def test_one_timers_moved_down_leave_oldest_first_and_before_what_earned_its_place(self) -> None:
        ghost = Ghost(1000)
        ssd, hdd = S3FIFOPolicy(ghost), S3FIFOPolicy(ghost)
        ssd.add("a", 1)  # returning: main; demoted, it is no one-timer
        ssd.remove("a")
        ssd.add("a", 1)
        ssd.remove("a")
        hdd.add("a", 1)
        for k in ("x", "y", "z"):  # one-timers moved down one after the other
            ssd.add(k, 1)
            ssd.remove(k)
            hdd.add(k, 1)
        # oldest first: pushed at the head one by one they would leave newest first, and a one-timer that
        # came early would stay while later ones churn past it
        assert hdd.victims(1, nothing_pinned) == ["x"]
        hdd.remove("x")
        ssd.add("w", 1)
        ssd.remove("w")
        hdd.add("w", 1)  # behind the one-timers still there, before "a"
        assert hdd.victims(4, nothing_pinned) == ["y", "z", "w", "a"]

    def test_a_key_that_comes_back_after_other_arrivals_starts_over(self) -> None:
        ghost = Ghost(1000)
        p = S3FIFOPolicy(ghost)
        for k in ("a", "b"):
            p.add(k, 1)
            p.remove(k)
            p.add(k, 1)
        p.add("c", 1)
        p.touch("c")
        p.remove("c")  # evicted...
        p.add("x", 1)  # ...then something else arrives before it is read again
        p.add("c", 1)  # returning from the ghost: main, but with nothing earned
        assert p.victims(3, lambda k: k == "x") == ["a", "b", "c"]
