"""Prefetch jobs: lists of objects the box fills in the background, highest priority first, under a bandwidth cap.

Rules kept here:
- A job is a list of items (key, optional size, digest, hot and pin); the box owns the disks, so a job only
  asks the FillManager, which coalesces with client misses for the same key.
- Jobs run one at a time in priority order (higher first, then oldest); within a job a few items at once.
- The rate cap is a token bucket over all prefetch bytes: the config's fetch.prefetch_rate, or the job's own
  rate when lower. Clock injected so the bucket is tested without sleeping.
- Progress is readable while the job runs: items done, present, failed (with reasons), bytes.
- A job's request and its progress are the wire model's (oca/wire/prefetch.py: PrefetchRequest, JobProgress),
  which range-checks every number a sender (the fill job, the lab, an operator) gives.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from oca.fetch.upstream import Source
from oca.wire.prefetch import JobProgress, PrefetchItem

_PARALLEL = 4
_YIELD = 0.05  # seconds a prefetch pauses per chunk while players wait for misses


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

    def progress(self) -> JobProgress:
        failed = {k: r for k, r in self.results.items() if r not in ("stored", "present")}
        return JobProgress(self.id, self.state, self.priority, len(self.items), len(self.results),
                           sum(1 for r in self.results.values() if r == "stored"),
                           sum(1 for r in self.results.values() if r == "present"),
                           len(failed), dict(list(failed.items())[:100]), self.bytes, dict(self.bytes_by_source))


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
                sources = [Source(s.name, s.url, s.kind, self._credential) for s in item.sources] or None
                try:
                    result = await self._fill_one(item.key, hot=item.hot, pin=item.pin, digest=item.digest,
                                                  size=item.size, rate=rate, sources=sources)
                except Exception as exc:  # one bad item must not stop the job
                    result = f"fail: {exc}"
                job.results[item.key] = result

        await asyncio.gather(*(worker() for _ in range(_PARALLEL)))
