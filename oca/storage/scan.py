"""The rebuild's scan: every valid object on the tiers, read in parts, with the junk deleted on the way.

Rules kept here:
- Streamed: a tier's fan-out directories are read in parts (LEAVES_PER_PART directories each), a few parts
  ahead of the consumer (the index being written), so a rebuild of 10^7 objects never holds them all. The
  list of a tier's fan-out directories is held whole: at most 65,536 names, whatever the object count.
- A part's rows are decoded and checked by the code in layout.py, which pays one Python-level loop per object.
  On threads those loops take turns at the GIL (8 threads on 2 cores spent 3-4x the CPU of one thread waking
  for it), so a tier big enough to pay for starting them is read by worker processes instead, each returning
  a part's rows (pickled: ~62 bytes and ~0.2 µs a row). Whether it is big enough is decided from the tier's
  first parts, read on threads: a small store (every test's) never starts a process.
- The processes come from a 'forkserver' that has imported the program's main module and this one: the
  master has threads (the event loop's executor runs this very scan), and a forked child of a threaded
  process may inherit a lock some other thread held; 'spawn' would import the main module (the `oca`
  command's: 0.5 s of imports) in every worker. The forkserver (and multiprocessing's resource tracker) stay
  idle until the process exits; the workers end with the scan.
- A pool of processes that cannot start or breaks (a worker killed) is not the tier's fault: the rest of the
  scan, and any part it lost, runs on threads. Only an OSError from reading the tier itself fails the tier.
- A key found on two tiers is yielded twice, the faster copy first: tiers are scanned one after the other,
  in the order given (Index.create keeps the first row of a key).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from oca.bounded import run_bounded
from oca.storage.index import RowValues
from oca.storage.layout import TierLayout

log = logging.getLogger("oca.storage")

SCAN_THREADS = 8  # parts of a tier read at once on threads: each waits on the disk (an HDD seeks per file)
SCAN_PROCESSES = max(4, min(os.cpu_count() or 1, 8))  # worker processes: one per core, and at least 4 reads in flight
LEAVES_PER_PART = 16  # fan-out directories per part: 4,096 parts of a full tier, ~2,400 objects each at 10^7
SAMPLE_PARTS = SCAN_THREADS  # a tier's first parts, read on threads, tell how many objects it holds
# Objects left on a tier (as its first parts suggest) above which worker processes read the rest. Starting them
# costs ~0.1 s of the forkserver's imports once and a fork per worker; each object then saves ~10-15 µs of
# waiting for the GIL (measured at 10^5: see README, "Store growth").
PROCESS_THRESHOLD = 50_000


def worth_processes(rows_seen: int, leaves_seen: int, leaves_left: int, threshold: int) -> bool:
    """Whether the rest of a tier is big enough for worker processes: the objects per fan-out directory of
    the parts read so far, times the directories left, reaches `threshold`."""
    if leaves_seen <= 0 or leaves_left <= 0:
        return False
    return rows_seen * leaves_left >= threshold * leaves_seen


def scan_tiers(tiers: Sequence[tuple[str, TierLayout]], errors: dict[str, str],
               process_threshold: int | None = None) -> Iterator[list[RowValues]]:
    """Batches of rows (last access = stored_at) for every valid object found on the tiers, fastest tier first,
    deleting junk on the way; each part of a tier is one batch. A tier whose first SAMPLE_PARTS parts suggest
    at least `process_threshold` (default PROCESS_THRESHOLD) more objects is read on by worker processes.
    Per tier that could not be scanned, `errors` gets the error once the iteration is over (its files are
    left alone)."""
    threshold = PROCESS_THRESHOLD if process_threshold is None else process_threshold
    with contextlib.ExitStack() as stack:
        threads = stack.enter_context(ThreadPoolExecutor(max_workers=SCAN_THREADS, thread_name_prefix="oca-scan"))
        processes: _Processes | None = None
        for name, layout in tiers:
            try:
                parts = list(_parts(layout.scan_leaves()))
                sample, rest = parts[:SAMPLE_PARTS], parts[SAMPLE_PARTS:]
                seen = 0
                for rows in _read(threads, functools.partial(_scan_part, name, layout), sample, SCAN_THREADS):
                    seen += len(rows)
                    yield rows
                leaves_seen, leaves_left = sum(map(len, sample)), sum(map(len, rest))
                if not worth_processes(seen, leaves_seen, leaves_left, threshold):
                    yield from _read(threads, functools.partial(_scan_part, name, layout), rest, SCAN_THREADS)
                    continue
                if processes is None:
                    processes = stack.enter_context(_Processes(threads))
                yield from _read(processes, functools.partial(_scan_part_at, name, layout.root), rest,
                                 SCAN_PROCESSES, lost=functools.partial(_scan_part, name, layout))
            except OSError as e:
                errors[name] = f"scan failed: {e.strerror or e} ({getattr(e, 'filename', '') or layout.root})"


def _read(pool: Executor, scan: Callable[[list[str]], list[RowValues]], parts: Iterable[list[str]], workers: int,
          lost: Callable[[list[str]], list[RowValues]] | None = None) -> Iterator[list[RowValues]]:
    """The rows of each part, `scan` run on `pool` with two parts per worker in flight; a part whose process
    pool broke under it is read again by `lost`, here."""
    for part, done in run_bounded(pool, scan, parts, 2 * workers):
        try:
            rows = done.result()
        except BrokenExecutor:
            if lost is None:
                raise
            rows = lost(part)
        if rows:
            yield rows


class _Processes(Executor):
    """Worker processes from a forkserver, started on the first submit; once they cannot start or have
    broken, every later submit goes to `fallback` (threads)."""

    def __init__(self, fallback: Executor) -> None:
        self._fallback = fallback
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if not self._broken:
            try:
                if self._pool is None:
                    self._pool = _start_processes()
                return self._pool.submit(fn, *args, **kwargs)
            except (BrokenExecutor, OSError) as e:  # OSError: no semaphores, no forkserver
                log.warning("rebuild scan: worker processes unavailable (%s); reading on threads", e)
                self._broken = True
        return self._fallback.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _start_processes() -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    # The forkserver imports the program's main module (as multiprocessing's default does) and this one, once;
    # a worker forked from it finds both imported (spawn.prepare skips a main module already loaded from the
    # same path). Without '__main__' here every worker would import it again. A no-op once it is running.
    context.set_forkserver_preload(["__main__", __name__])
    return ProcessPoolExecutor(max_workers=SCAN_PROCESSES, mp_context=context)


def _parts(leaves: Iterator[str]) -> Iterator[list[str]]:
    part: list[str] = []
    for leaf in leaves:
        part.append(leaf)
        if len(part) == LEAVES_PER_PART:
            yield part
            part = []
    if part:
        yield part


def _scan_part(tier: str, layout: TierLayout, leaves: list[str]) -> list[RowValues]:
    """The rows of the valid objects in `leaves`, with the junk there deleted. Raises OSError."""
    rows: list[RowValues] = []
    add = rows.append
    for leaf in leaves:
        for s in layout.read_leaf(leaf):
            add((s.key, tier, s.size, s.digest, s.stored_at, s.stored_at, int(s.hot), int(s.pinned)))
    return rows


def _scan_part_at(tier: str, root: str, leaves: list[str]) -> list[RowValues]:
    """`_scan_part` in a worker process, which is handed the tier's root (a TierLayout holds nothing else a
    scan needs)."""
    return _scan_part(tier, TierLayout(root), leaves)
