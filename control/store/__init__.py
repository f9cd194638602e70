"""The control plane's durable state behind one small interface: SQLite (one replica) or PostgreSQL (several).

What must survive a restart lives here and nowhere else: the invalidation log (sequence-numbered, idempotent
by a client-supplied id), operator drains, the audit log, popularity snapshots, the catalog, each box's
last applied invalidation sequence, and firmware roll-outs (a JSON document each, rewritten after every step).
Everything else (health, sessions' steering memory) is rebuilt live.

Rules every implementation keeps (tests/control/test_store.py runs one contract suite against each):
- Sequence numbers start at 1, increase by one per appended invalidation and are never reused.
- Appending with a client id already in the log returns the earlier entry (created=False) when the request is
  the same, and raises Conflict when the same id comes with a different request.
- A box's applied sequence only moves forward.
- A lease (take_lease) is held by one holder at a time: taken when free or expired (`until` < now), renewed
  only by its holder; the replicas' clocks are assumed within a fraction of the lease time (NTP).
- Methods are blocking and thread-safe; the service calls them from a worker thread.
- Every write is one transaction, committed before the call returns.
- A database that cannot be read or reached raises StoreError (503) with a one-line reason; a store whose
  database comes back answers again without being reopened.

`open_store(target)` opens either backend from the config's `state:` value: `sqlite:PATH` or
`postgresql://USER@HOST:PORT/DB` (never with a password in it: see control/store/postgres.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from control.model import Title
from oca.errors import OcaError
from oca.wire.invalidation import SCOPES, Invalidation

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StoreError(OcaError):
    """The state database cannot be opened, read or written: the API answers 503, the CLI exits 1."""

    status = 503
    exit_code = 1


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    time: float
    operator: str
    action: str  # invalidate | drain | undrain | catalog
    subject: str
    detail: Mapping[str, Any]

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "operator": self.operator, "action": self.action,
                "subject": self.subject, "detail": dict(self.detail)}


def audit_where(action: str | None, subject: str | None, operator: str | None, since: float | None,
                mark: str) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (with `mark` as the parameter placeholder) and parameters of the audit filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("action", action), ("subject", subject), ("operator", operator)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if since is not None:
        clauses.append(f"time >= {mark}")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


class StateStore(Protocol):
    def append_invalidation(self, scope: str, value: str, *, soft: bool, reason: str, operator: str, time: float,
                            client_id: str | None = None) -> tuple[Invalidation, bool]: ...

    def invalidations_since(self, seq: int, limit: int = 1000) -> list[Invalidation]: ...

    def get_invalidation(self, seq: int) -> Invalidation | None: ...

    def last_invalidation_seq(self) -> int: ...

    def record_applied(self, box_id: str, seq: int, time: float) -> int: ...

    def applied_seqs(self) -> dict[str, int]: ...

    def set_drained(self, box_id: str, drained: bool, *, operator: str, time: float) -> None: ...

    def drained(self) -> frozenset[str]: ...

    def add_audit(self, *, time: float, operator: str, action: str, subject: str,
                  detail: Mapping[str, Any]) -> None: ...

    def audit(self, limit: int = 100, *, action: str | None = None, subject: str | None = None,
              operator: str | None = None, since: float | None = None) -> list[AuditEntry]:
        """The newest `limit` entries (oldest first) that match every filter given (`since`: epoch seconds)."""
        ...

    def save_popularity(self, snapshot: Mapping[str, Any], time: float) -> None: ...

    def load_popularity(self) -> dict[str, Any] | None: ...

    def put_title(self, title: Title, mpd: str | None = None) -> None: ...  # mpd: the packaged MPD text

    def get_mpd(self, title_id: str) -> str | None: ...

    def get_title(self, title_id: str) -> Title | None: ...

    def titles(self) -> list[Title]: ...

    def save_rollout(self, rollout_id: str, document: Mapping[str, Any], *, state: str, time: float) -> None: ...

    def get_rollout(self, rollout_id: str) -> dict[str, Any] | None: ...

    def rollouts(self, limit: int = 50) -> list[dict[str, Any]]: ...  # newest first

    # what several replicas share (schema 3 / migration 0002)
    def put_bundle(self, sha256: str, data: bytes) -> None: ...  # a roll-out's bundle, for whichever replica leads

    def get_bundle(self, sha256: str) -> bytes | None: ...

    def prune_bundles(self, keep: Collection[str]) -> None: ...  # drop every bundle but these

    def request_abort(self, rollout_id: str, operator: str, time: float) -> None: ...

    def abort_request(self, rollout_id: str) -> str | None: ...  # who asked, if anyone did

    def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool: ...

    def release_lease(self, name: str, holder: str) -> None: ...

    def save_replica_popularity(self, replica: str, snapshot: Mapping[str, Any], time: float) -> None: ...

    def replica_popularity(self) -> dict[str, dict[str, Any]]: ...  # replica -> its last snapshot

    def close(self) -> None: ...


def open_store(target: str, *, password: str | None = None) -> StateStore:
    """The store `target` names: `sqlite:PATH` or a postgresql:// URL (`password` from a file, if any; libpq
    also reads PGPASSWORD and PGPASSFILE). ValueError for any other form."""
    if target.startswith("sqlite:"):
        from control.store.sqlite import SQLiteStore

        return SQLiteStore.open(target.removeprefix("sqlite:"))
    if target.startswith(POSTGRES_SCHEMES):
        from control.store.postgres import PostgresStore

        return PostgresStore.open(target, password=password)
    raise ValueError(f"expected sqlite:PATH or postgresql://USER@HOST:PORT/DB, got {target!r}")


__all__ = ["POSTGRES_SCHEMES", "SCOPES", "AuditEntry", "Invalidation", "StateStore", "StoreError", "open_store"]
