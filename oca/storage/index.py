"""The SQLite index: what is stored where, which tiers are healthy, and which files are mid-change.

Rules kept here:
- One file, `<state_dir>/index.sqlite`, in WAL mode with synchronous=FULL: the owner writes, any number of
  read-only views read at the same time, and a committed change survives a power cut.
- Every multi-row change runs in one transaction; a failed write rolls back and raises StorageError, so a
  write error never leaves a half-changed index.
- `pending` journals file work: a row (tier, hash, key, intent) is committed before files at that place
  change and deleted after. At open, each one is settled from what is on disk (see Store), so a crash
  between the file work and the index update leaves neither a servable stale row nor a lost purge.
- `PRAGMA quick_check` reads the whole file (10 s at 10^7 objects), so it is skipped when the index is exactly
  as the last clean close left it: `close(clean=True)` checkpoints the WAL and writes `index.sqlite.clean`, the
  inode, size and mtime of the index and its WAL; `open` trusts the file only if they still match (any commit,
  truncation or rewrite since changes them) and removes the mark before anything is written. After a crash, or
  anything else, the check runs.
- An index that is missing, unreadable, fails `PRAGMA quick_check` or has another schema is rebuilt by
  scanning the tiers' sidecars. Junk is deleted on the way: objects without a valid sidecar, sidecars
  without objects, stray names (a sidecar's size is trusted: layout.py); a key found on two tiers keeps the
  faster copy. A rebuild is written beside the index and renamed over it, so a crash mid-rebuild is harmless
  (the next open rebuilds again).
- A rebuild streams: the tiers' fan-out directories are read in parts (scan.py), each part appended as it
  comes with one executemany to a staging file, then sorted into the index by key (SQLite's external sort), in
  files written as a bulk load (no journal, one fsync at the end); memory holds a few parts and the sort's
  runs (16 MiB), not the tier.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from oca.errors import StorageError
from oca.storage.files import fsync_dir
from oca.storage.model import TierState

SCHEMA_VERSION = 1
INDEX_NAME = "index.sqlite"
CLEAN_SUFFIX = ".clean"  # beside the index after a clean close (see the rules above)
STAGE_SUFFIX = ".stage"  # a rebuild's rows in the order they came, while Index.create runs

_SCHEMA = """
CREATE TABLE objects (
    key TEXT PRIMARY KEY, tier TEXT NOT NULL, size INTEGER NOT NULL, digest TEXT NOT NULL,
    stored_at REAL NOT NULL, last_access REAL NOT NULL, hot INTEGER NOT NULL, pinned INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE tiers (name TEXT PRIMARY KEY, state TEXT NOT NULL, error TEXT NOT NULL);
CREATE TABLE pending (
    tier TEXT NOT NULL, hash TEXT NOT NULL, key TEXT NOT NULL, intent TEXT NOT NULL,
    PRIMARY KEY (tier, hash)
) WITHOUT ROWID;
"""
_COLUMNS = "key, tier, size, digest, stored_at, last_access, hot, pinned"
_BY_ACCESS = f"SELECT {_COLUMNS} FROM objects ORDER BY last_access, key"  # a load's order: least recent first
_BY_KEY = f"SELECT {_COLUMNS} FROM objects WHERE key = ?"

# A new index file is written as a bulk load (see Index.create): no journal, no sync until it is whole, the
# connection alone on the file. A scan yields rows in hash order (the tiers' fan-out directories), not key
# order: inserted so, each touched a random page of the key B-tree, and once the tree outgrew the page cache
# (64 MiB then, ~650,000 rows) each read a page back and spilled another, so the rate fell with the object count
# (README: Store growth). So they are appended to a staging table and moved into the B-tree by one
# INSERT ... SELECT ... ORDER BY key: SQLite's external sort (runs of at most the page cache's size, spilled to
# its temporary directory: SQLITE_TMPDIR, else /var/tmp), then the tree written front to back. A page cache of
# 16 MiB bounds memory at any size (the default 2 MiB makes more runs to merge). `threads=2`: the sort's runs
# are sorted and merged by two helper threads beside the connection's own (SQLite's default is none), so the
# rebuild's serial tail uses both cores: Index.create of 3*10^6 rows 179,000-223,000 rows/s before, 307,000
# after, peak memory 37 MiB then 69; a whole rebuild at 10^7 was no faster, its scan being the slower part
# (README: Rebuild at 10^7).
_BULK_LOAD = ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF", "PRAGMA locking_mode=EXCLUSIVE",
              "PRAGMA cache_size=-16384", "PRAGMA threads=2")
_STAGE = ("PRAGMA stage.journal_mode=OFF", "PRAGMA stage.synchronous=OFF", "PRAGMA stage.locking_mode=EXCLUSIVE")

WRITE, DROP = "write", "drop"  # pending intents: adopt the files if they verify / remove them


class IndexCorrupt(Exception):
    """The index file cannot be trusted and must be rebuilt."""


RowValues = tuple[str, str, int, str, float, float, int, int]  # a Row's fields as stored (hot, pinned: 0/1)


@dataclass(slots=True)
class Row:
    key: str
    tier: str
    size: int
    digest: str
    stored_at: float
    last_access: float
    hot: bool
    pinned: bool

    def values(self) -> RowValues:
        return (self.key, self.tier, self.size, self.digest, self.stored_at, self.last_access,
                int(self.hot), int(self.pinned))


@dataclass(frozen=True, slots=True)
class Pending:
    tier: str
    hash: str
    key: str
    intent: str


def _row(values: Sequence[object]) -> Row:
    key, tier, size, digest, stored_at, last_access, hot, pinned = values
    assert isinstance(key, str) and isinstance(tier, str) and isinstance(digest, str)
    assert isinstance(size, int) and isinstance(stored_at, float) and isinstance(last_access, float)
    return Row(key, tier, size, digest, stored_at, last_access, bool(hot), bool(pinned))


def index_path(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), INDEX_NAME)


class Index:
    """The owner's read-write handle. Not thread-safe: the Store serialises calls under its lock."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path, self._conn = path, conn

    @classmethod
    def open(cls, path: str, *, trusted: bool = False) -> Index:
        """Open an existing index; raises IndexCorrupt if it is missing or cannot be trusted. `trusted`: the
        caller has just written it whole (`create`), so quick_check has nothing to find."""
        if not os.path.isfile(path):
            raise IndexCorrupt(f"{path} is missing")
        clean = _take_clean_mark(path) or trusted
        conn = None
        try:
            conn = _connect(path)
            check = ["ok"] if clean else [r[0] for r in conn.execute("PRAGMA quick_check")]
            if check != ["ok"]:
                raise IndexCorrupt(f"{path} failed quick_check: {'; '.join(map(str, check[:3]))}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise IndexCorrupt(f"{path} has schema version {version}, expected {SCHEMA_VERSION}")
            conn.execute("PRAGMA journal_mode=WAL")
            for table in ("objects", "tiers", "pending"):
                conn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
        except (sqlite3.Error, IndexCorrupt) as e:
            if conn is not None:
                conn.close()
            raise e if isinstance(e, IndexCorrupt) else IndexCorrupt(f"{path}: {e}") from e
        return cls(path, conn)

    @classmethod
    def create(cls, path: str, batches: Iterable[Sequence[RowValues]],
               on_duplicate: Callable[[str, str], None] | None = None) -> Index:
        """Write a new index holding the rows of `batches` beside `path`, then rename it over whatever was there.
        Of rows with the same key the first is kept; `on_duplicate(key, tier)` is told of each later one (a
        rebuild deletes its files). The rows of one tier must have distinct keys (a tier has one file name per
        key), since a later row is told apart from the one kept by its tier.

        A bulk load: the file is new and takes the index's place only once it is complete and fsynced, so it
        needs no rollback journal and no sync per commit (a crash leaves a `.new` that the next create removes),
        and no quick_check when it is opened. Each batch is one executemany of one prepared statement, appending
        to a staging file beside the index (`.stage`, removed at the end), and the rows are then written into the
        key B-tree in key order (see _BULK_LOAD). Later rows of a key are told of once every row is in."""
        fresh, staged = path + ".new", path + STAGE_SUFFIX
        for stale in (fresh, fresh + "-journal", staged, path, path + "-wal", path + "-shm", path + CLEAN_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        try:
            conn = sqlite3.connect(fresh, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StorageError(f"cannot create index {fresh}: {e}") from e
        try:
            for pragma in _BULK_LOAD:
                conn.execute(pragma)
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("ATTACH DATABASE ? AS stage", (staged,))
            for pragma in _STAGE:
                conn.execute(pragma)
            conn.execute(f"CREATE TABLE stage.rows ({_COLUMNS})")  # a rowid table: each row appended
            conn.execute("BEGIN")
            staged_rows = 0
            for batch in batches:
                conn.executemany("INSERT INTO stage.rows VALUES (?,?,?,?,?,?,?,?)", batch)
                staged_rows += len(batch)
            before = conn.total_changes
            # of a key's rows the first staged (the lowest rowid) is kept, the later ones ignored
            conn.execute(f"INSERT OR IGNORE INTO objects ({_COLUMNS}) SELECT {_COLUMNS} FROM stage.rows "
                         "ORDER BY key, rowid")
            if conn.total_changes - before < staged_rows and on_duplicate is not None:
                for key, tier in conn.execute("SELECT s.key, s.tier FROM stage.rows AS s JOIN objects AS o "
                                              "ON o.key = s.key WHERE o.tier != s.tier ORDER BY s.rowid").fetchall():
                    on_duplicate(key, tier)
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE stage")
        except sqlite3.Error as e:
            raise StorageError(f"cannot write index {fresh}: {e}") from e
        finally:
            conn.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
        try:
            _fsync_file(fresh)  # what synchronous=FULL did at the commit, once, before the rename publishes it
        except OSError as e:
            raise StorageError(f"cannot write index {fresh}: {e.strerror or e}") from e
        os.replace(fresh, path)
        fsync_dir(os.path.dirname(path))
        return cls.open(path, trusted=True)

    def interrupt(self) -> None:
        """Abort the statement running on another thread (it raises sqlite3.OperationalError). Safe from
        any thread."""
        self._conn.interrupt()

    def close(self, clean: bool = False) -> None:
        """Close; with `clean` (the owner giving up the index on purpose), leave the mark that lets the next
        open skip quick_check. A mark that cannot be written is only a slower next open."""
        if clean:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                clean = False
        self._conn.close()
        if clean:
            _leave_clean_mark(self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all; errors become StorageError."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StorageError(f"index {self.path}: {e}") from e
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"index {self.path}: {e}") from e
            raise

    def rows(self) -> Iterator[RowValues]:
        """Every object's values (Row's fields, in order), least recently accessed first, streamed from the
        cursor: loading 10^7 objects never holds them all as rows. Nothing else may use the index until the
        iteration ends."""
        yield from self._conn.execute(_BY_ACCESS)

    def get(self, key: str) -> RowValues | None:
        """The object's values as `rows` gives them, or None."""
        found: RowValues | None = self._conn.execute(_BY_KEY,
                                                     (key,)).fetchone()
        return found

    def starting_with(self, prefix: str) -> list[RowValues]:
        """The values of every object whose key starts with `prefix`, by key: a range of the key's B-tree,
        O(matching rows), however many the index holds."""
        upper = _successor(prefix)
        if upper is None:
            cur = self._conn.execute(f"SELECT {_COLUMNS} FROM objects WHERE key >= ? ORDER BY key", (prefix,))
        else:
            cur = self._conn.execute(f"SELECT {_COLUMNS} FROM objects WHERE key >= ? AND key < ? ORDER BY key",
                                     (prefix, upper))
        return cur.fetchall()

    def snapshot(self) -> Snapshot:
        """A read-only view of the index as it is now, on a connection of its own (see Snapshot)."""
        return Snapshot(self.path)

    def put(self, row: Row) -> None:
        self._conn.execute(f"INSERT OR REPLACE INTO objects ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                           row.values())

    def put_many(self, rows: Iterable[Row]) -> None:
        """`put` of many rows in one statement loop inside SQLite (an import batch)."""
        self._conn.executemany(f"INSERT OR REPLACE INTO objects ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                               (row.values() for row in rows))

    def delete(self, key: str) -> None:
        self._conn.execute("DELETE FROM objects WHERE key = ?", (key,))

    def set_pinned(self, key: str, pinned: bool) -> None:
        self._conn.execute("UPDATE objects SET pinned = ? WHERE key = ?", (int(pinned), key))

    def set_accessed(self, accessed: dict[str, float]) -> None:
        self._conn.executemany("UPDATE objects SET last_access = ? WHERE key = ?",
                               ((t, k) for k, t in accessed.items()))

    def add_pending(self, tier: str, h: str, key: str, intent: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO pending (tier, hash, key, intent) VALUES (?,?,?,?)",
                           (tier, h, key, intent))

    def clear_pending(self, tier: str, h: str) -> None:
        self._conn.execute("DELETE FROM pending WHERE tier = ? AND hash = ?", (tier, h))

    def add_pending_many(self, tier: str, work: Iterable[tuple[str, str]], intent: str) -> None:
        """`add_pending` of many (hash, key) on one tier."""
        self._conn.executemany("INSERT OR REPLACE INTO pending (tier, hash, key, intent) VALUES (?,?,?,?)",
                               ((tier, h, key, intent) for h, key in work))

    def clear_pending_many(self, tier: str, hashes: Iterable[str]) -> None:
        self._conn.executemany("DELETE FROM pending WHERE tier = ? AND hash = ?", ((tier, h) for h in hashes))

    def pending(self) -> list[Pending]:
        cur = self._conn.execute("SELECT tier, hash, key, intent FROM pending ORDER BY tier, hash")
        return [Pending(*r) for r in cur]

    def set_tier_state(self, name: str, state: TierState, error: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO tiers (name, state, error) VALUES (?,?,?)",
                           (name, state.value, error))

    def tier_states(self) -> dict[str, TierState]:
        return {name: TierState(state) for name, state in self._conn.execute("SELECT name, state FROM tiers")}

    def drop_tiers_except(self, names: Sequence[str]) -> int:
        """Forget objects, pending work and states of tiers no longer configured; returns objects dropped."""
        marks = ",".join("?" * len(names))
        n = self._conn.execute(f"DELETE FROM objects WHERE tier NOT IN ({marks})", tuple(names)).rowcount
        self._conn.execute(f"DELETE FROM pending WHERE tier NOT IN ({marks})", tuple(names))
        self._conn.execute(f"DELETE FROM tiers WHERE name NOT IN ({marks})", tuple(names))
        return n


class Snapshot:
    """The objects as they were when it was made, read on a connection of its own while the owner keeps
    writing on the index's (a background load of the catalog: the sort of every row by last access and the
    reading happen without the Store's lock). WAL mode gives the snapshot: a read transaction sees the
    database as of its first read until it ends (https://sqlite.org/wal.html, "Concurrency"); meanwhile the
    WAL cannot be checkpointed past it, so it is closed as soon as the load is done. Thread-safe for
    `interrupt` only."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, check_same_thread=False,
                                         isolation_level=None)
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT 1 FROM objects LIMIT 1").fetchall()  # the snapshot starts at a first read
        except sqlite3.Error as e:
            raise StorageError(f"cannot read index {path}: {e}") from e

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per tier name, (bytes, bytes pinned) of its objects. A full scan: 1.3 s at 10^6 rows."""
        cur = self._conn.execute("SELECT tier, sum(size), sum(size * pinned) FROM objects GROUP BY tier")
        return {tier: (size, pinned) for tier, size, pinned in cur}

    def rows(self) -> Iterator[RowValues]:
        """Index.rows of the snapshot: least recently accessed first, streamed from the cursor."""
        yield from self._conn.execute(_BY_ACCESS)

    def interrupt(self) -> None:
        """Abort the statement running on another thread (it raises sqlite3.OperationalError); nothing if the
        snapshot is closed already."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.interrupt()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        self._conn.close()


class IndexReader:
    """A read-only handle for worker processes: never writes, never locks out the owner."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.inode = os.stat(path).st_ino
            uri = Path(path).as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA query_only=1")
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open index {path} read-only: {e}") from e

    def lookup(self, key: str) -> Row | None:
        try:
            r = self._conn.execute(_BY_KEY, (key,)).fetchone()
        except sqlite3.Error as e:
            raise StorageError(f"index {self.path}: {e}") from e
        return None if r is None else _row(r)

    def tier_states(self) -> dict[str, TierState]:
        try:
            cur = self._conn.execute("SELECT name, state FROM tiers")
            return {name: TierState(state) for name, state in cur}
        except sqlite3.Error as e:
            raise StorageError(f"index {self.path}: {e}") from e

    def close(self) -> None:
        self._conn.close()


def _successor(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (None: no bound, as for ""). SQLite
    compares text with memcmp of its UTF-8, which orders as code points do."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            bumped = last + 1 if last + 1 != 0xD800 else 0xE000  # surrogates are not encodable as UTF-8
            return prefix[:-1] + chr(bumped)
        prefix = prefix[:-1]
    return None


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _signature(path: str) -> str:
    """Inode, size and mtime of the index and of its WAL (or '-' where missing)."""
    parts = []
    for name in (path, path + "-wal"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            parts.append("-")
        else:
            parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    return " ".join(parts)


def _leave_clean_mark(path: str) -> None:
    mark = path + CLEAN_SUFFIX
    try:
        with open(mark + ".tmp", "w", encoding="ascii") as f:
            f.write(_signature(path))
            f.flush()
            os.fsync(f.fileno())
        os.replace(mark + ".tmp", mark)
        fsync_dir(os.path.dirname(path))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(mark + ".tmp")


def _take_clean_mark(path: str) -> bool:
    """Whether the index is as a clean close left it; the mark is gone afterwards either way."""
    mark = path + CLEAN_SUFFIX
    try:
        with open(mark, encoding="ascii") as f:
            recorded = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    try:
        os.unlink(mark)
        fsync_dir(os.path.dirname(path))
    except OSError:
        return False
    return recorded == _signature(path)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=FULL")
    return conn
