"""Per-title inventory with a change sequence, so the control plane can poll only what changed.

Rules kept here (pure; the master feeds it the store's title feed, oca.storage.titles):
- A title is the `<id>` of `titles/<id>/...`; other keys are counted under no title.
- Each refresh compares per-title (objects, bytes) with the last one; every title that changed, appeared
  or vanished gets the next sequence number. `apply` takes only the titles that changed (O(changes));
  `refresh` takes a whole listing (tests, tools).
- Sequence numbers start at the boot time in milliseconds, so a poller holding a number from before a restart
  (smaller than `base`) is given a full listing instead of a wrong delta.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from oca.storage.titles import TitleFeed, title_of, title_of_object
from oca.wire.inventory import TitleChanges, TitleTotals

__all__ = ["TitleInventory", "title_of"]


class TitleInventory:
    def __init__(self, base: int | None = None) -> None:
        self.base = base if base is not None else int(time.time() * 1000)
        self.sequence = self.base
        self._titles: dict[str, tuple[int, int]] = {}
        self._changed: dict[str, int] = {}  # title -> sequence of its last change
        self._removed: dict[str, int] = {}

    def refresh(self, objects: Iterable[tuple[str, int]]) -> int:
        """Take the current listing (key, size) and return the sequence number after it."""
        summary: dict[str, tuple[int, int]] = {}
        for key, size in objects:
            title = title_of_object(key)
            if title is None:
                continue
            count, total = summary.get(title, (0, 0))
            summary[title] = (count + 1, total + size)
        return self.apply(TitleFeed(True, summary))

    def apply(self, feed: TitleFeed) -> int:
        """Take the titles that changed ((0, 0): gone; with `feed.full`, every title held) and return the
        sequence number after them."""
        for title, value in feed.titles.items():
            if value[0] == 0:
                self._remove(title)
            elif self._titles.get(title) != value:
                self.sequence += 1
                self._titles[title] = value
                self._changed[title] = self.sequence
                self._removed.pop(title, None)
        if feed.full:
            for title in self._titles.keys() - feed.titles.keys():
                self._remove(title)
        return self.sequence

    def _remove(self, title: str) -> None:
        if self._titles.pop(title, None) is None:
            return
        self.sequence += 1
        self._removed[title] = self.sequence
        self._changed.pop(title, None)

    def since(self, since: int) -> TitleChanges:
        full = since < self.base
        titles = {t: TitleTotals(n, b) for t, (n, b) in sorted(self._titles.items())
                  if full or self._changed.get(t, 0) > since}
        removed = () if full else tuple(sorted(t for t, seq in self._removed.items() if seq > since))
        return TitleChanges(self.sequence, full, titles, removed)
