"""Popularity: session starts per (site, title) as exponentially decaying counters. Pure: the clock is injected.

A counter holds a score and the time it was last brought up to date; reading or adding decays it by
2^(-elapsed / half_life) first, so one start counts 1 now, 0.5 one half-life later. The fill planner ranks
titles by these scores; the service persists `snapshot()` in SQLite and `restore()`s it after a restart.

Rules kept here (issue 4, "Popularity"):
- Deterministic: the same calls with the same `now` give the same scores and the same order; ties rank by
  title id (then site id), so plans built from them are reproducible.
- Time going backwards (a clock step, a restored snapshot from a later replica) never inflates a score:
  a start dated before the counter's time is added already decayed to that time.
- `prune` drops counters that have decayed below a floor, so a long-running control plane stays bounded.
- Bad arguments (a half-life that is not a positive number, a malformed snapshot) raise ValueError naming them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Score:
    title: str
    score: float
    site: str | None = None  # None when summed over every site


def _decay(score: float, since: float, now: float, half_life: float) -> float:
    return score if now <= since else score * math.exp2(-(now - since) / half_life)


class Popularity:
    """Decaying session-start counters. Not thread-safe; the service calls it from its event loop."""

    __slots__ = ("_counters", "half_life")

    def __init__(self, half_life: float) -> None:
        if isinstance(half_life, bool) or not isinstance(half_life, int | float) or not half_life > 0 \
                or not math.isfinite(half_life):
            raise ValueError(f"half_life {half_life!r}: expected a positive number of seconds")
        self.half_life = float(half_life)
        self._counters: dict[str, dict[str, list[float]]] = {}  # site -> title -> [score, as of]

    def record(self, site: str, title: str, now: float, weight: float = 1.0) -> None:
        """Count one session start (or `weight` of them) of `title` at `site` at time `now`."""
        counter = self._counters.setdefault(site, {}).get(title)
        if counter is None:
            self._counters[site][title] = [weight, now]
        elif now >= counter[1]:
            counter[0] = _decay(counter[0], counter[1], now, self.half_life) + weight
            counter[1] = now
        else:
            counter[0] += _decay(weight, now, counter[1], self.half_life)

    def score(self, site: str, title: str, now: float) -> float:
        counter = self._counters.get(site, {}).get(title)
        return 0.0 if counter is None else _decay(counter[0], counter[1], now, self.half_life)

    def scores(self, *, now: float, site: str | None = None, limit: int | None = None) -> list[Score]:
        """Titles ranked by decayed score, highest first: at one site, or summed over all sites (site=None)."""
        if site is not None:
            ranked = [Score(title, _decay(s, t, now, self.half_life), site)
                      for title, (s, t) in self._counters.get(site, {}).items()]
        else:
            totals: dict[str, float] = {}
            for counters in self._counters.values():
                for title, (s, t) in counters.items():
                    totals[title] = totals.get(title, 0.0) + _decay(s, t, now, self.half_life)
            ranked = [Score(title, total) for title, total in totals.items()]
        ranked.sort(key=lambda entry: (-entry.score, entry.title))
        return ranked if limit is None else ranked[:max(0, limit)]

    def sites(self) -> list[str]:
        return sorted(site for site, counters in self._counters.items() if counters)

    def prune(self, now: float, floor: float = 1e-3) -> int:
        """Drop counters whose decayed score is below `floor`; returns how many went."""
        dropped = 0
        for site in list(self._counters):
            counters = self._counters[site]
            for title in [t for t, (s, at) in counters.items() if _decay(s, at, now, self.half_life) < floor]:
                del counters[title]
                dropped += 1
            if not counters:
                del self._counters[site]
        return dropped

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able data: {"version", "half_life", "counters": {site: {title: [score, as_of]}}}."""
        return {"version": SNAPSHOT_VERSION, "half_life": self.half_life,
                "counters": {site: {title: [c[0], c[1]] for title, c in sorted(counters.items())}
                             for site, counters in sorted(self._counters.items())}}

    @classmethod
    def merged(cls, parts: Iterable[Popularity], half_life: float) -> Popularity:
        """The sum of several replicas' counters: each counter is added at its own time, so every part decays
        the same way it would have in one process (recording is order-free, see `record`)."""
        total = cls(half_life)
        for part in parts:
            for site, counters in part._counters.items():
                for title, (score, at) in counters.items():
                    total.record(site, title, at, score)
        return total

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any], *, half_life: float | None = None) -> Popularity:
        """The counters of a snapshot; `half_life` overrides the saved one (a changed config applies from now)."""
        if not isinstance(snapshot, Mapping) or snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"popularity snapshot: expected a mapping with version {SNAPSHOT_VERSION}")
        chosen: Any = half_life if half_life is not None else snapshot.get("half_life")
        popularity = cls(chosen)  # validates it
        counters = snapshot.get("counters")
        if not isinstance(counters, Mapping):
            raise ValueError("popularity snapshot: 'counters' is not a mapping")
        for site, titles in counters.items():
            if not isinstance(site, str) or not isinstance(titles, Mapping):
                raise ValueError(f"popularity snapshot: site {site!r} does not map to titles")
            for title, pair in titles.items():
                if not (isinstance(title, str) and isinstance(pair, list | tuple) and len(pair) == 2
                        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                                for v in pair) and pair[0] >= 0):
                    raise ValueError(f"popularity snapshot: {site}/{title}: expected [score >= 0, time], got {pair!r}")
                popularity._counters.setdefault(site, {})[title] = [float(pair[0]), float(pair[1])]
        return popularity
