"""Bounded containers: a dict with a size limit, and a bounded queue of work for a thread pool.

For the per-key tables of a long-running process (a worker's negative cache, its sliced-object metadata),
which must not grow with the number of distinct keys clients ask for; and for bulk work (an import of a
million files), which must not queue every item up front.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")


class LimitedDict(OrderedDict[K, V]):
    """At most `limit` items; `touch` marks a key used, so what goes first is the least recently used."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        if key in self:
            self.move_to_end(key)
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)

    def touch(self, key: K) -> None:
        if key in self:
            self.move_to_end(key)


def run_bounded(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[tuple[T, Future[R]]]:
    """Run fn(item) on `pool` for every item, with at most `window` submitted and not yet handed back, and
    yield (item, its finished future) as each completes. `items` is read lazily: a million files cost
    `window` futures, not a million."""
    if window < 1:
        raise ValueError("window must be at least 1")
    source = iter(items)
    running: dict[Future[R], T] = {}
    while True:
        for item in source:
            running[pool.submit(fn, item)] = item
            if len(running) >= window:
                break
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            yield running.pop(future), future
