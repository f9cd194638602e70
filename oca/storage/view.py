"""StoreView: the read-only view a worker process resolves hits through.

Rules kept here:
- Never writes and takes no lock: a read-only SQLite connection (WAL lets it read while the owner writes)
  and a read-only mapping of the generation file.
- `lookup` answers None for an object on a FAILED tier, exactly as the owner's `get` does.
- `changed()` costs one memory read; it is True once per generation bump the caller has not yet seen.
- Open one view per process, after forking; a view is safe to share between threads of that process.
- A file named by an ObjectInfo can vanish (eviction) or, rarely, be replaced between the lookup and the
  open: the caller treats ENOENT as a miss and compares fstat's size with `ObjectInfo.size`.
- A new object does not bump the generation (only removals, moves, replacements and tier state changes
  do), so a caller may cache hits until `changed()` but must not cache misses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from types import TracebackType

from oca.config.model import StorageConfig
from oca.errors import StorageError
from oca.storage.generation import GENERATION_NAME, Generation
from oca.storage.index import IndexReader, index_path
from oca.storage.layout import TierLayout, key_hash
from oca.storage.model import ObjectInfo, TierState


class StoreView:
    def __init__(self, config: StorageConfig, generation: Generation, reader: IndexReader) -> None:
        self._layouts = {t.name: TierLayout(t.path) for t in config.tiers}
        self._gen, self._reader = generation, reader
        self._lock = threading.Lock()
        self._seen = generation.read()  # what changed() last reported
        # the store's raw generation word: a per-request check that reads `generation_word[0]` and calls
        # changed() only when it differs from the value last seen (oca.serve.memo)
        self.generation_word: Sequence[int] = generation.word
        self._loaded = -1  # the generation tier states were read at
        self._states: dict[str, TierState] = {}

    @classmethod
    def open(cls, config: StorageConfig) -> StoreView:
        state_dir = os.path.abspath(config.state_dir)
        path = index_path(state_dir)
        if not os.path.isfile(path):
            raise StorageError(f"no storage index at {path}: the storage owner has not opened it yet")
        generation = Generation(os.path.join(state_dir, GENERATION_NAME), writable=False)
        try:
            reader = IndexReader(path)
        except BaseException:
            generation.close()
            raise
        return cls(config, generation, reader)

    def lookup(self, key: str) -> ObjectInfo | None:
        """The object stored as `key`, or None if absent or its tier is FAILED."""
        with self._lock:
            current = self._gen.value
            if current != self._loaded:
                self._refresh()
                self._loaded = current
            row = self._reader.lookup(key)
        if row is None:
            return None
        layout = self._layouts.get(row.tier)
        if layout is None or self._states.get(row.tier) is TierState.FAILED:
            return None
        return ObjectInfo(row.key, row.tier, layout.object_path(key_hash(row.key)), row.size, row.digest,
                          row.stored_at, row.hot, row.pinned)

    def changed(self) -> bool:
        """True once after each generation bump: drop any cached lookups."""
        current = self._gen.read()
        if current == self._seen:
            return False
        self._seen = current
        return True

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._gen.close()

    def __enter__(self) -> StoreView:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _refresh(self) -> None:
        """Re-read tier states; reconnect if the owner rebuilt (replaced) the index file."""
        try:
            inode = os.stat(self._reader.path).st_ino
        except OSError:
            inode = self._reader.inode
        if inode != self._reader.inode:
            fresh = IndexReader(self._reader.path)
            self._reader.close()
            self._reader = fresh
        self._states = self._reader.tier_states()
