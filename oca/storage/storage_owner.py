"""StorageOwner: the storage owner inside the box's master, a few threads that alone touch the Store.

(Not the state_dir lock: that is oca/storage/lock.py.)

The Store (SQLite index, file copies, fsyncs) blocks, so the master's event loop never calls it directly:
every call goes through `call`, which runs it on this small pool. The Store serialises its own index and
memory changes with one lock and copies files outside it, so a long import does not hold up /status,
hit reports or a purge. Its counters (Store.status, Store.title_changes) are read with `peek`, on the
event loop itself, so /status never queues behind busy storage threads.

The storage threads run at a lower CPU priority than the event loop's thread (STORAGE_NICENESS: on Linux the
nice value is per thread, setpriority(2)): an import's copies and file creations keep both cores of a small
box busy, and the loop, waking for a health poll, must not wait its turn behind them for the CPU. The
storage work loses nothing while a core is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from oca.config import StorageConfig
from oca.storage import Store

T = TypeVar("T")
STORAGE_NICENESS = 5  # added to the storage threads' nice value: CFS then gives the loop's thread 3x their weight


def lower_priority(niceness: int = STORAGE_NICENESS) -> None:
    """Raise the calling thread's nice value by `niceness` (Linux: per thread; elsewhere the whole process's, so
    only on Linux). A system that refuses it (a seccomp filter) leaves the priority as it was."""
    if sys.platform != "linux":
        return
    me = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + niceness)


class StorageOwner:
    def __init__(self, config: StorageConfig) -> None:
        self._config = config
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="oca-storage", initializer=lower_priority)
        self._store: Store | None = None

    async def open(self) -> None:
        # background: the workers serve hits from the index while memory loads (10^7 objects take minutes)
        self._store = await self._run(functools.partial(Store.open, self._config, background=True))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(store, *args, **kwargs) on a storage thread."""
        store = self._store
        if store is None:
            raise RuntimeError("storage is not open")
        return await self._run(fn, store, *args, **kwargs)

    def peek(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(store, *args, **kwargs) here, on the caller's thread: only for the Store's reads that never
        wait for its lock and are O(1)-or-O(changes) (Store.status, Store.title_changes, Store.get_now), so
        /status answers from memory even while every storage thread waits on a long import or eviction, and
        a miss learns in microseconds whether the key is stored (no thread hop)."""
        store = self._store
        if store is None:
            raise RuntimeError("storage is not open")
        return fn(store, *args, **kwargs)

    async def close(self) -> None:
        if self._store is not None:
            await self._run(self._store.close)
            self._store = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
