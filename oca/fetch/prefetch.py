"""Prefetch jobs: lists of objects the box fills in the background, highest priority first, under a bandwidth cap.

Rules kept here:
- A job is a list of items (key, optional size, digest, hot and pin); the box owns the disks, so a job only
  asks the FillManager, which coalesces with client misses for the same key.
- Jobs run one at a time in priority order (higher first, then oldest); within a job a few items at once.
- The rate cap is a token bucket over all prefetch bytes: the config's fetch.prefetch_rate, or the job's own
  rate when lower. Clock injected so the bucket is tested without sleeping.
- Progress is readable while the job runs: items done, present, failed (with reasons), bytes.
- Every number a job's sender (the fill job, the control plane, an operator) gives is range-checked:
  priority within ±MAX_PRIORITY, rate within 0..MAX_RATE bytes/s, an item's size within 0..MAX_SIZE.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from oca.config.units import parse_size
from oca.errors import BadRequest
from oca.fetch.upstream import Source
from oca.keys import is_valid_key

_PARALLEL = 4
MAX_PRIORITY = 1_000_000
MAX_RATE = 10**12  # bytes per second: 8 Tbit/s, far past any box's egress
MAX_SIZE = 2**63 - 1  # an off_t: no file can be larger
_YIELD = 0.05  # seconds a prefetch pauses per chunk while players wait for misses


@dataclass(frozen=True, slots=True)
class PrefetchItem:
    key: str
    size: int | None = None
    digest: str | None = None
    hot: bool = False
    pin: bool = False
    sources: tuple[tuple[str, str, str], ...] = ()  # (name, url, kind) in order; () = the box's configured ones


@dataclass(eq=False)
class PrefetchJob:
    id: int
    items: list[PrefetchItem]
    priority: int
    rate: int  # bytes per second; 0 = only the box's cap
    created: float
    state: str = "queued"  # queued, running, done, cancelled
    results: dict[str, str] = field(default_factory=dict)  # key -> stored / present / absent / fail: reason
    bytes: int = 0
    bytes_by_source: dict[str, int] = field(default_factory=dict)

    def progress(self) -> dict[str, Any]:
        failed = {k: r for k, r in self.results.items() if r not in ("stored", "present")}
        return {"id": self.id, "state": self.state, "priority": self.priority, "items": len(self.items),
                "finished": len(self.results),
                "stored": sum(1 for r in self.results.values() if r == "stored"),
                "present": sum(1 for r in self.results.values() if r == "present"),
                "failed": len(failed), "failures": dict(list(failed.items())[:100]), "bytes": self.bytes,
                "bytes_by_source": dict(self.bytes_by_source)}


def parse_items(raw: object) -> list[PrefetchItem]:
    """Items from a JSON body's "items" list; BadRequest naming the first bad one."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("items must be a non-empty list")
    items = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"key": entry}
        if not isinstance(entry, dict):
            raise BadRequest(f"items[{i}] must be a key or an object with a key")
        key = entry.get("key")
        if not isinstance(key, str) or not is_valid_key(key):
            raise BadRequest(f"items[{i}].key is not a valid content key: {key!r}")
        size, digest = entry.get("size"), entry.get("digest")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE):
            raise BadRequest(f"items[{i}].size must be an integer from 0 to {MAX_SIZE}")
        if digest is not None and not isinstance(digest, str):
            raise BadRequest(f"items[{i}].digest must be a string")
        flags = {}
        for name in ("hot", "pin"):
            value = entry.get(name, False)
            if not isinstance(value, bool):
                raise BadRequest(f"items[{i}].{name} must be true or false")
            flags[name] = value
        tier = entry.get("tier")
        if tier is not None and tier not in ("hot", "cold"):
            raise BadRequest(f"items[{i}].tier must be hot or cold")
        items.append(PrefetchItem(key, size, digest, flags["hot"] or tier == "hot", flags["pin"],
                                  _sources(entry.get("sources"), i)))
    return items


def parse_priority(raw: object) -> int:
    """A job's priority (default 0); BadRequest unless an integer within ±MAX_PRIORITY."""
    if not isinstance(raw, int) or isinstance(raw, bool) or not -MAX_PRIORITY <= raw <= MAX_PRIORITY:
        raise BadRequest(f"priority must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}, got {raw!r:.40}")
    return raw


def parse_rate(raw: object) -> int:
    """A job's rate in bytes per second ("50MB" or an integer; 0 or absent = only the box's cap)."""
    try:
        rate = parse_size(raw) if raw else 0
    except ValueError as exc:
        raise BadRequest(f"rate (bytes per second): {exc}") from None
    if rate > MAX_RATE:
        raise BadRequest(f"rate (bytes per second) must be at most {MAX_RATE}, got {raw!r:.40}")
    return rate


def _sources(raw: object, i: int) -> tuple[tuple[str, str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise BadRequest(f"items[{i}].sources must be a non-empty list")
    out = []
    for j, source in enumerate(raw):
        where = f"items[{i}].sources[{j}]"
        if not isinstance(source, dict):
            raise BadRequest(f"{where} must be an object with name, url and kind")
        name, url, kind = source.get("name"), source.get("url"), source.get("kind", "origin")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}.name must be a non-empty string")
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"{where}.url must be an http(s) URL, got {url!r}")
        if kind not in ("peer", "parent", "origin"):
            raise BadRequest(f"{where}.kind must be peer, parent or origin, got {kind!r}")
        out.append((name, str(url).rstrip("/"), str(kind)))
    return tuple(out)


class TokenBucket:
    """Bytes per second, with one second of burst."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._tokens = float(rate)
        self._at = clock()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.rate)


FillOne = Callable[..., Awaitable[str]]


class PrefetchQueue:
    def __init__(self, fill_one: FillOne, box_rate: int, clock: Callable[[], float] = time.time,
                 busy: Callable[[], bool] = lambda: False, credential: str | None = None) -> None:
        self._fill_one = fill_one
        self._busy = busy  # players are waiting for misses: prefetches yield
        self._credential = credential
        self._box_bucket = TokenBucket(box_rate)
        self._clock = clock
        self.jobs: dict[int, PrefetchJob] = {}
        self._ids = itertools.count(1)
        self._queue: list[tuple[int, float, int]] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def submit(self, items: list[PrefetchItem], priority: int = 0, rate: int = 0) -> PrefetchJob:
        job = PrefetchJob(next(self._ids), items, priority, rate, self._clock())
        self.jobs[job.id] = job
        heapq.heappush(self._queue, (-priority, job.created, job.id))
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return job

    def cancel(self, job_id: int) -> PrefetchJob | None:
        job = self.jobs.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job.state = "cancelled"
        return job

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _run(self) -> None:
        while self._queue:
            _, _, job_id = heapq.heappop(self._queue)
            job = self.jobs[job_id]
            if job.state == "cancelled":
                continue
            job.state = "running"
            await self._run_job(job)
            if job.state == "running":
                job.state = "done"

    async def _run_job(self, job: PrefetchJob) -> None:
        bucket = TokenBucket(job.rate) if job.rate else None
        pending = iter(job.items)

        async def rate(n: int, source: str) -> None:
            job.bytes += n
            job.bytes_by_source[source] = job.bytes_by_source.get(source, 0) + n
            await self._box_bucket.take(n)
            if bucket is not None:
                await bucket.take(n)
            if self._busy():  # client misses first: a prefetch slows to a crawl while players wait
                await asyncio.sleep(_YIELD)

        async def worker() -> None:
            for item in pending:
                if job.state == "cancelled":
                    return
                sources = [Source(name, url, kind, self._credential) for name, url, kind in item.sources] or None
                try:
                    result = await self._fill_one(item.key, hot=item.hot, pin=item.pin, digest=item.digest,
                                                  size=item.size, rate=rate, sources=sources)
                except Exception as exc:  # one bad item must not stop the job
                    result = f"fail: {exc}"
                job.results[item.key] = result

        await asyncio.gather(*(worker() for _ in range(_PARALLEL)))
