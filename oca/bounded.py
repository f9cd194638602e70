"""A dict with a size limit: storing a new key past the limit drops the least recently stored or used one.

For the per-key tables of a long-running process (a worker's negative cache, its sliced-object metadata),
which must not grow with the number of distinct keys clients ask for.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


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
