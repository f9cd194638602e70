"""Which objects leave a tier, when an object has earned promotion, and how to make room: pure code.

Rules kept here:
- No I/O and no global clock: time comes from an injected callable, so tests never sleep.
- A policy only orders the keys of one tier. It never decides about pinning (the caller's `is_pinned`
  does) and never drops a key on its own; the store tells it about every add, hit and removal.
- `plan_placement` returns moves that, run in order, never take any tier over its capacity, never move a
  pinned object or the object being placed, and send an evicted object that its policy finds worth keeping
  to the next tier below that takes new objects (deleting it when none can; one not worth keeping only
  moves into free room). It raises InsufficientStorage instead of a partial plan.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from oca.errors import InsufficientStorage, StorageError
from oca.storage.s3fifo import GHOST_RATIO, Book, Ghost, S3FIFOPolicy, small_shares
from oca.storage.slots import KeySlots
from oca.storage.streams import Streams


class EvictionPolicy(Protocol):
    """The order in which one tier gives up its objects. One instance per tier."""

    def add(self, key: str, size: int) -> None:
        """A key arrived on the tier (adding a present key updates its size and counts as an access)."""

    def touch(self, key: str) -> None:
        """The key was read. Unknown keys are ignored (hits may be reported after a removal)."""

    def remove(self, key: str) -> None:
        """The key left the tier. Unknown keys are ignored."""

    def victims(self, need_bytes: int, is_pinned: Callable[[str], bool]) -> list[str]:
        """Keys to evict first, in eviction order, skipping pinned ones: the shortest such run whose sizes
        add up to at least `need_bytes`, or every unpinned key if they do not. Keeps every key: it may only
        do the reordering its eviction would do anyway (a CLOCK hand's pass), so asking twice in a row gives
        the same answer."""
        ...

    def worth_keeping(self, key: str) -> bool:
        """Whether a victim should move down to a slower tier rather than leave the cache."""
        ...

    def admits(self, key: str) -> bool:
        """Whether a new object earned a place (a tier with `admission: returning` asks this)."""
        ...

    def __len__(self) -> int: ...


class LRUPolicy:
    """Least recently used first. Not scan-resistant: a player reading segments in order flushes it."""

    def __init__(self) -> None:
        self._sizes: OrderedDict[str, int] = OrderedDict()  # oldest access first

    def add(self, key: str, size: int) -> None:
        self._sizes[key] = size
        self._sizes.move_to_end(key)

    def touch(self, key: str) -> None:
        if key in self._sizes:
            self._sizes.move_to_end(key)

    def remove(self, key: str) -> None:
        self._sizes.pop(key, None)

    def victims(self, need_bytes: int, is_pinned: Callable[[str], bool]) -> list[str]:
        chosen: list[str] = []
        freed = 0
        if need_bytes <= 0:
            return chosen
        for key, size in self._sizes.items():
            if is_pinned(key):
                continue
            chosen.append(key)
            freed += size
            if freed >= need_bytes:
                break
        return chosen

    def worth_keeping(self, key: str) -> bool:
        return True

    def admits(self, key: str) -> bool:
        return False  # LRU remembers nothing about keys it no longer holds: `returning` tiers take hot ones only

    def __len__(self) -> int:
        return len(self._sizes)


class PromotionCounter:
    """Says when a key has had `hits` hits within `window` seconds of the first of them.

    A key's window opens at its first hit and closes `window` seconds later; a hit after that opens a new one.
    So per key it keeps one (start, count) pair in one dict: one lookup per hit, at the price of missing a
    run of hits that straddles two windows (a sliding window would keep every report: a queue per key).
    """

    def __init__(self, hits: int, window: float, clock: Callable[[], float]) -> None:
        if hits < 1 or window <= 0:
            raise ValueError(f"promotion needs hits >= 1 and window > 0, got {hits} and {window}")
        self.hits, self.window, self._clock = hits, window, clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (start, hits since); oldest start first

    def hit(self, key: str, count: int = 1, now: float | None = None) -> bool:
        """Record `count` hits at `now` (the clock's time if not given); True if the key has now earned
        promotion."""
        if count <= 0:
            return False
        if now is None:
            now = self._clock()
        windows = self._windows
        open_ = windows.get(key)
        if open_ is not None and now - open_[0] <= self.window:
            total = open_[1] + count
            windows[key] = (open_[0], total)
        else:
            if open_ is not None:
                del windows[key]  # re-inserted at the end: starts stay in order, so prune stops early
            total = count
            windows[key] = (now, total)
        return total >= self.hits

    def forget(self, key: str) -> None:
        self._windows.pop(key, None)

    def prune(self) -> int:
        """Drop keys whose window has closed (their next hit opens a new one anyway); returns how many."""
        now = self._clock()
        stale = []
        for key, (since, _) in self._windows.items():  # oldest start first: walks only the stale keys
            if now - since <= self.window:
                break
            stale.append(key)
        for key in stale:
            del self._windows[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._windows)


class TierView(Protocol):
    """What the planner reads of a tier (index 0 is the fastest): a TierSpace, or the catalog's own Tier, so a
    plan per miss makes no copy of the tiers."""

    @property
    def name(self) -> str: ...

    @property
    def capacity(self) -> int: ...

    @property
    def used(self) -> int: ...

    @property
    def accepts(self) -> bool: ...

    @property
    def policy(self) -> EvictionPolicy: ...


@dataclass(slots=True)  # not frozen: a frozen init sets each field through object.__setattr__, a plan makes many
class TierSpace:
    """What the planner needs to know about one tier (index 0 is the fastest)."""

    name: str
    capacity: int
    used: int
    accepts: bool  # takes new objects (state UP)
    policy: EvictionPolicy


@dataclass(slots=True)
class Demote:
    key: str
    src: int
    dst: int


@dataclass(slots=True)
class Delete:
    key: str
    tier: int


@dataclass(slots=True)
class Place:
    tier: int
    size: int


Move = Demote | Delete | Place


class _Plan:
    """Mutable scratch state of one planning run."""

    def __init__(self, tiers: Sequence[TierView], key: str | None, size_of: Callable[[str], int],
                 is_pinned: Callable[[str], bool]) -> None:
        self.tiers, self.key, self.size_of, self.is_pinned = tiers, key, size_of, is_pinned
        self.used = [t.used for t in tiers]
        # victims chosen so far, of every tier: a key is held by one tier's policy, so one set serves them all
        self.taken: set[str] = set()
        self.moves: list[Move] = []

    def blocked(self, k: str) -> bool:
        return k == self.key or k in self.taken or self.is_pinned(k)

    def make_room(self, i: int, need: int) -> bool:
        """Plan freeing space on tier i until `need` bytes fit. False, with nothing planned, if it cannot:
        the check comes before any change, and once it passes every victim has a home (or is deleted)."""
        tier = self.tiers[i]
        short = need - (tier.capacity - self.used[i])
        if short <= 0:
            return True
        victims = tier.policy.victims(short, self.blocked)
        size_of = self.size_of
        if len(victims) == 1:  # a full tier taking one object: its policy's head frees enough
            size = size_of(victims[0])
            if size < short:
                return False
            self.taken.add(victims[0])
            self.used[i] -= size
            self.moves.append(self._evict(victims[0], i, size))
            return True
        sizes = [size_of(v) for v in victims]
        if sum(sizes) < short:
            return False
        for victim, size in zip(victims, sizes, strict=True):
            self.taken.add(victim)
            self.used[i] -= size
            self.moves.append(self._evict(victim, i, size))
        return True

    def _evict(self, key: str, i: int, size: int) -> Move:
        # an object its policy does not find worth keeping still moves down into free room: a byte left
        # empty on a slower tier is a byte of cache wasted (it never pushes anything out there)
        keep = self.tiers[i].policy.worth_keeping(key)
        for j in range(i + 1, len(self.tiers)):
            lower = self.tiers[j]
            if not lower.accepts or lower.capacity < size:
                continue
            if not keep:
                if lower.capacity - self.used[j] >= size:
                    self.used[j] += size
                    return Demote(key, i, j)
                continue
            if self.make_room(j, size):
                self.used[j] += size
                return Demote(key, i, j)
        return Delete(key, i)


def plan_placement(tiers: Sequence[TierView], size: int, target: int, *,
                   size_of: Callable[[str], int], is_pinned: Callable[[str], bool],
                   key: str | None = None, current: int | None = None) -> list[Move]:
    """The moves that make room for an object of `size` bytes on tier `target`, ending with Place.

    `key` is the object being placed (never chosen as a victim); `current` is the tier holding a copy of it
    that goes away before the placement (a replacement or a promotion), whose bytes count as free.
    """
    if not 0 <= target < len(tiers):
        raise StorageError(f"no tier number {target} (have {len(tiers)})")
    tier = tiers[target]
    if not tier.accepts:
        raise StorageError(f"tier {tier.name} takes no new objects")
    if size > tier.capacity:
        raise InsufficientStorage(
            f"object of {size} bytes is larger than tier {tier.name} ({tier.capacity} bytes)")
    freed = size_of(key) if key is not None and current == target else 0
    if tier.used - freed + size <= tier.capacity:  # room already: most puts while a cache warms up
        return [Place(target, size)]
    plan = _Plan(tiers, key, size_of, is_pinned)
    if key is not None and current is not None:
        plan.used[current] -= size_of(key)
    if not plan.make_room(target, size):
        raise InsufficientStorage(
            f"tier {tier.name} cannot free {size} bytes: the rest of its "
            f"{tier.capacity} bytes is pinned")
    plan.moves.append(Place(target, size))
    return plan.moves


POLICY_NAMES = ("s3fifo", "lru")  # storage.policy; the first is the default


def demand_reserves(name: str, capacities: Sequence[int]) -> list[int]:
    """Per tier, fastest first, the bytes a policy needs free of pinned objects for the objects clients bring:
    S3-FIFO's small queue (where new objects prove themselves; a tier pinned full by a fill plan would let
    them go again before a second read could reach them), nothing for LRU. Store.fill_target keeps a hot
    pre-positioned file off a tier whose pins would eat into it."""
    if name == "s3fifo":
        return [share or 0 for share in small_shares(capacities)]
    return [0 for _ in capacities]


def policy_factory(name: str, capacities: Sequence[int] = (),
                   slots: KeySlots | None = None) -> Callable[[], EvictionPolicy]:
    """Makes one policy per tier, called once per tier in tier order (fastest first); the tiers of one box
    share what the policy remembers across tiers. `capacities`: the tiers' bytes, fastest first. `slots`: the
    catalog's record numbers (the catalog that will hold the policies: Catalog(..., slots=slots)), so the
    policies keep their per-object state in arrays by those numbers; without it each numbers its own keys."""
    if name == "lru":
        return LRUPolicy
    if name == "s3fifo":
        ghost = Ghost(int(GHOST_RATIO * sum(capacities)))
        shares = iter(small_shares(capacities))
        book = Book(slots) if slots is not None else None  # one for every tier: an object is on one at a time
        streams = Streams()  # shared like the ghost: a stream's requests reach whichever tier holds its objects
        return lambda: S3FIFOPolicy(ghost, small_bytes=next(shares, None), book=book, streams=streams)
    raise ValueError(f"no eviction policy named {name!r} (have {', '.join(POLICY_NAMES)})")
