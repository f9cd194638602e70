"""Per-worker counters, shipped to the master as deltas; the master's sums feed /metrics and /status.

Counting in plain dicts inside each worker keeps the hit path free of locks and shared memory; the
master adds the deltas up, so totals are exact across workers (at most one flush interval late).
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerStats:
    __slots__ = ("bytes_by_tier", "damaged", "duration_buckets", "duration_sum", "hits", "io_errors", "requests")

    requests: Counter[tuple[int, str]]  # (status, cache result) -> requests
    bytes_by_tier: Counter[str]
    duration_buckets: list[int]  # one per DURATION_BUCKETS bound, then +Inf; they add up to the count
    duration_sum: float
    hits: Counter[str]  # key -> hits, for the store's LRU and promotion
    io_errors: list[tuple[str, str]]  # (tier, error)
    damaged: list[tuple[str, str]]  # (key, error)

    def __init__(self) -> None:
        self._start_over()

    def _start_over(self) -> None:
        self.requests = Counter()
        self.bytes_by_tier = Counter()
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.hits = Counter()
        self.io_errors = []
        self.damaged = []

    def observe(self, status: int, cache: str, tier: str, body_bytes: int, seconds: float, key: str) -> None:
        # plain dict.get rather than Counter's __missing__: this runs once per request
        requests = self.requests
        slot = (status, cache)
        requests[slot] = requests.get(slot, 0) + 1
        if body_bytes:
            tiers = self.bytes_by_tier
            tier = tier or "none"
            tiers[tier] = tiers.get(tier, 0) + body_bytes
        self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        if cache == "hit":
            hits = self.hits
            hits[key] = hits.get(key, 0) + 1

    def take(self, connections: int) -> dict[str, Any]:
        """The deltas since the last take(), as JSON-ready data, plus the open connections (a gauge);
        the counters start again from zero."""
        delta = {
            "requests": [[s, c, n] for (s, c), n in self.requests.items()],
            "bytes_by_tier": dict(self.bytes_by_tier),
            "duration_buckets": self.duration_buckets,
            "duration_sum": self.duration_sum,
            "hits": dict(self.hits),
            "io_errors": self.io_errors,
            "damaged": self.damaged,
            "connections": connections,
        }
        self._start_over()
        return delta


class FleetStats:
    """The master's running totals over every worker, past and present."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[int, str]] = Counter()
        self.bytes_by_tier: Counter[str] = Counter()
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.connections: dict[int, int] = {}  # worker pid -> open connections

    def add(self, pid: int, delta: dict[str, Any]) -> None:
        for status, cache, n in delta.get("requests", ()):
            self.requests[(int(status), str(cache))] += int(n)
        for tier, n in delta.get("bytes_by_tier", {}).items():
            self.bytes_by_tier[str(tier)] += int(n)
        for i, n in enumerate(delta.get("duration_buckets", ())[: len(self.duration_buckets)]):
            self.duration_buckets[i] += int(n)
        self.duration_sum += float(delta.get("duration_sum", 0.0))
        self.connections[pid] = int(delta.get("connections", 0))

    def worker_gone(self, pid: int) -> None:
        self.connections.pop(pid, None)

    def summary(self) -> dict[str, Any]:
        total = sum(self.requests.values())
        hits = sum(n for (_, cache), n in self.requests.items() if cache == "hit")
        lookups = sum(n for (_, cache), n in self.requests.items() if cache in ("hit", "miss"))
        return {
            "requests": total,
            "bytes_out": sum(self.bytes_by_tier.values()),
            "bytes_by_tier": dict(self.bytes_by_tier),
            "hit_ratio": round(hits / lookups, 4) if lookups else None,
            "connections": sum(self.connections.values()),
        }
