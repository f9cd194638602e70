"""A fill's tier write beside its clients: the bytes are written to the tier's temp file and hashed on a thread.

Rules kept here:
- A fill fed from memory (`source`: its memory feed holds every byte) keeps no chunks: at `finish`, once the
  upstream body has ended, one thread job hashes the feed and writes it to the temp file in MAX_BLOCK
  pieces (from a read-only mapping of the feed, no copy in between). While the body streams, the master's
  CPU goes to the clients' bytes alone: on a 2-core box the tier write running beside the transfer took
  half of the master's CPU in the transfer's window and the transfer ran at its pace (issue 16's trace).
- That write is O_DIRECT (all but the last partial DIRECT_ALIGN bytes) where the tier's filesystem takes it:
  the disk reads the feed's pages itself, and no page-cache copy of the object is made. The buffered write
  was the master's largest cost per miss (py-spy: 60% of its samples; perf: 86% of the write in
  copy_folio_from_iter_atomic, the page cache's fresh pages); 8 MiB took 59-65 ms of CPU buffered against
  1.1-1.4 ms with O_DIRECT on README's machine. The clients are fed from the feed, so nothing reads the tier
  file while it is written; a later hit reads it from the disk, as any object that left the page cache.
- Otherwise (the clients are fed from the temp file itself), chunks are written and hashed in the order
  they were added, by one thread job at a time per fill; what arrives while a job runs goes out as the next
  job's batch (a slow disk gets larger writes, not more jobs).
- All bookkeeping happens on the event loop's thread; a job touches only its batch (or the feed), the file
  and the hasher.
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
import errno
import fcntl
import mmap
import os
from collections.abc import Callable
from concurrent.futures import Executor

import xxhash

from oca.fetch.fillfile import FillFile

MAX_BLOCK = 1 << 20  # bytes of a memory feed hashed and written per step (the GIL is released for each)
# O_DIRECT wants file offsets, lengths and buffers aligned to the disk's logical block (512 or 4096 bytes);
# the feed's mapping is page-aligned and its blocks are MAX_BLOCK long, so only the tail is written buffered
DIRECT_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd` (Linux lets F_SETFL change it); whether it is on now. A filesystem
    without direct I/O refuses it (EINVAL): the writes stay buffered."""
    if not _O_DIRECT:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
    except OSError:
        return False
    return on


class TierWriter:
    def __init__(self, executor: Executor, on_written: Callable[[int], None] | None = None,
                 source: FillFile | None = None) -> None:
        self._executor = executor
        self._on_written = on_written  # called on the loop with the bytes written so far
        self._source = source  # a memory feed holding every added byte: copied from at `finish`
        self._hasher = xxhash.xxh3_128()
        self._pending: list[bytes] = []
        self._job: asyncio.Future[int] | None = None
        self._waiter: asyncio.Future[None] | None = None  # resolved when no job runs (or one broke)
        self._broken: BaseException | None = None
        self.sink: FillFile | None = None  # None until the tier is chosen (chunks wait for it)
        self.added = 0
        self.written = 0  # bytes hashed (and written, unless `error`)
        self.copied = 0  # bytes written into the temp file
        self.copied_direct = 0  # of those, written with O_DIRECT (from a memory feed: no page-cache copy)
        self.error: BaseException | None = None  # the write's OSError, or why no temp file could be made

    @property
    def lag(self) -> int:
        """Bytes added and held for the write (none when they are in the memory feed)."""
        return 0 if self._source is not None else self.added - self.written

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
        self.added += len(chunk)
        if self._source is None:
            self._pending.append(chunk)
            self._submit()

    def grew(self, n: int) -> None:
        """`n` more bytes are in the memory feed (put there without a chunk: oca.fetch.splice)."""
        if self._source is None:
            raise RuntimeError("grew() without a memory feed: the bytes would never reach the tier file")
        self.added += n

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
                    self.copied += len(chunk)
                except OSError as exc:
                    self.error = exc
            done += len(chunk)
        return done

    def _copy(self, source: FillFile, length: int) -> int:
        """On the thread: hash and write the feed's first `length` bytes, a block at a time; the blocks before
        the last partial DIRECT_ALIGN bytes with O_DIRECT when the tier's filesystem takes it."""
        if length <= 0:
            return 0
        # a shared read-only mapping of the feed: its pages are read in place (MAP_POPULATE maps them at once)
        view = memoryview(mmap.mmap(source.fd, length, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                    mmap.PROT_READ))
        sink = self.sink
        direct = sink is not None and self.error is None and _set_direct(sink.fd, True)
        edge = length - length % DIRECT_ALIGN if direct else 0  # O_DIRECT up to here, then buffered
        for start in range(0, length, MAX_BLOCK):
            block = view[start:start + MAX_BLOCK]
            self._hasher.update(block)
            if self.error is not None or sink is None:
                continue
            cut = min(max(edge - start, 0), len(block)) if direct else 0  # the block's bytes that go O_DIRECT
            try:
                if cut:
                    direct = self._write_direct(sink, block[:cut], start)
                    self.copied_direct += cut if direct else 0
                if cut < len(block):
                    if direct:
                        direct = _set_direct(sink.fd, False)  # the tail is not a whole block
                    sink.write(block[cut:])
                self.copied += len(block)
            except OSError as exc:
                self.error = exc
        if direct and sink is not None and sink.fd >= 0:
            _set_direct(sink.fd, False)
        return length  # the mapping goes when its last view does

    def _write_direct(self, sink: FillFile, block: memoryview, offset: int) -> bool:
        """Write `block` (whole DIRECT_ALIGN blocks, at file offset `offset`) with O_DIRECT; False when the
        filesystem refused it after all (EINVAL: an alignment it wants larger), then it is written buffered
        from `offset` again."""
        try:
            sink.write(block)
            return True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        _set_direct(sink.fd, False)
        os.lseek(sink.fd, offset, os.SEEK_SET)
        sink.write(block)
        return False

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
        the disk. A memory-fed fill's bytes are hashed and written now, from its feed."""
        source = self._source
        if source is not None and self._job is None and self.written < self.added:
            job = asyncio.get_running_loop().run_in_executor(self._executor, self._copy, source, self.added)
            self._job = job
            job.add_done_callback(self._written)
        await self.caught_up()
        if self.error is None and self.sink is not None and self.sink.fd >= 0:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, os.fsync, self.sink.fd)
            except OSError as exc:
                self.error = exc
        return self._hasher.hexdigest()
