"""`oca control migrate --from sqlite:PATH --to postgresql://...`: a SQLite state copied into PostgreSQL.

Rules kept here:
- The source is opened read-only and never changed; a source whose schema is newer than this code is refused.
- The target gets its migrations first (control/store/postgres.py), then must be empty: a copy never merges
  into a state that replicas may already be writing.
- Everything is copied in one transaction, keeping every key: invalidation sequence numbers, client ids,
  audit ids. The invalidation counter continues where SQLite's would (its AUTOINCREMENT high-water mark, so a
  number used and deleted is still never reused); the audit id sequence continues after the highest id.
- Each table's rows are counted in the source and, inside that transaction, in the target; each count is
  reported (`copied N, target has N`); any mismatch rolls everything back and raises MigrationMismatch (exit 1).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.store import StoreError
from control.store.postgres import PostgresStore
from control.store.sqlite import SCHEMA_VERSION

# table -> columns, in the order both schemas share
COLUMNS: dict[str, tuple[str, ...]] = {
    "invalidations": ("seq", "scope", "value", "soft", "reason", "operator", "time", "client_id"),
    "applied": ("box", "seq", "time"),
    "drains": ("box", "operator", "time"),
    "audit": ("id", "time", "operator", "action", "subject", "detail"),
    "popularity": ("id", "time", "data"),
    "titles": ("id", "data", "mpd"),
    "rollouts": ("id", "created", "updated", "state", "data"),
    "replica_popularity": ("replica", "time", "data"),
    "bundles": ("sha256", "data"),
    "rollout_aborts": ("id", "operator", "time"),
}  # not leases: a single replica's lease means nothing to the replicas that take over


class MigrationMismatch(StoreError):
    """A table's row count in the target differs from the source's: nothing was committed."""


@dataclass(frozen=True)
class TableCount:
    table: str
    copied: int  # rows read from the source and written
    target: int  # rows the target holds, counted in the copying transaction

    def line(self) -> str:
        return f"{self.table}: copied {self.copied}, target has {self.target}"


def read_sqlite(path: str) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """Every row of the SQLite state at `path` by table, and the invalidations' AUTOINCREMENT high-water mark."""
    if not os.path.isfile(path):
        raise StoreError(f"{path}: no such state database")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open state database {path}: {exc}") from None
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"state database {path} has schema {version}; this version knows {SCHEMA_VERSION}")
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = {table: (db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall() if table in present else [])
                for table, cols in COLUMNS.items()}
        high = 0
        if "sqlite_sequence" in present:
            found = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'invalidations'").fetchone()
            high = int(found[0]) if found else 0
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read state database {path}: {exc}") from None
    finally:
        db.close()
    rows["invalidations"] = [(r[0], *r[1:3], bool(r[3]), *r[4:]) for r in rows["invalidations"]]
    return rows, high


def copy_state(source: str, target: PostgresStore, report: Callable[[TableCount], None]) -> list[TableCount]:
    """Copy the SQLite state at `source` into the (empty) PostgreSQL store `target`; `report` gets each count."""
    rows, high = read_sqlite(source)
    counts: list[TableCount] = []
    with target.transaction() as conn:
        for table in COLUMNS:
            held = int(conn.execute(f"SELECT COUNT(*) FROM {table}".encode()).fetchall()[0][0])
            if held:
                raise StoreError(f"{target.where} already holds {held} rows in {table}; "
                                 "migrate copies into an empty database only")
        for table, cols in COLUMNS.items():
            with conn.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN".encode()) as copy:
                for row in rows[table]:
                    copy.write_row(row)
        top = max((int(r[0]) for r in rows["invalidations"]), default=0)
        conn.execute(b"UPDATE counters SET value = %s WHERE name = 'invalidations'", (max(high, top),))
        conn.execute(b"SELECT setval(pg_get_serial_sequence('audit', 'id'), GREATEST(MAX(id), 1), MAX(id) IS NOT NULL) "
                     b"FROM audit")
        for table in COLUMNS:
            held = int(conn.execute(f"SELECT COUNT(*) FROM {table}".encode()).fetchall()[0][0])
            counts.append(TableCount(table, len(rows[table]), held))
            report(counts[-1])
        wrong = [c for c in counts if c.copied != c.target]
        if wrong:
            raise MigrationMismatch(f"{wrong[0].line()} (of {len(COLUMNS)} tables, {len(wrong)} differ); "
                                    f"nothing was committed to {target.where}")
    return counts
