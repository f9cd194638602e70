"""StateStore on PostgreSQL: the state several control-plane replicas share.

Rules kept here:
- psycopg 3 with a small psycopg_pool connection pool: the StateStore is blocking and thread-safe, so a
  blocking driver whose pool hands each calling thread its own connection is the whole of the concurrency.
  Each call takes a connection (checked with a round trip, so one the server dropped is replaced before
  use), runs one transaction, commits before returning and gives the connection back.
- Sequence numbers are dense: no SEQUENCE or IDENTITY (a rolled-back insert burns one of those). An append
  bumps the row `counters('invalidations')` with UPDATE ... RETURNING in the transaction that inserts the
  entry; the row lock orders concurrent appends from every replica, a rolled-back append rolls its number
  back, and the counter never goes down, so a number is never reused, even after a delete.
- Client ids stay idempotent across replicas: the client-id lookup runs after that row lock is taken, so
  a second append with the same id (from any replica) sees the first one committed (READ COMMITTED takes a
  new snapshot per statement) and returns it (created=False) or raises Conflict. UNIQUE(client_id) backs it.
- The schema is the numbered SQL files in control/store/migrations/, recorded in `oca_schema`; `open()`
  applies the missing ones in one transaction holding a transaction-scoped advisory lock, so replicas
  starting together apply each exactly once. A database with a newer version than this code knows is refused.
- No password in the URL (the config loader and the CLI refuse one): it comes from `password` (read from the
  file the config names) or libpq's own PGPASSWORD / PGPASSFILE.
- An unreachable database makes a call raise StoreError (503) with a one-line reason after at most
  `timeout` seconds; from then on each call makes one direct connection attempt instead of waiting on the
  pool (a refused connection fails at once), so a replica's writes, refreshes and lease renewals never queue
  behind each other's waits; the first call after the database is back works without reopening the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from control.catalog.codec import title_from_json, title_to_json
from control.model import Title
from control.store import AuditEntry, Invalidation, StoreError, audit_where
from oca.errors import Conflict

ADVISORY_LOCK = 0x6F63615F736368  # "oca_sch": the key migrations are applied under (per database)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
TABLES = ("invalidations", "counters", "applied", "drains", "audit", "popularity", "titles", "rollouts", "leases",
          "replica_popularity", "bundles", "rollout_aborts")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration shipped, in order; versions run 1, 2, 3 ... with no gap."""
    found = []
    for entry in resources.files("control.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _, _ in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"control/store/migrations: versions {[v for v, _, _ in found]} are not 1..{len(found)}")
    return found


def describe(url: str) -> str:
    """The database a URL names, for messages: postgresql://USER@HOST:PORT/DB (never a password)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://?"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


def has_password(url: str) -> bool:
    """True when the URL carries a password (user:password@ or ?password=); ValueError if it does not parse."""
    try:
        return bool(conninfo_to_dict(url).get("password"))
    except psycopg.Error as exc:
        raise ValueError(f"not a valid PostgreSQL URL: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStore:
    def __init__(self, pool: ConnectionPool, url: str, password: str | None, timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._password = password
        self._timeout = timeout
        self.where = describe(url)
        self._down = False  # the last call found the database away: the next ones try directly, not the pool

    @classmethod
    def open(cls, url: str, *, password: str | None = None, pool_size: int = 4, timeout: float = 5.0,
             connect_timeout: int = 5) -> PostgresStore:
        """Connect, apply the missing migrations (once, under the advisory lock) and return the store."""
        try:
            password_in_url = has_password(url)
        except ValueError as exc:
            raise StoreError(f"state database {describe(url)}: {exc}") from None
        if password_in_url:
            raise StoreError(f"{describe(url)}: a password in the URL is refused; use a password file, "
                             "PGPASSWORD or PGPASSFILE")
        kwargs: dict[str, Any] = {"connect_timeout": connect_timeout, "application_name": "oca-control"}
        if password is not None:
            kwargs["password"] = password
        # reconnect_timeout = timeout: a slot whose reconnection attempts (1 s, 2 s, ... apart) found no server
        # for that long is given up, and the next call starts a fresh attempt at once, so no call waits behind
        # a long back-off once the database is back
        pool = ConnectionPool(url, kwargs=kwargs, min_size=1, max_size=pool_size, open=False, timeout=timeout,
                              reconnect_timeout=timeout, check=ConnectionPool.check_connection, name="oca-state")
        store = cls(pool, url, password, timeout)
        reason = store._unreachable()  # one direct connection first: a refusal or a bad password fails at once
        try:
            if reason is None:
                pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            reason = store._unreachable() or f"no connection in {timeout:g}s"
        if reason is not None:
            pool.close()
            raise StoreError(f"cannot open state database {store.where}: {reason}")
        try:
            store._migrate()
        except BaseException:
            pool.close()
            raise
        return store

    def close(self) -> None:
        self._pool.close()

    def _unreachable(self) -> str | None:
        """Why the database cannot be reached (a direct attempt's one-line error), or None when it can."""
        try:
            with psycopg.connect(self._url, password=self._password, connect_timeout=2):
                return None
        except psycopg.Error as exc:
            return one_line(exc)

    def _getconn(self) -> psycopg.Connection[Any]:
        if self._down:  # known to be away: a direct attempt (refused at once), not a wait on the pool
            reason = self._unreachable()
            if reason is not None:
                raise StoreError(f"state database {self.where} unreachable: {reason}")
            self._down = False
        try:
            return self._pool.getconn()
        except PoolTimeout:
            pass
        reason = self._unreachable()
        if reason is not None:
            self._down = True
            raise StoreError(f"state database {self.where} unreachable: {reason}")
        try:  # reachable again: the pool was between reconnection attempts, and its next one comes within `timeout`
            return self._pool.getconn()
        except PoolTimeout:
            raise StoreError(f"state database {self.where}: no free connection in {self._timeout:g}s "
                             f"(pool of {self._pool.max_size})") from None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One connection from the pool, in one transaction: committed when the block ends, rolled back if it
        raises. Database and connection errors become StoreError naming the database."""
        conn = self._getconn()
        try:
            with conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"state database {self.where}: {one_line(exc)}") from None
        finally:
            self._pool.putconn(conn)

    def _rows(self, sql: bytes, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.transaction() as conn:
            return conn.execute(sql, args).fetchall()

    def _write(self, sql: bytes, args: tuple[Any, ...] = ()) -> None:
        with self.transaction() as conn:
            conn.execute(sql, args)

    def _migrate(self) -> None:
        shipped = migrations()
        with self.transaction() as conn:
            conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
            conn.execute(b"CREATE TABLE IF NOT EXISTS oca_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                         b"applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            applied = {int(r[0]) for r in conn.execute(b"SELECT version FROM oca_schema").fetchall()}
            newest = max(applied, default=0)
            if newest > len(shipped):
                raise StoreError(f"state database {self.where} has schema {newest}; this version knows {len(shipped)}")
            for version, name, sql in shipped:
                if version not in applied:
                    conn.execute(sql.encode())
                    conn.execute(b"INSERT INTO oca_schema (version, name) VALUES (%s, %s)", (version, name))

    def schema_version(self) -> int:
        return int(self._rows(b"SELECT COALESCE(MAX(version), 0) FROM oca_schema")[0][0])

    # -- invalidations ---------------------------------------------------------------------------------

    def append_invalidation(self, scope: str, value: str, *, soft: bool, reason: str, operator: str, time: float,
                            client_id: str | None = None) -> tuple[Invalidation, bool]:
        with self.transaction() as conn:
            # taking the counter's row lock first orders every append, on every replica
            seq = int(conn.execute(b"UPDATE counters SET value = value + 1 WHERE name = 'invalidations' "
                                   b"RETURNING value").fetchall()[0][0])
            if client_id is not None:
                row = conn.execute(b"SELECT * FROM invalidations WHERE client_id = %s", (client_id,)).fetchone()
                if row is not None:
                    conn.rollback()  # gives the number back
                    earlier = _invalidation(row)
                    if (earlier.scope, earlier.value, earlier.soft) != (scope, value, soft):
                        raise Conflict(f"invalidation id {client_id!r} was already used for "
                                       f"{earlier.scope} {earlier.value!r} (seq {earlier.seq})")
                    return earlier, False
            conn.execute(b"INSERT INTO invalidations (seq, scope, value, soft, reason, operator, time, client_id) "
                         b"VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                         (seq, scope, value, soft, reason, operator, time, client_id))
            conn.execute(b"INSERT INTO audit (time, operator, action, subject, detail) VALUES (%s, %s, %s, %s, %s)",
                         (time, operator, "invalidate", f"{scope}:{value}",
                          json.dumps({"seq": seq, "soft": soft, "reason": reason, "id": client_id})))
        return Invalidation(seq, scope, value, soft, reason, operator, time, client_id), True

    def invalidations_since(self, seq: int, limit: int = 1000) -> list[Invalidation]:
        rows = self._rows(b"SELECT * FROM invalidations WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit))
        return [_invalidation(r) for r in rows]

    def get_invalidation(self, seq: int) -> Invalidation | None:
        rows = self._rows(b"SELECT * FROM invalidations WHERE seq = %s", (seq,))
        return _invalidation(rows[0]) if rows else None

    def last_invalidation_seq(self) -> int:
        return int(self._rows(b"SELECT COALESCE(MAX(seq), 0) FROM invalidations")[0][0])

    def record_applied(self, box_id: str, seq: int, time: float) -> int:
        rows = self._rows(
            b"INSERT INTO applied (box, seq, time) VALUES (%s, %s, %s) ON CONFLICT (box) DO UPDATE SET "
            b"seq = GREATEST(applied.seq, excluded.seq), "
            b"time = CASE WHEN excluded.seq > applied.seq THEN excluded.time ELSE applied.time END RETURNING seq",
            (box_id, seq, time))
        return int(rows[0][0])

    def applied_seqs(self) -> dict[str, int]:
        return {box: int(seq) for box, seq in self._rows(b"SELECT box, seq FROM applied")}

    # -- drains and audit ------------------------------------------------------------------------------

    def set_drained(self, box_id: str, drained: bool, *, operator: str, time: float) -> None:
        with self.transaction() as conn:
            if drained:
                conn.execute(b"INSERT INTO drains (box, operator, time) VALUES (%s, %s, %s) ON CONFLICT (box) "
                             b"DO UPDATE SET operator = excluded.operator, time = excluded.time",
                             (box_id, operator, time))
            else:
                conn.execute(b"DELETE FROM drains WHERE box = %s", (box_id,))
            conn.execute(b"INSERT INTO audit (time, operator, action, subject, detail) VALUES (%s, %s, %s, %s, '{}')",
                         (time, operator, "drain" if drained else "undrain", box_id))

    def drained(self) -> frozenset[str]:
        return frozenset(r[0] for r in self._rows(b"SELECT box FROM drains"))

    def add_audit(self, *, time: float, operator: str, action: str, subject: str,
                  detail: Mapping[str, Any]) -> None:
        self._write(b"INSERT INTO audit (time, operator, action, subject, detail) VALUES (%s, %s, %s, %s, %s)",
                    (time, operator, action, subject, json.dumps(dict(detail))))

    def audit(self, limit: int = 100, *, action: str | None = None, subject: str | None = None,
              operator: str | None = None, since: float | None = None) -> list[AuditEntry]:
        where, params = audit_where(action, subject, operator, since, "%s")
        query = f"SELECT id, time, operator, action, subject, detail FROM audit{where} ORDER BY id DESC LIMIT %s"
        rows = self._rows(query.encode(), (*params, limit))
        return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in reversed(rows)]

    # -- popularity and catalog ------------------------------------------------------------------------

    def save_popularity(self, snapshot: Mapping[str, Any], time: float) -> None:
        self._write(b"INSERT INTO popularity (id, time, data) VALUES (1, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    b"time = excluded.time, data = excluded.data", (time, json.dumps(dict(snapshot))))

    def load_popularity(self) -> dict[str, Any] | None:
        rows = self._rows(b"SELECT data FROM popularity WHERE id = 1")
        if not rows:
            return None
        data = json.loads(rows[0][0])
        return data if isinstance(data, dict) else None

    def put_title(self, title: Title, mpd: str | None = None) -> None:
        self._write(b"INSERT INTO titles (id, data, mpd) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    b"data = excluded.data, mpd = excluded.mpd", (title.id, json.dumps(title_to_json(title)), mpd))

    def get_mpd(self, title_id: str) -> str | None:
        rows = self._rows(b"SELECT mpd FROM titles WHERE id = %s", (title_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def get_title(self, title_id: str) -> Title | None:
        rows = self._rows(b"SELECT data FROM titles WHERE id = %s", (title_id,))
        return title_from_json(json.loads(rows[0][0])) if rows else None

    def titles(self) -> list[Title]:
        return [title_from_json(json.loads(r[0]))
                for r in self._rows(b'SELECT data FROM titles ORDER BY id COLLATE "C"')]

    # -- firmware roll-outs ----------------------------------------------------------------------------

    def save_rollout(self, rollout_id: str, document: Mapping[str, Any], *, state: str, time: float) -> None:
        self._write(b"INSERT INTO rollouts (id, created, updated, state, data) VALUES (%s, %s, %s, %s, %s) "
                    b"ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, state = excluded.state, "
                    b"data = excluded.data", (rollout_id, time, time, state, json.dumps(dict(document))))

    def get_rollout(self, rollout_id: str) -> dict[str, Any] | None:
        rows = self._rows(b"SELECT data FROM rollouts WHERE id = %s", (rollout_id,))
        return _document(rows[0][0]) if rows else None

    def rollouts(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._rows(b'SELECT data FROM rollouts ORDER BY created DESC, id COLLATE "C" DESC LIMIT %s', (limit,))
        return [_document(r[0]) for r in rows]

    def put_bundle(self, sha256: str, data: bytes) -> None:
        self._write(b"INSERT INTO bundles (sha256, data) VALUES (%s, %s) ON CONFLICT (sha256) DO NOTHING",
                    (sha256, data))

    def get_bundle(self, sha256: str) -> bytes | None:
        rows = self._rows(b"SELECT data FROM bundles WHERE sha256 = %s", (sha256,))
        return bytes(rows[0][0]) if rows else None

    def prune_bundles(self, keep: Collection[str]) -> None:
        self._write(b"DELETE FROM bundles WHERE NOT (sha256 = ANY(%s))", (sorted(keep),))

    def request_abort(self, rollout_id: str, operator: str, time: float) -> None:
        self._write(b"INSERT INTO rollout_aborts (id, operator, time) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (rollout_id, operator, time))

    def abort_request(self, rollout_id: str) -> str | None:
        rows = self._rows(b"SELECT operator FROM rollout_aborts WHERE id = %s", (rollout_id,))
        return str(rows[0][0]) if rows else None

    # -- replicas --------------------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        # one statement: taking a free or expired lease and renewing one's own are atomic against every replica
        rows = self._rows(
            b"INSERT INTO leases (name, holder, until) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
            b"holder = excluded.holder, until = excluded.until WHERE leases.holder = excluded.holder "
            b"OR leases.until < %s RETURNING holder", (name, holder, now + ttl, now))
        return bool(rows) and rows[0][0] == holder

    def release_lease(self, name: str, holder: str) -> None:
        self._write(b"DELETE FROM leases WHERE name = %s AND holder = %s", (name, holder))

    def save_replica_popularity(self, replica: str, snapshot: Mapping[str, Any], time: float) -> None:
        self._write(b"INSERT INTO replica_popularity (replica, time, data) VALUES (%s, %s, %s) ON CONFLICT (replica) "
                    b"DO UPDATE SET time = excluded.time, data = excluded.data",
                    (replica, time, json.dumps(dict(snapshot))))

    def replica_popularity(self) -> dict[str, dict[str, Any]]:
        rows = self._rows(b"SELECT replica, data FROM replica_popularity")
        return {r[0]: data for r in rows if isinstance(data := json.loads(r[1]), dict)}


def _document(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise StoreError("a roll-out in the state database is not a JSON object")
    return data


def _invalidation(row: Any) -> Invalidation:
    seq, scope, value, soft, reason, operator, time, client_id = row
    return Invalidation(int(seq), scope, value, bool(soft), reason, operator, float(time), client_id)
