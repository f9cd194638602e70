"""A fill's tier write beside its clients: chunks are written to the tier's temp file and hashed on a thread.

Rules kept here:
- Chunks are written and hashed in the order they were added, by one thread job at a time per fill; what
  arrives while a job runs goes out as the next job's batch (a slow disk gets larger writes, not more jobs).
  All bookkeeping happens on the event loop's thread; a job touches only its batch, the file and the hasher.
- Every chunk is hashed, even after a write failed: the digest decides whether the bytes were the right
  ones (a prefetch's catalog digest), whatever the disk did.
- The first write error stops the writing and is kept in `error`; the caller charges the tier.
- `finish` waits for the last batch, then fsyncs once: the fill is installed only once its bytes are
  durable (a crash before that leaves a temp file that is never served).
- `lag` (bytes added, not yet written) lets the caller hold back the upstream reads when the disk falls
  far behind, so a fill's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor

import xxhash

from oca.fetch.fillfile import FillFile


class TierWriter:
    def __init__(self, executor: Executor, on_written: Callable[[int], None] | None = None) -> None:
        self._executor = executor
        self._on_written = on_written  # called on the loop with the bytes written so far
        self._hasher = xxhash.xxh3_128()
        self._pending: list[bytes] = []
        self._job: asyncio.Future[int] | None = None
        self._waiter: asyncio.Future[None] | None = None  # resolved when no job runs (or one broke)
        self._broken: BaseException | None = None
        self.sink: FillFile | None = None  # None until the tier is chosen (chunks wait for it)
        self.added = 0
        self.written = 0  # bytes hashed (and written, unless `error`)
        self.error: BaseException | None = None  # the write's OSError, or why no temp file could be made

    @property
    def lag(self) -> int:
        return self.added - self.written

    def attach(self, sink: FillFile) -> None:
        """The tier's temp file is open: the chunks so far, and every later one, go to it."""
        self.sink = sink
        self._submit()
        self._wake_if_idle()

    def fail(self, error: BaseException) -> None:
        """No temp file (it could not be made, or no tier was chosen): nothing is written, every chunk is still
        hashed."""
        self.error = error
        self._submit()
        self._wake_if_idle()

    def _wake_if_idle(self) -> None:
        if self._job is None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def add(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self.added += len(chunk)
        self._submit()

    def _submit(self) -> None:
        if self._job is not None or not self._pending or (self.sink is None and self.error is None):
            return
        batch, self._pending = self._pending, []
        self._job = asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
        self._job.add_done_callback(self._written)

    def _write(self, batch: list[bytes]) -> int:
        """On the thread: hash and write one batch; the bytes it covered."""
        done = 0
        for chunk in batch:
            self._hasher.update(chunk)
            if self.error is None and self.sink is not None:
                try:
                    self.sink.write(chunk)
                except OSError as exc:
                    self.error = exc
            done += len(chunk)
        return done

    def _written(self, job: asyncio.Future[int]) -> None:
        self._job = None
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:  # not an OSError (those are kept in `error`): a bug, which caught_up() raises
            self._broken = exc
        else:
            self.written += job.result()
            if self._on_written is not None:
                self._on_written(self.written)
            self._submit()
        if self._waiter is not None and not self._waiter.done() and (self._broken or self._job is None):
            self._waiter.set_result(None)

    async def caught_up(self) -> None:
        """Wait until every chunk added so far is hashed (and written, unless a write failed); chunks added
        before the temp file is attached (or failed) wait for it."""
        while self._broken is None and (self._job is not None or self._pending):
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._broken is not None:
            raise self._broken

    async def finish(self) -> str:
        """Wait for the writes, fsync once (unless a write failed: then `error` stays set), and return the
        xxh3-128 digest of every chunk added. An fsync error is kept in `error` too: the bytes may not be on
        the disk."""
        await self.caught_up()
        if self.error is None and self.sink is not None and self.sink.fd >= 0:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, os.fsync, self.sink.fd)
            except OSError as exc:
                self.error = exc
        return self._hasher.hexdigest()
