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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from oca.storage.policy import EvictionPolicy


class PlannedPolicy:
    def __init__(self, inner: EvictionPolicy, scores: Mapping[str, float] | None = None) -> None:
        self.inner = inner
        self._scores: Mapping[str, float] = scores or {}
        self._planned: dict[str, int] = {}  # planned key -> size
        self._sizes: dict[str, int] = {}  # the inner policy's keys -> size (to tell when its victims fall short)

    def add(self, key: str, size: int) -> None:
        if key in self._planned or (key in self._scores and key not in self._sizes):
            self._planned[key] = size
            return
        self._sizes[key] = size
        self.inner.add(key, size)

    def touch(self, key: str) -> None:
        if key not in self._planned:
            self.inner.touch(key)

    def remove(self, key: str) -> None:
        if self._planned.pop(key, None) is None:
            self._sizes.pop(key, None)
            self.inner.remove(key)

    def victims(self, need_bytes: int, is_pinned: Callable[[str], bool]) -> list[str]:
        chosen = self.inner.victims(need_bytes, is_pinned)
        freed = sum(self._sizes[k] for k in chosen)
        if freed >= need_bytes or not self._planned:
            return chosen
        scores = self._scores
        for key in sorted(self._planned, key=lambda k: (scores.get(k, 0.0), k)):
            if freed >= need_bytes:
                break
            if not is_pinned(key):
                chosen.append(key)
                freed += self._planned[key]
        return chosen

    def worth_keeping(self, key: str) -> bool:
        return key in self._planned or self.inner.worth_keeping(key)

    def admits(self, key: str) -> bool:
        return key in self._scores or self.inner.admits(key)

    def replan(self, scores: Mapping[str, float], held: Mapping[str, int]) -> None:
        """The next plan's scores; `held` is every key on this tier with its size (a policy wrapped while the
        tier already holds keys learns their sizes here)."""
        self._scores = scores
        for key, size in held.items():
            if key not in self._planned:
                self._sizes[key] = size
        for key in [k for k in self._planned if k not in scores]:
            size = self._planned.pop(key)
            self._sizes[key] = size
            self.inner.add(key, size)
        for key in [k for k in self._sizes if k in scores]:
            self._planned[key] = self._sizes.pop(key)
            self.inner.remove(key)

    def __len__(self) -> int:
        return len(self._planned) + len(self.inner)
