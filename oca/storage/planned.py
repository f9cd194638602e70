"""Fill-aware eviction (issue 19, "fill-aware"): the files the nightly fill plan placed, with the plan's
prediction per file (oca.wire.fill.PlannedFile.score, expected requests until the next plan), outrank what
the box cached on its own until the next plan replaces the scores.

Rules kept here:
- PlannedPolicy wraps one tier's own policy (S3-FIFO, LRU) without changing it: planned keys are held apart,
  by score; every other key is the inner policy's, which orders them as it always does ("unplanned content
  competes for the rest"). The inner policy never sees a planned key, so a tier mostly full of planned
  (often pinned) files costs its eviction hand nothing to walk past.
- Victims: the inner policy's first; only when they cannot free enough, unpinned planned keys, lowest score
  first (ties by key). A planned key is always worth keeping (it moves down a tier rather than out) and
  always admitted; reads do not change its place (the plan's score is the prediction).
- `replan` installs the next plan's scores: keys no longer planned go to the inner policy as newly added,
  keys now planned leave it. The store wraps a tier's policy the first time a plan with scores arrives
  (Store.set_fill_scores), so a box that never gets one runs its policy unwrapped.
- Per planned key: one set entry over the catalog's own key string. Sizes are the store's (`size_of`, the
  catalog's entry sizes), never a second copy here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from oca.storage.policy import EvictionPolicy


class PlannedPolicy:
    def __init__(self, inner: EvictionPolicy, size_of: Callable[[str], int],
                 scores: Mapping[str, float] | None = None) -> None:
        self.inner = inner
        self._size_of = size_of  # bytes of a key this tier holds (the store's catalog)
        self._scores: Mapping[str, float] = scores or {}
        self._planned: set[str] = set()  # planned keys on this tier, never in the inner policy
        # the planned keys lowest score first, made again only after the set changed: a tier whose own policy
        # cannot free enough asks on every miss, and sorting a night's plan each time cost more than the miss
        self._order: list[str] | None = None

    def add(self, key: str, size: int) -> None:
        if key in self._scores:
            self._planned.add(key)
            self._order = None
            return
        self.inner.add(key, size)

    def touch(self, key: str) -> None:
        if key not in self._planned:
            self.inner.touch(key)

    def remove(self, key: str) -> None:
        if key in self._planned:
            self._planned.discard(key)
            self._order = None
        else:
            self.inner.remove(key)

    def victims(self, need_bytes: int, is_pinned: Callable[[str], bool]) -> list[str]:
        chosen = self.inner.victims(need_bytes, is_pinned)
        if not self._planned:
            return chosen
        size_of = self._size_of
        freed = sum(size_of(k) for k in chosen)
        if freed >= need_bytes:
            return chosen
        order = self._order
        if order is None:
            scores = self._scores
            order = self._order = sorted(self._planned, key=lambda k: (scores.get(k, 0.0), k))
        for key in order:
            if freed >= need_bytes:
                break
            if not is_pinned(key):
                chosen.append(key)
                freed += size_of(key)
        return chosen

    def worth_keeping(self, key: str) -> bool:
        return key in self._planned or self.inner.worth_keeping(key)

    def admits(self, key: str) -> bool:
        return key in self._scores or self.inner.admits(key)

    def score(self, key: str) -> float | None:
        """The plan's score of `key` (None when the plan in force does not name it)."""
        return self._scores.get(key)

    def replan(self, scores: Mapping[str, float], held: Collection[str]) -> None:
        """The next plan's scores; `held` is every key on this tier (a policy wrapped while the tier already
        holds keys learns which of them the plan names here)."""
        self._scores = scores
        self._order = None
        for key in [k for k in self._planned if k not in scores]:
            self._planned.discard(key)
            self.inner.add(key, self._size_of(key))
        for key in held:
            if key in scores and key not in self._planned:
                self._planned.add(key)
                self.inner.remove(key)

    def __len__(self) -> int:
        return len(self._planned) + len(self.inner)
