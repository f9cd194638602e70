"""S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP '23) across the box's tiers.

Rules kept here:
- Per tier, a small FIFO (new objects; see small_shares for its size) and a main FIFO with a 2-bit
  frequency (0..3) per object: a read adds one; the main queue's hand reinserts an object with frequency
  f > 0 as f - 1 and evicts one at 0. An object read while in the small queue moves to main when it reaches
  the head; one never read leaves the cache (`worth_keeping` is False) and its key goes to the ghost.
- The ghost is shared by every tier of one box: keys that left recently, up to 1.3x the cache's bytes (keys
  only, so it can remember a return that comes after more than one cache's worth of misses: libCacheSim's
  0.9 measured lower on the replay, see README). A key arriving while it is in the ghost (read again after
  an eviction, or moved from another tier: a demotion or a promotion) goes straight to main.
  So a main victim of the SSD moves down to the HDD's main (exclusive hierarchy), and only small-queue
  one-timers are dropped. A move keeps the frequency the object earned (`Ghost.leaving`; resetting it
  measured 0.4 points lower at Zipf 1.0, 2%, where promotions are many); a key read again after it left
  starts at 0, as in the paper.
- Streams (oca/storage/streams.py, shared by the tiers like the ghost): every request that reaches the policy
  (a new key, a ghost return, a hit) is counted for its stream, the key's directory; an object of a hot stream
  (one whose recent requests often return) enters main on arrival and stays in main when it reaches the small
  queue's head unread. A session reads each segment once, so an object's own count cannot tell a segment of
  a title many sessions watch from one of a title watched once; its stream can (+0.8 to +2.2 points on a
  single-tier model of the replay, both alphas, 2-10%: README). A run of one-time keys never returns, so its
  stream stays cold and scan resistance is kept.
- Scan resistance: the small queue is evicted first whenever it holds more than its share (the paper's rule;
  counting the arriving object too measured 0.2 points worse), so a run of one-time keys cycles through the
  small queue and main gives up one object only when the small queue has dipped under its share.
- `victims` never removes a key: it does the moves an eviction would do anyway (small -> main, a main
  object's frequency decrement and reinsertion) and leaves the chosen victims at the heads, so a second call
  with nothing read in between gives the same answer unless the first one moved objects to main. When the
  head it would evict frees enough as it stands (a full cache taking one object), it answers without
  moving anything.
- Per object: one entry in one queue (key -> size) and one in the frequency map (key -> small int); keys are
  the catalog's own strings. No per-object Python objects.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from oca.storage.streams import Streams

MAX_FREQ = 3
SMALL_RATIO = 0.05  # of the cache: the paper's 10% measured 0.1-0.4 points lower on the replay (README)
GHOST_RATIO = 1.3  # of the cache's bytes, remembered as keys (libCacheSim's 0.9 measured lower: README)


def small_shares(capacities: Sequence[int], ratio: float = SMALL_RATIO) -> list[int | None]:
    """Per tier, fastest first, the small queue's bytes when the tiers are one cache: the whole cache's small
    queue sits on the fastest tier (where new objects land), up to 90% of it; slower tiers, fed by demotions
    into their main queues, keep the paper's ratio of their own bytes for objects that land there directly."""
    if not capacities:
        return []
    first = min(int(ratio * sum(capacities)), int(0.9 * capacities[0]))
    return [first, *[None for _ in capacities[1:]]]


def _never(key: str) -> bool:
    return False


class Ghost:
    """Keys that left the cache recently, oldest first, shared by the tiers of one box: as many as add up to
    `limit_bytes` of objects (libCacheSim sizes its ghost as 90% of the cache; counting keys instead would let a
    cache whose slow tier is still empty remember too little to ever fill it)."""

    def __init__(self, limit_bytes: int = 0) -> None:
        self._keys: OrderedDict[str, int] = OrderedDict()  # key -> size
        self._bytes = 0
        self.limit_bytes = limit_bytes  # 0: as many bytes as the tiers' policies hold
        # the last key removed from a tier and its frequency: a move between tiers (remove, then add at once)
        # keeps what the object earned; any add clears it, so a key coming back later starts over
        self.leaving: tuple[str, int] = ("", 0)

    def remember(self, key: str, size: int) -> None:
        """Note a key that left a tier. Not trimmed here: a move between tiers remembers then takes the key at
        once, and trimming in between would push an older key out for nothing."""
        old = self._keys.pop(key, None)
        if old is not None:
            self._bytes -= old
        self._keys[key] = size
        self._bytes += size

    def trim(self, held: int) -> None:
        limit = self.limit_bytes or held
        while self._bytes > limit and self._keys:
            self._bytes -= self._keys.popitem(last=False)[1]

    def take(self, key: str) -> bool:
        """True (and forgets it) if the key is remembered."""
        size = self._keys.pop(key, None)
        if size is None:
            return False
        self._bytes -= size
        return True

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


class S3FIFOPolicy:
    def __init__(self, ghost: Ghost | None = None, small_ratio: float = SMALL_RATIO,
                 small_bytes: int | None = None, streams: Streams | None = None) -> None:
        """`small_bytes`: the small queue's share in bytes (default: `small_ratio` of the bytes held).
        `streams`: the stream popularity shared by the tiers (None: objects are judged alone)."""
        self._ghost = ghost if ghost is not None else Ghost()
        self._streams = streams
        self._ratio = small_ratio
        self._small_share = small_bytes
        self._small: OrderedDict[str, int] = OrderedDict()  # key -> size, oldest first
        self._main: OrderedDict[str, int] = OrderedDict()
        self._freq: dict[str, int] = {}
        self._small_bytes = 0
        self._bytes = 0

    def add(self, key: str, size: int) -> None:
        if key in self._freq:
            queue = self._small if key in self._small else self._main
            old = queue[key]
            queue[key] = size
            self._bytes += size - old
            if queue is self._small:
                self._small_bytes += size - old
            self.touch(key)
            return
        ghost = self._ghost
        left, f = ghost.leaving
        ghost.leaving = ("", 0)
        returning = ghost.take(key)
        if left != key and self._streams is not None:
            self._streams.request(key, returning)
        if returning or (self._streams is not None and self._streams.hot(key)):
            self._main[key] = size
        else:
            self._small[key] = size
            self._small_bytes += size
            ghost.trim(self._bytes + size)
        self._freq[key] = f if left == key else 0
        self._bytes += size

    def touch(self, key: str) -> None:
        f = self._freq.get(key)
        if f is None:
            return
        if self._streams is not None:
            self._streams.request(key, True)
        if f < MAX_FREQ:
            self._freq[key] = f + 1

    def remove(self, key: str) -> None:
        f = self._freq.pop(key, None)
        if f is None:
            return
        self._ghost.leaving = (key, f)
        size = self._small.pop(key, None)
        if size is not None:
            self._small_bytes -= size
        else:
            size = self._main.pop(key)
        self._bytes -= size
        self._ghost.remember(key, size)

    def worth_keeping(self, key: str) -> bool:
        return key in self._main or self._freq.get(key, 0) > 0

    def admits(self, key: str) -> bool:
        return key in self._ghost

    def victims(self, need_bytes: int, is_pinned: Callable[[str], bool]) -> list[str]:
        chosen: list[str] = []
        if need_bytes <= 0:
            return chosen
        small, main, freq = self._small, self._main, self._freq
        hot = self._streams.hot if self._streams is not None else _never
        share = self._ratio * self._bytes if self._small_share is None else self._small_share
        # the common case of a full cache taking one object: the head to evict is evictable as it stands and
        # frees enough, so nothing moves (peeking at an OrderedDict's head costs no pop and reinsertion)
        queue = small if small and (not main or self._small_bytes > share) else main
        if queue:
            key = next(iter(queue))
            size = queue[key]
            if size >= need_bytes and freq[key] == 0 and not is_pinned(key) and (queue is main or not hot(key)):
                return [key]
        held_small: list[tuple[str, int]] = []  # chosen, popped off the heads; put back at the end
        held_main: list[tuple[str, int]] = []
        small_left = self._small_bytes
        freed = stalls = 0
        main_stuck = False
        while freed < need_bytes:
            if small and (main_stuck or not main or small_left > share):
                key, size = small.popitem(last=False)
                small_left -= size
                pinned = is_pinned(key)
                # read while small, of a hot stream, or not ours to evict: main keeps it
                if pinned or freq[key] > 0 or hot(key):
                    self._small_bytes -= size
                    if not pinned:
                        freq[key] = 0
                    main[key] = size
                    continue
                held_small.append((key, size))
            elif main and not main_stuck:
                key, size = main.popitem(last=False)
                if is_pinned(key):
                    main[key] = size
                    stalls += 1
                    main_stuck = stalls > len(main)
                    continue
                stalls = 0
                f = freq[key]
                if f > 0:
                    freq[key] = f - 1
                    main[key] = size
                    continue
                held_main.append((key, size))
            else:
                break
            chosen.append(key)
            freed += size
        for queue, held in ((small, held_small), (main, held_main)):
            for key, size in reversed(held):
                queue[key] = size
                queue.move_to_end(key, last=False)
        return chosen

    def __len__(self) -> int:
        return len(self._freq)
