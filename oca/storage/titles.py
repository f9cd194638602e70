"""Per-title object and byte counts kept as objects come and go, and the feed of titles that changed.

Rules kept here (pure; no I/O):
- A title is the `<id>` of `titles/<id>/...` (a slice key `...@sliceNNNNNN` counts under its object's
  title); other keys are counted under no title.
- Counts are kept per title and per tier, so a tier that stops serving (FAILED) drops out of what a title
  holds without a walk over its objects.
- `add` and `remove` cost O(1) and mark the title changed; `take` hands over the changed titles' servable
  counts and forgets them: a reader pays for what changed since its last call, never for every object.
- The first `take`, and the first after the set of serving tiers changed, is full: every title with a
  servable object (the reader replaces what it had; a title missing from a full feed is gone).
- Counts have their own small lock, so a reader never waits for the store's lock (held across index
  commits and evictions): the writers call add/remove under the store's lock, the reader calls `take`
  from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

SLICE_MARK = "@slice"


def title_of(key: str) -> str | None:
    """The title `key` belongs to, or None (a key outside `titles/<id>/`)."""
    if not key.startswith("titles/"):
        return None
    title, sep, _ = key[7:].partition("/")
    return title if sep and title else None


def title_of_object(key: str) -> str | None:
    """The title of a stored key, a slice counting under its whole object's title."""
    # runs for every object that comes or goes: one find and one slice for the usual key (no slice mark in
    # its title's part), title_of's longer way otherwise
    if key.startswith("titles/"):
        end = key.find("/", 7)
        if end > 7:
            title = key[7:end]
            if SLICE_MARK not in title:
                return title
    return title_of(key.split(SLICE_MARK, 1)[0])


@dataclass(frozen=True, slots=True)
class TitleFeed:
    """What `TitleCounts.take` hands over: (objects, bytes) per title; (0, 0) means the title is gone.
    With `full`, `titles` is every title held and replaces what the reader had."""

    full: bool
    titles: dict[str, tuple[int, int]]


class TitleCounts:
    def __init__(self, tiers: int) -> None:
        self._tiers = tiers
        self._counts: dict[str, list[int]] = {}  # title -> [objects on tier 0, bytes on tier 0, objects on 1, ...]
        self._changed: set[str] = set()
        self._serving: tuple[bool, ...] | None = None  # the tiers serving at the last take; None: none yet
        self._lock = threading.Lock()

    def add(self, key: str, tier: int, size: int) -> None:
        title = title_of_object(key)
        if title is None:
            return
        with self._lock:
            counts = self._counts.get(title)
            if counts is None:
                counts = self._counts[title] = [0] * (2 * self._tiers)
            counts[2 * tier] += 1
            counts[2 * tier + 1] += size
            self._changed.add(title)

    def remove(self, key: str, tier: int, size: int) -> None:
        title = title_of_object(key)
        if title is None:
            return
        with self._lock:
            counts = self._counts.get(title)
            if counts is None:
                return
            counts[2 * tier] -= 1
            counts[2 * tier + 1] -= size
            if not counts[2 * tier] and not any(counts[0::2]):  # the slice only when this tier's count ran out
                del self._counts[title]
            self._changed.add(title)

    def move(self, key: str, src: int, dst: int, size: int) -> None:
        """`remove(key, src, size)` then `add(key, dst, size)`, the title found once."""
        title = title_of_object(key)
        if title is None:
            return
        with self._lock:
            counts = self._counts.get(title)
            if counts is None:  # never counted (as remove would, take nothing away)
                counts = self._counts[title] = [0] * (2 * self._tiers)
            else:
                counts[2 * src] -= 1
                counts[2 * src + 1] -= size
            counts[2 * dst] += 1
            counts[2 * dst + 1] += size
            self._changed.add(title)

    def take(self, serving: Sequence[bool]) -> TitleFeed:
        """The titles changed since the last take (all of them on the first, or when `serving`, which
        tiers serve now, differs from the last take's), with their counts on serving tiers."""
        now = tuple(serving)
        with self._lock:
            full = now != self._serving
            names = self._counts.keys() if full else self._changed
            titles = {name: _servable(self._counts.get(name), now) for name in names}
            self._changed = set()
            self._serving = now
        if full:
            titles = {name: held for name, held in titles.items() if held[0]}
        return TitleFeed(full, titles)


def _servable(counts: list[int] | None, serving: tuple[bool, ...]) -> tuple[int, int]:
    if counts is None:
        return 0, 0
    objects = sum(counts[2 * t] for t, serves in enumerate(serving) if serves)
    size = sum(counts[2 * t + 1] for t, serves in enumerate(serving) if serves)
    return objects, size
