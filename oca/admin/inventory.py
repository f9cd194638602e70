"""Per-title inventory with a change sequence, so the control plane can poll only what changed.

Rules kept here (pure; the admin API feeds it the store's listing):
- A title is the `<id>` of `titles/<id>/...`; other keys are counted under no title.
- Each refresh compares per-title (objects, bytes) with the last one; every title that changed, appeared
  or vanished gets the next sequence number.
- Sequence numbers start at the boot time in milliseconds, so a poller holding a number from before a restart
  (smaller than `base`) is given a full listing instead of a wrong delta.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from oca.wire.inventory import TitleChanges, TitleTotals


def title_of(key: str) -> str | None:
    if not key.startswith("titles/"):
        return None
    title, sep, _ = key[7:].partition("/")
    return title if sep and title else None


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
            title = title_of(key.split("@slice", 1)[0])
            if title is None:
                continue
            count, total = summary.get(title, (0, 0))
            summary[title] = (count + 1, total + size)
        for title, value in summary.items():
            if self._titles.get(title) != value:
                self.sequence += 1
                self._changed[title] = self.sequence
                self._removed.pop(title, None)
        for title in self._titles.keys() - summary.keys():
            self.sequence += 1
            self._removed[title] = self.sequence
            self._changed.pop(title, None)
        self._titles = summary
        return self.sequence

    def since(self, since: int) -> TitleChanges:
        full = since < self.base
        titles = {t: TitleTotals(n, b) for t, (n, b) in sorted(self._titles.items())
                  if full or self._changed.get(t, 0) > since}
        removed = () if full else tuple(sorted(t for t, seq in self._removed.items() if seq > since))
        return TitleChanges(self.sequence, full, titles, removed)
