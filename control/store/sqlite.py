"""StateStore on an embedded SQLite database (WAL, synchronous=FULL): the default for a single replica.

Rules kept here:
- One connection guarded by one lock; every write is one transaction, committed before the call returns,
  so an acknowledged invalidation or drain survives a crash of the process or the machine. An SQLite error
  rolls the transaction back and is StoreError (503) naming the file.
- The schema carries its version in `PRAGMA user_version`; a database from a newer version is refused.
- Sequence numbers come from INTEGER PRIMARY KEY AUTOINCREMENT: never reused, even after a delete.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from control.catalog.codec import title_from_json, title_to_json
from control.model import Title
from control.store import AuditEntry, Invalidation, StoreError, audit_where
from oca.errors import Conflict

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "StoreError"]  # StoreError lives in control.store; kept importable here

SCHEMA_VERSION = 3  # 2: rollouts; 3: leases, replica popularity, bundles, abort requests (older ones gain them)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS invalidations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL, value TEXT NOT NULL, soft INTEGER NOT NULL, reason TEXT NOT NULL,
    operator TEXT NOT NULL, time REAL NOT NULL, client_id TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS applied (box TEXT PRIMARY KEY, seq INTEGER NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS drains (box TEXT PRIMARY KEY, operator TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, operator TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS popularity (id INTEGER PRIMARY KEY CHECK (id = 1), time REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS titles (id TEXT PRIMARY KEY, data TEXT NOT NULL, mpd TEXT);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS replica_popularity (replica TEXT PRIMARY KEY, time REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bundles (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_aborts (id TEXT PRIMARY KEY, operator TEXT NOT NULL, time REAL NOT NULL);
"""


class SQLiteStore:
    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: str) -> SQLiteStore:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise StoreError(f"state database {path} has schema {version}; this version knows {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {path}: {exc}") from None
        return cls(db, path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The connection's lock; an SQLite error rolls back the open transaction and becomes StoreError (503)."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise StoreError(f"state database {self.path}: {exc}") from None

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._locked():
            return self._db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._locked():
            return self._db.execute(sql, args).fetchall()

    # -- invalidations ---------------------------------------------------------------------------------

    def append_invalidation(self, scope: str, value: str, *, soft: bool, reason: str, operator: str, time: float,
                            client_id: str | None = None) -> tuple[Invalidation, bool]:
        with self._locked():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if client_id is not None:
                    row = self._db.execute("SELECT * FROM invalidations WHERE client_id = ?", (client_id,)).fetchone()
                    if row is not None:
                        earlier = _invalidation(row)
                        self._db.execute("COMMIT")
                        if (earlier.scope, earlier.value, earlier.soft) != (scope, value, soft):
                            raise Conflict(f"invalidation id {client_id!r} was already used for "
                                           f"{earlier.scope} {earlier.value!r} (seq {earlier.seq})")
                        return earlier, False
                cur = self._db.execute(
                    "INSERT INTO invalidations (scope, value, soft, reason, operator, time, client_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (scope, value, int(soft), reason, operator, time, client_id))
                seq = int(cur.lastrowid or 0)
                self._db.execute("INSERT INTO audit (time, operator, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                                 (time, operator, "invalidate", f"{scope}:{value}",
                                  json.dumps({"seq": seq, "soft": soft, "reason": reason, "id": client_id})))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return Invalidation(seq, scope, value, soft, reason, operator, time, client_id), True

    def invalidations_since(self, seq: int, limit: int = 1000) -> list[Invalidation]:
        rows = self._read("SELECT * FROM invalidations WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [_invalidation(r) for r in rows]

    def get_invalidation(self, seq: int) -> Invalidation | None:
        rows = self._read("SELECT * FROM invalidations WHERE seq = ?", (seq,))
        return _invalidation(rows[0]) if rows else None

    def last_invalidation_seq(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM invalidations")[0][0])

    def record_applied(self, box_id: str, seq: int, time: float) -> int:
        with self._locked():
            self._db.execute(
                "INSERT INTO applied (box, seq, time) VALUES (?, ?, ?) ON CONFLICT(box) DO UPDATE SET "
                "seq = excluded.seq, time = excluded.time WHERE excluded.seq > applied.seq", (box_id, seq, time))
            return int(self._db.execute("SELECT seq FROM applied WHERE box = ?", (box_id,)).fetchone()[0])

    def applied_seqs(self) -> dict[str, int]:
        return {box: int(seq) for box, seq in self._read("SELECT box, seq FROM applied")}

    # -- drains and audit ------------------------------------------------------------------------------

    def set_drained(self, box_id: str, drained: bool, *, operator: str, time: float) -> None:
        with self._locked():
            self._db.execute("BEGIN IMMEDIATE")
            if drained:
                self._db.execute("INSERT OR REPLACE INTO drains (box, operator, time) VALUES (?, ?, ?)",
                                 (box_id, operator, time))
            else:
                self._db.execute("DELETE FROM drains WHERE box = ?", (box_id,))
            self._db.execute("INSERT INTO audit (time, operator, action, subject, detail) VALUES (?, ?, ?, ?, '{}')",
                             (time, operator, "drain" if drained else "undrain", box_id))
            self._db.execute("COMMIT")

    def drained(self) -> frozenset[str]:
        return frozenset(r[0] for r in self._read("SELECT box FROM drains"))

    def add_audit(self, *, time: float, operator: str, action: str, subject: str,
                  detail: Mapping[str, Any]) -> None:
        self._write("INSERT INTO audit (time, operator, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                    (time, operator, action, subject, json.dumps(dict(detail))))

    def audit(self, limit: int = 100, *, action: str | None = None, subject: str | None = None,
              operator: str | None = None, since: float | None = None) -> list[AuditEntry]:
        where, params = audit_where(action, subject, operator, since, "?")
        rows = self._read(f"SELECT id, time, operator, action, subject, detail FROM audit{where} ORDER BY id DESC "
                          "LIMIT ?", (*params, limit))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in reversed(rows)]

    # -- popularity and catalog ------------------------------------------------------------------------

    def save_popularity(self, snapshot: Mapping[str, Any], time: float) -> None:
        self._write("INSERT OR REPLACE INTO popularity (id, time, data) VALUES (1, ?, ?)",
                    (time, json.dumps(dict(snapshot))))

    def load_popularity(self) -> dict[str, Any] | None:
        rows = self._read("SELECT data FROM popularity WHERE id = 1")
        if not rows:
            return None
        data = json.loads(rows[0][0])
        return data if isinstance(data, dict) else None

    def put_title(self, title: Title, mpd: str | None = None) -> None:
        self._write("INSERT OR REPLACE INTO titles (id, data, mpd) VALUES (?, ?, ?)",
                    (title.id, json.dumps(title_to_json(title)), mpd))

    def get_mpd(self, title_id: str) -> str | None:
        rows = self._read("SELECT mpd FROM titles WHERE id = ?", (title_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def get_title(self, title_id: str) -> Title | None:
        rows = self._read("SELECT data FROM titles WHERE id = ?", (title_id,))
        return title_from_json(json.loads(rows[0][0])) if rows else None

    def titles(self) -> list[Title]:
        return [title_from_json(json.loads(r[0])) for r in self._read("SELECT data FROM titles ORDER BY id")]

    # -- firmware roll-outs ----------------------------------------------------------------------------

    def save_rollout(self, rollout_id: str, document: Mapping[str, Any], *, state: str, time: float) -> None:
        self._write("INSERT INTO rollouts (id, created, updated, state, data) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET updated = excluded.updated, state = excluded.state, "
                    "data = excluded.data", (rollout_id, time, time, state, json.dumps(dict(document))))

    def get_rollout(self, rollout_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT data FROM rollouts WHERE id = ?", (rollout_id,))
        return _document(rows[0][0]) if rows else None

    def rollouts(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._read("SELECT data FROM rollouts ORDER BY created DESC, id DESC LIMIT ?", (limit,))
        return [_document(r[0]) for r in rows]

    def put_bundle(self, sha256: str, data: bytes) -> None:
        self._write("INSERT OR IGNORE INTO bundles (sha256, data) VALUES (?, ?)", (sha256, data))

    def get_bundle(self, sha256: str) -> bytes | None:
        rows = self._read("SELECT data FROM bundles WHERE sha256 = ?", (sha256,))
        return bytes(rows[0][0]) if rows else None

    def prune_bundles(self, keep: Collection[str]) -> None:
        kept = sorted(keep)
        self._write(f"DELETE FROM bundles WHERE sha256 NOT IN ({', '.join('?' * len(kept))})", tuple(kept))

    def request_abort(self, rollout_id: str, operator: str, time: float) -> None:
        self._write("INSERT OR IGNORE INTO rollout_aborts (id, operator, time) VALUES (?, ?, ?)",
                    (rollout_id, operator, time))

    def abort_request(self, rollout_id: str) -> str | None:
        rows = self._read("SELECT operator FROM rollout_aborts WHERE id = ?", (rollout_id,))
        return str(rows[0][0]) if rows else None

    # -- replicas --------------------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        with self._locked():
            self._db.execute(
                "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "holder = excluded.holder, until = excluded.until WHERE leases.holder = excluded.holder "
                "OR leases.until < ?", (name, holder, now + ttl, now))
            row = self._db.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
            return bool(row is not None and row[0] == holder)

    def release_lease(self, name: str, holder: str) -> None:
        self._write("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def save_replica_popularity(self, replica: str, snapshot: Mapping[str, Any], time: float) -> None:
        self._write("INSERT OR REPLACE INTO replica_popularity (replica, time, data) VALUES (?, ?, ?)",
                    (replica, time, json.dumps(dict(snapshot))))

    def replica_popularity(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT replica, data FROM replica_popularity")
        return {r[0]: data for r in rows if isinstance(data := json.loads(r[1]), dict)}


def _document(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise StoreError("a roll-out in the state database is not a JSON object")
    return data


def _invalidation(row: Any) -> Invalidation:
    seq, scope, value, soft, reason, operator, time, client_id = row
    return Invalidation(int(seq), scope, value, bool(soft), reason, operator, float(time), client_id)
