"""Reference policies for the replay: LRU, S3-FIFO, SIEVE and Belady, each with object sizes, over interned keys.

Rules kept here:
- These are small, separate implementations for comparison only; the box's own policy is never modelled here
  (replay.py drives the real storage code).
- A policy is admitted-or-not per request: every miss is admitted if it fits the cache at all (Belady may
  bypass an object whose next use is further away than everything it would evict).
- Each function returns (hit bytes, hit requests) counted from request `start` on; requests before it only
  warm the cache.
- S3-FIFO follows the SOSP '23 paper: a small FIFO of 10% of the bytes, a main FIFO reinserting objects with
  a 2-bit frequency (capped at 3), a ghost FIFO remembering as many keys as the main queue holds; an object
  read while in the small queue moves to main on its way out, a ghost hit is inserted into main.
- SIEVE follows the NSDI '24 paper: one FIFO with a visited bit, a hand walking from the oldest towards the
  newest that clears visited bits and evicts the first unvisited object, staying where it evicted.
"""

from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Trace:
    """A trace held compactly: per request the key's number and the time; per key its text and size."""

    ids: array  # type: ignore[type-arg]
    times: array  # type: ignore[type-arg]
    keys: list[str]
    sizes: array  # type: ignore[type-arg]

    @classmethod
    def load(cls, rows: Iterable[tuple[float, str, int]]) -> Trace:
        ids, times, sizes = array("l"), array("d"), array("q")
        keys: list[str] = []
        number: dict[str, int] = {}
        for now, key, size in rows:
            n = number.get(key)
            if n is None:
                n = number[key] = len(keys)
                keys.append(key)
                sizes.append(size)
            ids.append(n)
            times.append(now)
        return cls(ids, times, keys, sizes)

    def __len__(self) -> int:
        return len(self.ids)

    def first_at(self, when: float) -> int:
        """Index of the first request at or after `when`."""
        lo, hi = 0, len(self.times)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.times[mid] < when:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def unique_bytes(self, start: int = 0) -> int:
        seen: set[int] = set()
        total = 0
        for i in range(start, len(self.ids)):
            n = self.ids[i]
            if n not in seen:
                seen.add(n)
                total += self.sizes[n]
        return total


Result = tuple[int, int]


def lru(trace: Trace, capacity: int, start: int = 0) -> Result:
    ids, sizes = trace.ids, trace.sizes
    held: OrderedDict[int, None] = OrderedDict()
    used = hit_bytes = hits = 0
    for i in range(len(ids)):
        n = ids[i]
        if n in held:
            held.move_to_end(n)
            if i >= start:
                hit_bytes += sizes[n]
                hits += 1
            continue
        size = sizes[n]
        if size > capacity:
            continue
        while used + size > capacity:
            used -= sizes[held.popitem(last=False)[0]]
        held[n] = None
        used += size
    return hit_bytes, hits


def s3fifo(trace: Trace, capacity: int, start: int = 0, small_ratio: float = 0.1) -> Result:
    ids, sizes = trace.ids, trace.sizes
    small: OrderedDict[int, None] = OrderedDict()
    main: OrderedDict[int, None] = OrderedDict()
    ghost: OrderedDict[int, None] = OrderedDict()
    freq: dict[int, int] = {}
    small_cap = int(capacity * small_ratio)
    used_small = used_main = hit_bytes = hits = 0

    def evict() -> None:
        nonlocal used_small, used_main
        while True:
            if small and (used_small > small_cap or not main):
                n = next(iter(small))
                del small[n]
                used_small -= sizes[n]
                if freq.pop(n) >= 1:
                    main[n] = None
                    freq[n] = 0
                    used_main += sizes[n]
                    continue
                ghost[n] = None
                while len(ghost) > max(len(main), 1):
                    ghost.popitem(last=False)
                return
            n = next(iter(main))
            if freq[n] > 0:
                freq[n] -= 1
                main.move_to_end(n)
                continue
            del main[n]
            del freq[n]
            used_main -= sizes[n]
            return

    for i in range(len(ids)):
        n = ids[i]
        f = freq.get(n)
        if f is not None:
            if f < 3:
                freq[n] = f + 1
            if i >= start:
                hit_bytes += sizes[n]
                hits += 1
            continue
        size = sizes[n]
        if size > capacity:
            continue
        while used_small + used_main + size > capacity:
            evict()
        freq[n] = 0
        if n in ghost:
            del ghost[n]
            main[n] = None
            used_main += size
        else:
            small[n] = None
            used_small += size
    return hit_bytes, hits


def sieve(trace: Trace, capacity: int, start: int = 0) -> Result:
    ids, sizes = trace.ids, trace.sizes
    # a doubly linked list over key numbers: head = newest, tail = oldest; -1 ends it
    newer: dict[int, int] = {}
    older: dict[int, int] = {}
    visited: dict[int, bool] = {}
    head = tail = hand = -1
    used = hit_bytes = hits = 0

    def unlink(n: int) -> None:
        nonlocal head, tail
        o, w = older.pop(n), newer.pop(n)
        if w != -1:
            older[w] = o
        else:
            head = o
        if o != -1:
            newer[o] = w
        else:
            tail = w

    for i in range(len(ids)):
        n = ids[i]
        if n in visited:
            visited[n] = True
            if i >= start:
                hit_bytes += sizes[n]
                hits += 1
            continue
        size = sizes[n]
        if size > capacity:
            continue
        while used + size > capacity:
            p = hand if hand != -1 else tail
            while visited[p]:
                visited[p] = False
                p = newer[p] if newer[p] != -1 else tail
            hand = newer[p]
            unlink(p)
            del visited[p]
            used -= sizes[p]
        visited[n] = False
        older[n], newer[n] = head, -1
        if head != -1:
            newer[head] = n
        head = n
        if tail == -1:
            tail = n
        used += size
    return hit_bytes, hits


def belady(trace: Trace, capacity: int, start: int = 0) -> Result:
    """Evict the object used again furthest in the future; an object never used again is not admitted."""
    ids, sizes = trace.ids, trace.sizes
    never = len(ids)
    next_use = array("l", [never]) * len(ids)
    last: dict[int, int] = {}
    for i in range(len(ids) - 1, -1, -1):
        n = ids[i]
        next_use[i] = last.get(n, never)
        last[n] = i
    held: dict[int, int] = {}  # key -> its next use (the heap may hold stale entries for it)
    heap: list[tuple[int, int]] = []  # (-next use, key)
    used = hit_bytes = hits = 0
    for i in range(len(ids)):
        n = ids[i]
        nxt = next_use[i]
        if n in held:
            if i >= start:
                hit_bytes += sizes[n]
                hits += 1
            if nxt == never:
                del held[n]
                used -= sizes[n]
            else:
                held[n] = nxt
                heapq.heappush(heap, (-nxt, n))
            continue
        size = sizes[n]
        if nxt == never or size > capacity:
            continue
        held[n] = nxt
        used += size
        heapq.heappush(heap, (-nxt, n))
        while used > capacity:
            far, victim = heapq.heappop(heap)
            if held.get(victim) != -far:
                continue
            del held[victim]
            used -= sizes[victim]
    return hit_bytes, hits


POLICIES: dict[str, Callable[[Trace, int, int], Result]] = {
    "lru": lru, "s3fifo": s3fifo, "sieve": sieve, "belady": belady}
