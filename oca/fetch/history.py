"""What happened to each recently seen key, and why a miss was a miss: the master's bounded memory.

Rules kept here:
- Memory is bounded twice: at most MAX_KEYS keys (least recently touched forgotten first) and at most
  MAX_EVENTS events per key (oldest dropped first), details cut to 120 characters: about 1.5 KB per key
  at worst, so under 32 MB however many objects the box holds (10^7 to 10^8; tests/fetch/test_history.py
  measures it). Nothing here walks every object.
- The history is in memory only: a restart forgets it, and a miss of a key it has no record of is
  `first` (or `popular`) even if the box held the key before the restart. `oca cache why` says so.
- `classify` is pure over the history and the caller's facts (stale, sliced): the reason for one miss,
  one of REASONS. The order of the checks is the order of REASONS' explanations below: what the key's
  own last event says wins over what its title says.
- Single-threaded: storage threads hand their evictions over with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple

MAX_KEYS = 20_000
MAX_EVENTS = 6
# A title with this many first-ever misses in POPULAR_WINDOW seconds is in demand here without having been
# pre-positioned: its next first-ever miss is `popular` (the fill plan left out a title viewers want here).
POPULAR_MISSES = 3
POPULAR_WINDOW = 600.0
MAX_TITLES = 10_000

# Why a miss was a miss (the label of oca_misses_total and the access log's "miss" field).
FIRST = "first"  # never seen (since the master started)
POPULAR = "popular"  # never seen, but its title is missing here repeatedly: not in the fill plan, yet wanted
EVICTED = "evicted"  # held once, evicted to make room (capacity); how long ago is in `oca cache why`
INVALIDATED = "invalidated"  # held once, removed by a purge or an invalidation
REVALIDATED = "revalidated"  # held but stale (soft-purged): fetched again with If-None-Match
SLICE = "slice"  # one slice of a large object, not held (the object is known, this range is not)
ABSENT = "absent"  # the origin said 404 a moment ago (fetch.negative_ttl): answered without asking again
NO_SOURCE = "no_source"  # the box has no upstream sources configured: a miss is a 404
REASONS = (FIRST, POPULAR, EVICTED, INVALIDATED, REVALIDATED, SLICE, ABSENT, NO_SOURCE)

# Event kinds
MISS, FILLED, FAILED, EVICT, PURGED, STALE, REVALIDATE, PREFETCH = (
    "miss", "filled", "failed", "evicted", "purged", "stale", "revalidated", "prefetched")


class Event(NamedTuple):
    at: float  # epoch seconds
    kind: str
    detail: str


def title_of(key: str) -> str | None:
    """`titles/<id>/...` -> <id>; None for keys outside the titles tree."""
    if not key.startswith("titles/"):
        return None
    title, sep, _ = key[7:].partition("/")
    return title if sep and title else None


class KeyHistory:
    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = MAX_KEYS,
                 max_events: int = MAX_EVENTS) -> None:
        self._clock = clock
        self._max_keys, self._max_events = max_keys, max_events
        self._keys: OrderedDict[str, list[Event]] = OrderedDict()
        self._title_misses: OrderedDict[str, deque[float]] = OrderedDict()  # title -> first-ever miss times

    def __len__(self) -> int:
        return len(self._keys)

    def record(self, key: str, kind: str, detail: str = "") -> None:
        events = self._keys.get(key)
        if events is None:
            events = self._keys[key] = []
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if len(events) >= self._max_events:
                del events[0]
        events.append(Event(self._clock(), kind, detail[:120]))

    def events(self, key: str) -> list[Event]:
        return list(self._keys.get(key, ()))

    def classify(self, key: str, *, stale: bool = False, slice_of: str | None = None) -> str:
        """The reason for a miss of `key` now (pure over the history; records nothing)."""
        if stale:
            return REVALIDATED
        last = _last_removal(self._keys.get(key, ()))
        if last is not None:
            return EVICTED if last.kind == EVICT else INVALIDATED
        if slice_of is not None:
            return SLICE
        if key in self._keys:  # seen, never removed: it was never stored (a failed or unstorable fill)
            return FIRST
        title = title_of(key)
        if title is not None and len(self._recent_title_misses(title)) >= POPULAR_MISSES:
            return POPULAR
        return FIRST

    def miss(self, key: str, *, stale: bool = False, slice_of: str | None = None) -> str:
        """Classify a client's miss of `key` and remember it; returns the reason."""
        reason = self.classify(key, stale=stale, slice_of=slice_of)
        if reason in (FIRST, POPULAR):
            title = title_of(key)
            if title is not None:
                times = self._recent_title_misses(title)
                times.append(self._clock())
                self._title_misses[title] = times
                self._title_misses.move_to_end(title)
                if len(self._title_misses) > MAX_TITLES:
                    self._title_misses.popitem(last=False)
        self.record(key, MISS, reason)
        return reason

    def _recent_title_misses(self, title: str) -> deque[float]:
        times = self._title_misses.get(title)
        if times is None:
            return deque(maxlen=POPULAR_MISSES)
        horizon = self._clock() - POPULAR_WINDOW
        while times and times[0] < horizon:
            times.popleft()
        return times


def _last_removal(events: list[Event] | tuple[()]) -> Event | None:
    """The key's removal (eviction or purge) if nothing has stored it again since."""
    for event in reversed(events):
        if event.kind in (EVICT, PURGED):
            return event
        if event.kind in (FILLED, REVALIDATE):
            return None
    return None
