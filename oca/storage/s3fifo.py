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
- A one-timer (a small-queue object never read) moved down into a slower tier's free room enters that tier's
  main at the head, not the tail: it is the first to go when the tier next needs room, unless it is read
  before (then the hand reinserts it like any read object). Free room on the HDD comes back after every
  eviction that frees more than it needed; at the tail, the one-timers filling it took a full pass of the
  HDD's main each and pushed out main objects that had earned their place (a third of what entered the HDD's
  main on the replay at Zipf 1.0, 2%; README). At the head they cost nothing a single cache would keep.
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
- Per object (see Book): 18 bytes of arrays indexed by the catalog's record number (slots.KeySlots) and
  shared by the tiers of one box: the queues are doubly linked lists threaded through two arrays of
  record numbers (FIFO order, removal from the middle in O(1), as the OrderedDicts they replace), beside the
  size, the queue the object is in and its frequency. No dict keyed by the key's string and no Python object
  per object; a policy used on its own numbers its keys itself.
- The ghost holds 64-bit hashes of keys (Python's str hash, computed once per string and kept in it), not
  the keys: a key is taken for a remembered one only if their hashes are equal, a chance of n / 2^64 per
  lookup with n keys remembered (5 x 10^-13 at 10^7); otherwise it answers as a set of the keys would. The
  hashes sit in a ring in the order remembered, found through an open-addressing table (hashtable.py) that
  grows without a pause.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

from oca.storage.hashtable import OpenTable
from oca.storage.slots import KeySlots
from oca.storage.streams import Streams

MAX_FREQ = 3
SMALL_RATIO = 0.05  # of the cache: the paper's 10% measured 0.1-0.4 points lower on the replay (README)
GHOST_RATIO = 1.3  # of the cache's bytes, remembered as keys (libCacheSim's 0.9 measured lower: README)
_NONE = -1  # no record: the end of a queue


def _never(key: str) -> bool:
    return False


def small_shares(capacities: Sequence[int], ratio: float = SMALL_RATIO) -> list[int | None]:
    """Per tier, fastest first, the small queue's bytes when the tiers are one cache: the whole cache's small
    queue sits on the fastest tier (where new objects land), up to 90% of it; slower tiers, fed by demotions
    into their main queues, keep the paper's ratio of their own bytes for objects that land there directly."""
    if not capacities:
        return []
    first = min(int(ratio * sum(capacities)), int(0.9 * capacities[0]))
    return [first, *[None for _ in capacities[1:]]]


class Ghost(OpenTable):
    """Keys that left the cache recently, oldest first, shared by the tiers of one box: as many as add up to
    `limit_bytes` of objects (libCacheSim sizes its ghost as 90% of the cache; counting keys instead would let a
    cache whose slow tier is still empty remember too little to ever fill it).

    Held as the keys' hashes in a ring of two arrays (hash, size) in the order remembered, and an
    open-addressing table (hashtable.py) of places in the ring over those hashes; a key taken or remembered
    again leaves a dead place (size -1) that the trimming skips. Per key: 16 bytes of ring and the table's
    8-byte buckets at a load of 0.3-0.6 (~30 bytes) instead of a dict entry and an int (~136), and long ago
    the key's string, an OrderedDict node and a size (~260). The table grows without a pause (see
    hashtable.py)."""

    def __init__(self, limit_bytes: int = 0) -> None:
        # the table holds places in the ring: a place is the index in the arrays plus self._base (the places
        # dropped off their front), so places only grow: 8-byte buckets
        super().__init__("q", array("q"))  # self._hashes: the ring's hashes
        self._sizes = array("q")  # -1: taken or remembered again since
        self._head = 0  # the first index that may be alive
        self._bytes = 0
        self.limit_bytes = limit_bytes  # 0: as many bytes as the tiers' policies hold
        # the last key removed from a tier, its frequency and, for a one-timer (never read in a small queue),
        # the policy it left: a move between tiers (remove, then add at once) keeps what the object earned, and
        # a one-timer moved to another tier goes first there; any add clears it, so a key coming back later
        # starts over
        self.leaving: tuple[str, int, S3FIFOPolicy | None] = ("", 0, None)
        # the key a policy removed last, not in the ring and table yet (size -1: none). A move between tiers
        # (a demotion per miss on a full box) removes a key and adds it back at once: its add takes it here,
        # without the ring entry, the table insert and the table delete that remembering it would cost. Any
        # other use of the ghost remembers it first, so every answer is the one remembering at once gives.
        self._unnoted = ""
        self._unnoted_size = -1

    def leave(self, key: str, size: int, freq: int, one_timer_of: S3FIFOPolicy | None) -> None:
        """A policy let `key` go: remember it (lazily: see _unnoted) and set `leaving`."""
        if self._unnoted_size >= 0:
            self.note()
        self.leaving = (key, freq, one_timer_of)
        self._unnoted, self._unnoted_size = key, size

    def note(self) -> None:
        """Remember the key left unnoted by `leave`, if any."""
        size = self._unnoted_size
        if size >= 0:
            self._unnoted_size = -1
            self._remember(self._unnoted, size)
            self._unnoted = ""

    def remember(self, key: str, size: int) -> None:
        """Note a key that left a tier. Not trimmed here: a move between tiers remembers then takes the key at
        once, and trimming in between would push an older key out for nothing."""
        if self._unnoted_size >= 0:
            self.note()
        self._remember(key, size)

    def _remember(self, key: str, size: int) -> None:
        h = hash(key)
        self._hashes.append(h)  # first: the table reads the new place's hash
        self._sizes.append(size)
        self._bytes += size
        old = self.put(self._base + len(self._hashes) - 1, key, h)
        if old >= 0:
            self._forget_at(old - self._base)

    def trim(self, held: int) -> None:
        if self._unnoted_size >= 0:
            self.note()
        limit = self.limit_bytes or held
        hashes, sizes = self._hashes, self._sizes
        head = self._head
        while self._bytes > limit and self.count:
            size = sizes[head]
            if size >= 0:
                self.delete(self._base + head, hashes[head])
                self._bytes -= size
            head += 1
        self._head = head
        if head > 4096 and 2 * head > len(hashes):  # drop the dead front: amortised O(1) per key
            del hashes[:head]
            del sizes[:head]
            self._base += head
            self._head = 0

    def take(self, key: str) -> bool:
        """True (and forgets it) if the key is remembered."""
        if self._unnoted_size >= 0:
            if key == self._unnoted:  # a move: the key left a tier and comes back at once (see _unnoted)
                self._unnoted, self._unnoted_size = "", -1
                return True
            self.note()
        place = self.pop(key, hash(key))
        if place < 0:
            return False
        self._forget_at(place - self._base)
        return True

    def _forget_at(self, i: int) -> None:
        self._bytes -= self._sizes[i]
        self._sizes[i] = -1

    def __contains__(self, key: str) -> bool:
        if self._unnoted_size >= 0:
            self.note()
        return self.find(key, hash(key)) >= 0

    def __len__(self) -> int:
        self.note()
        return self.count


class Book:
    """The per-object state of the S3-FIFO policies of one box, in arrays indexed by record number.

    With the catalog's KeySlots, the catalog numbers the keys (a key is numbered before its policy hears of it
    and keeps its number until its policy has let it go) and every tier's policy shares one Book: an object is
    on one tier at a time, so one set of arrays serves them all. Without, the Book numbers keys itself.
    Per record: next and previous in its queue (4 + 4 bytes), size (8), queue (1: 0 for none, else a code
    naming one tier's small or main queue) and frequency (1)."""

    def __init__(self, slots: KeySlots | None = None) -> None:
        self.slots = slots if slots is not None else KeySlots()
        self.owns = slots is None  # policies number and free their keys themselves
        self.next = array("i")
        self.prev = array("i")
        self.size = array("q")
        self.queue = bytearray()
        self.freq = bytearray()
        self._codes = 0

    def codes(self) -> tuple[int, int]:
        """Two queue codes no other queue of this Book has (one policy's small and main)."""
        if self._codes + 2 > 255:
            raise ValueError("an S3-FIFO Book serves at most 127 tiers")
        self._codes += 2
        return self._codes - 1, self._codes

    def grow(self, slot: int) -> None:
        """Make room for record `slot` (numbers are handed out densely: at most one past the end)."""
        while len(self.queue) <= slot:
            self.next.append(_NONE)
            self.prev.append(_NONE)
            self.size.append(0)
            self.queue.append(0)
            self.freq.append(0)


class Fifo:
    """One queue (oldest first) threaded through a Book's next/prev arrays."""

    __slots__ = ("book", "code", "count", "head", "tail")

    def __init__(self, book: Book, code: int) -> None:
        self.book, self.code = book, code
        self.head = self.tail = _NONE
        self.count = 0

    def push_tail(self, slot: int) -> None:
        book, tail = self.book, self.tail
        book.prev[slot], book.next[slot], book.queue[slot] = tail, _NONE, self.code
        if tail == _NONE:
            self.head = slot
        else:
            book.next[tail] = slot
        self.tail = slot
        self.count += 1

    def push_after(self, anchor: int, slot: int) -> None:
        """Put `slot` right behind `anchor` (a record of this queue), nearer the tail."""
        book = self.book
        nxt = book.next[anchor]
        book.prev[slot], book.next[slot], book.queue[slot] = anchor, nxt, self.code
        book.next[anchor] = slot
        if nxt == _NONE:
            self.tail = slot
        else:
            book.prev[nxt] = slot
        self.count += 1

    def push_head(self, slot: int) -> None:
        book, head = self.book, self.head
        book.prev[slot], book.next[slot], book.queue[slot] = _NONE, head, self.code
        if head == _NONE:
            self.tail = slot
        else:
            book.prev[head] = slot
        self.head = slot
        self.count += 1

    def pop_head(self) -> int:
        """Unlink the oldest record (the queue is not empty) and return it; its queue code stays until it is
        pushed again or `unlink`ed."""
        slot, book = self.head, self.book
        nxt = book.next[slot]
        self.head = nxt
        if nxt == _NONE:
            self.tail = _NONE
        else:
            book.prev[nxt] = _NONE
        self.count -= 1
        return slot

    def unlink(self, slot: int) -> None:
        book = self.book
        prev, nxt = book.prev[slot], book.next[slot]
        if prev == _NONE:
            self.head = nxt
        else:
            book.next[prev] = nxt
        if nxt == _NONE:
            self.tail = prev
        else:
            book.prev[nxt] = prev
        book.queue[slot] = 0
        self.count -= 1


class S3FIFOPolicy:
    def __init__(self, ghost: Ghost | None = None, small_ratio: float = SMALL_RATIO,
                 small_bytes: int | None = None, book: Book | None = None, streams: Streams | None = None) -> None:
        """`small_bytes`: the small queue's share in bytes (default: `small_ratio` of the bytes held). `book`:
        the per-object arrays shared with the box's other tiers (default: this policy's own). `streams`: the
        stream popularity shared by the tiers (None: objects are judged alone)."""
        self._ghost = ghost if ghost is not None else Ghost()
        self._ratio = small_ratio
        self._small_share = small_bytes
        self._book = book if book is not None else Book()
        self._streams = streams
        small_code, main_code = self._book.codes()
        self._small = Fifo(self._book, small_code)  # oldest first
        self._main = Fifo(self._book, main_code)
        self._small_bytes = 0
        self._bytes = 0
        # the last one-timer moved down into main's head and still where it was put (neither read past the hand,
        # nor requeued, nor gone): the next one goes right behind it, so the one-timers leave oldest first
        self._moved_last = _NONE
        # looked up on every call (arrays grow in place: these stay the Book's)
        self._index, self._queue, self._mine = self._book.slots, self._book.queue, (small_code, main_code)

    def _held(self, key: str) -> int:
        """The key's record number if this policy holds it, else -1."""
        slot = self._index.get(key)
        if slot is None:
            return _NONE
        try:
            code = self._queue[slot]
        except IndexError:  # numbered by the catalog, never added to a policy of this Book yet
            return _NONE
        return slot if code in self._mine else _NONE

    def add(self, key: str, size: int) -> None:
        book = self._book
        slot = self._index.get(key)
        if slot is None:
            if not book.owns:
                raise KeyError(f"{key!r} has no record number: the catalog numbers a key before its policy's add")
            slot = book.slots.add(key)
        elif slot < len(self._queue) and self._queue[slot] in self._mine:
            old = book.size[slot]
            book.size[slot] = size
            self._bytes += size - old
            if book.queue[slot] == self._small.code:
                self._small_bytes += size - old
            self.touch(key)
            return
        if slot >= len(self._queue):
            book.grow(slot)
        ghost = self._ghost
        left, f, one_timer_of = ghost.leaving
        ghost.leaving = ("", 0, None)
        returning = ghost.take(key)
        streams = self._streams
        if streams is None:
            hot = False
        elif left != key:  # a move between tiers is no request
            hot = streams.request(key, returning)
        else:
            hot = not returning and streams.hot(key)
        if left == key and one_timer_of is not None and one_timer_of is not self:  # module rules: first to go
            if self._moved_last == _NONE:
                self._main.push_head(slot)
            else:
                self._main.push_after(self._moved_last, slot)
            self._moved_last = slot
        elif returning or hot:
            self._main.push_tail(slot)
        else:
            self._small.push_tail(slot)
            self._small_bytes += size
            ghost.trim(self._bytes + size)
        book.size[slot] = size
        book.freq[slot] = f if left == key else 0
        self._bytes += size

    def touch(self, key: str) -> None:
        slot = self._index.get(key)  # _held, inline: a touch per hit the box serves
        queue = self._queue
        if slot is None or slot >= len(queue) or queue[slot] not in self._mine:
            return
        if self._streams is not None:
            self._streams.request(key, True)
        freq = self._book.freq
        f = freq[slot]
        if f < MAX_FREQ:
            freq[slot] = f + 1

    def remove(self, key: str) -> None:
        slot = self._held(key)
        if slot == _NONE:
            return
        book = self._book
        f = book.freq[slot]
        small = book.queue[slot] == self._small.code
        size = book.size[slot]
        if slot == self._moved_last:
            self._moved_last = _NONE
        if small:
            self._small.unlink(slot)
            self._small_bytes -= size
        else:
            self._main.unlink(slot)
        self._bytes -= size
        self._ghost.leave(key, size, f, self if small and f == 0 else None)  # not worth_keeping: a one-timer
        if book.owns:
            book.slots.remove(key)

    def worth_keeping(self, key: str) -> bool:
        slot = self._held(key)
        return slot != _NONE and (self._book.queue[slot] == self._main.code or self._book.freq[slot] > 0)

    def admits(self, key: str) -> bool:
        return key in self._ghost

    def victims(self, need_bytes: int, is_pinned: Callable[[str], bool]) -> list[str]:
        chosen: list[str] = []
        if need_bytes <= 0:
            return chosen
        small, main = self._small, self._main
        freq, sizes, key_of = self._book.freq, self._book.size, self._book.slots.key
        hot = self._streams.hot if self._streams is not None else _never
        share = self._ratio * self._bytes if self._small_share is None else self._small_share
        # the common case of a full cache taking one object: the head to evict is evictable as it stands and
        # frees enough, so nothing moves
        queue = small if small.count and (not main.count or self._small_bytes > share) else main
        if queue.count:
            slot = queue.head
            key = key_of(slot)
            if (sizes[slot] >= need_bytes and freq[slot] == 0 and not is_pinned(key)
                    and (queue is main or not hot(key))):
                return [key]
        held_small: list[int] = []  # chosen, popped off the heads; put back at the end
        held_main: list[int] = []
        small_left = self._small_bytes
        freed = stalls = 0
        main_stuck = False
        while freed < need_bytes:
            if small.count and (main_stuck or not main.count or small_left > share):
                slot = small.pop_head()
                size, key = sizes[slot], key_of(slot)
                small_left -= size
                pinned = is_pinned(key)
                # read while small, of a hot stream, or not ours to evict: main keeps it
                if pinned or freq[slot] > 0 or hot(key):
                    self._small_bytes -= size
                    if not pinned:
                        freq[slot] = 0
                        # main now holds an object it may evict: a main found stuck on pins is worth a new look
                        main_stuck, stalls = False, 0
                    main.push_tail(slot)
                    continue
                held_small.append(slot)
            elif main.count and not main_stuck:
                slot = main.pop_head()
                size, key = sizes[slot], key_of(slot)
                if slot == self._moved_last:  # requeued below: no longer at the one-timers' end
                    self._moved_last = _NONE
                if is_pinned(key):
                    main.push_tail(slot)
                    stalls += 1
                    main_stuck = stalls > main.count
                    continue
                stalls = 0
                f = freq[slot]
                if f > 0:
                    freq[slot] = f - 1
                    main.push_tail(slot)
                    continue
                held_main.append(slot)
            else:
                break
            chosen.append(key)
            freed += size
        for fifo, held in ((small, held_small), (main, held_main)):
            for slot in reversed(held):
                fifo.push_head(slot)
        return chosen

    def __len__(self) -> int:
        return self._small.count + self._main.count
