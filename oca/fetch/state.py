"""What the box remembers about upstream objects, across restarts: `<state_dir>/fetch.db` (SQLite, WAL).

Rules kept here:
- Only the master writes it (workers learn what they need over their link to the master).
- `validators`: the upstream ETag / Last-Modified of each filled object, for revalidation after a soft
  purge (If-None-Match). Our own ETag is the digest of the bytes; the upstream's may differ.
- `sliced`: objects stored as slices: their size, upstream ETag and media type; a slice fetched with a
  different ETag means the object changed upstream, and every slice of it is dropped.
- `stale`: keys soft-purged and not yet revalidated.
- `meta`: small named values, e.g. the last control-plane invalidation applied.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS validators (key TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, source TEXT);
CREATE TABLE IF NOT EXISTS sliced (key TEXT PRIMARY KEY, total INTEGER NOT NULL, slice_size INTEGER NOT NULL,
                                   etag TEXT, last_modified TEXT, content_type TEXT);
CREATE TABLE IF NOT EXISTS stale (key TEXT PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class SlicedObject:
    key: str
    total: int
    slice_size: int
    etag: str | None
    last_modified: str | None
    content_type: str | None


class FetchState:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "fetch.db")
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self.sliced: dict[str, SlicedObject] = {
            row[0]: SlicedObject(*row) for row in self._conn.execute(
                "SELECT key, total, slice_size, etag, last_modified, content_type FROM sliced")}
        self.stale: set[str] = {row[0] for row in self._conn.execute("SELECT key FROM stale")}

    def close(self) -> None:
        self._conn.close()

    # -- validators -------------------------------------------------------------------------------

    def remember(self, key: str, etag: str | None, last_modified: str | None, source: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO validators (key, etag, last_modified, source) VALUES (?,?,?,?)",
                           (key, etag, last_modified, source))

    def validators(self, key: str) -> tuple[str | None, str | None, str | None]:
        """(etag, last_modified, source) the object was filled with; Nones when unknown."""
        row = self._conn.execute("SELECT etag, last_modified, source FROM validators WHERE key = ?",
                                 (key,)).fetchone()
        return (row[0], row[1], row[2]) if row else (None, None, None)

    def source_of(self, key: str) -> str | None:
        return self.validators(key)[2]

    # -- sliced objects ---------------------------------------------------------------------------

    def add_sliced(self, obj: SlicedObject) -> None:
        self._conn.execute("INSERT OR REPLACE INTO sliced (key, total, slice_size, etag, last_modified, content_type)"
                           " VALUES (?,?,?,?,?,?)", (obj.key, obj.total, obj.slice_size, obj.etag,
                                                     obj.last_modified, obj.content_type))
        self.sliced[obj.key] = obj

    def drop_sliced(self, key: str) -> None:
        self._conn.execute("DELETE FROM sliced WHERE key = ?", (key,))
        self.sliced.pop(key, None)

    # -- stale marks ------------------------------------------------------------------------------

    def mark_stale(self, keys: list[str], now: float) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO stale (key, since) VALUES (?, ?)", [(k, now) for k in keys])
        self.stale.update(keys)

    def clear_stale(self, keys: list[str]) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM stale WHERE key = ?", [(k,) for k in keys])
        self.stale.difference_update(keys)

    # -- named values -----------------------------------------------------------------------------

    def get(self, name: str, default: str = "") -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default

    def put(self, name: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))
