"""The StateStore contract, run against every implementation: SQLite, and PostgreSQL on a real server started
by the tests (tests/postgres.py; each test gets a database of its own)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from control.model import CatalogFile, Rendition, Title
from control.store import StateStore
from control.store.postgres import PostgresStore
from control.store.sqlite import SQLiteStore, StoreError
from oca.errors import Conflict


class Opener:
    """Opens the store under test (again and again, on the same database) and reaches its database directly."""

    def __init__(self, backend: str, tmp_path: Any, cluster: Any) -> None:
        self.backend, self.cluster = backend, cluster
        self.path = str(tmp_path / "state" / "control.db")
        self.database = cluster.create_database() if cluster is not None else ""
        self.opened: list[StateStore] = []

    def __call__(self) -> StateStore:
        if self.backend == "postgresql":
            store: StateStore = PostgresStore.open(self.cluster.url(self.database), password=self.cluster.password)
        else:
            store = SQLiteStore.open(self.path)
        self.opened.append(store)
        return store

    def execute(self, sql: str) -> None:
        """One statement on the database, behind the store's back."""
        if self.backend == "postgresql":
            self.cluster.execute(sql, self.database)
        else:
            with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
                db.execute(sql)


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: Any, tmp_path: Any) -> Iterator[Opener]:
    cluster = request.getfixturevalue("postgres_cluster") if request.param == "postgresql" else None
    opener = Opener(request.param, tmp_path, cluster)
    yield opener
    for store in opener.opened:
        with contextlib.suppress(Exception):
            store.close()


def _append(store: StateStore, value: str, client_id: str | None = None, soft: bool = False) -> Any:
    return store.append_invalidation("prefix", value, soft=soft, reason="test", operator="alice", time=1.0,
                                     client_id=client_id)


def test_sequence_numbers_increase_and_survive_reopen(opener: Opener) -> None:
    store = opener()
    assert store.last_invalidation_seq() == 0
    seqs = [_append(store, f"titles/{i}/")[0].seq for i in range(3)]
    assert seqs == [1, 2, 3]
    store.close()
    store = opener()
    assert store.last_invalidation_seq() == 3
    assert [e.value for e in store.invalidations_since(1)] == ["titles/1/", "titles/2/"]
    assert store.invalidations_since(0, limit=1)[0].seq == 1
    entry = store.get_invalidation(2)
    assert entry is not None and entry.operator == "alice" and entry.reason == "test"
    assert store.get_invalidation(9) is None
    assert _append(store, "titles/9/")[0].seq == 4


def test_client_ids_make_appends_idempotent(opener: Opener) -> None:
    store = opener()
    first, created = _append(store, "titles/1/", "op-1")
    again, created_again = _append(store, "titles/1/", "op-1")
    assert created and not created_again and again == first
    assert store.last_invalidation_seq() == 1
    with pytest.raises(Conflict, match="op-1"):
        _append(store, "titles/2/", "op-1")
    store.close()
    store = opener()
    assert _append(store, "titles/1/", "op-1") == (first, False)


def test_concurrent_appends_get_distinct_sequences(opener: Opener) -> None:
    store = opener()
    results: list[int] = []

    def work(n: int) -> None:
        for i in range(20):
            results.append(_append(store, f"titles/{n}-{i}/", f"id-{n}-{i}")[0].seq)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 81))


def test_applied_sequences_only_move_forward(opener: Opener) -> None:
    store = opener()
    assert store.record_applied("b1", 5, 1.0) == 5
    assert store.record_applied("b1", 3, 2.0) == 5
    assert store.record_applied("b2", 1, 2.0) == 1
    store.close()
    assert opener().applied_seqs() == {"b1": 5, "b2": 1}


def test_drains_and_audit_survive_reopen(opener: Opener) -> None:
    store = opener()
    store.set_drained("b1", True, operator="alice", time=1.0)
    store.set_drained("b2", True, operator="alice", time=2.0)
    store.set_drained("b2", False, operator="bob", time=3.0)
    _append(store, "titles/1/")
    store.add_audit(time=4.0, operator="carol", action="catalog", subject="42", detail={"files": 3})
    store.close()
    store = opener()
    assert store.drained() == frozenset({"b1"})
    actions = [(e.operator, e.action, e.subject) for e in store.audit()]
    assert actions == [("alice", "drain", "b1"), ("alice", "drain", "b2"), ("bob", "undrain", "b2"),
                       ("alice", "invalidate", "prefix:titles/1/"), ("carol", "catalog", "42")]
    assert store.audit(limit=1)[0].detail == {"files": 3}
    filtered = {  # the filters `GET /v1/audit` (`oca audit`) passes down: every one given must match
        "action": [(e.operator, e.subject) for e in store.audit(action="drain")],
        "subject": [(e.operator, e.action) for e in store.audit(subject="b2", operator="bob")],
        "since": [e.action for e in store.audit(since=3.0)],
        "limit": [e.subject for e in store.audit(operator="alice", limit=2)],
        "none": [e.subject for e in store.audit(action="drain", subject="42")],
    }
    assert filtered == {"action": [("alice", "b1"), ("alice", "b2")], "subject": [("bob", "undrain")],
                        "since": ["undrain", "catalog"],
                        "limit": ["b2", "prefix:titles/1/"], "none": []}


def test_popularity_snapshot_and_titles(opener: Opener) -> None:
    store = opener()
    assert store.load_popularity() is None and store.titles() == []
    store.save_popularity({"version": 1, "counters": {"lab": {"42": [1.5, 10.0]}}}, 10.0)
    title = Title("42", (Rendition("720p", "video", 2_000_000, "avc1.4d401f", (1280, 720), None, 25.0,
                                   "titles/42/720p/index.m3u8"),),
                  (CatalogFile("titles/42/720p/index.m3u8", 10, "0" * 32),), frozenset({"NL"}),
                  "titles/42/master.m3u8", "titles/42/manifest.mpd", 5.0)
    store.put_title(title, "<MPD/>")
    store.close()
    store = opener()
    assert store.load_popularity() == {"version": 1, "counters": {"lab": {"42": [1.5, 10.0]}}}
    assert store.get_title("42") == title and store.titles() == [title]
    assert store.get_mpd("42") == "<MPD/>" and store.get_mpd("43") is None and store.get_title("43") is None


def test_a_database_error_is_a_503_naming_the_database_and_the_store_goes_on(opener: Opener) -> None:
    store = opener()
    _append(store, "titles/1/")
    opener.execute("DROP TABLE drains")
    with pytest.raises(StoreError, match="drains") as caught:  # the transaction's first write fails
        store.set_drained("b1", True, operator="alice", time=1.0)
    assert caught.value.status == 503 and "\n" not in str(caught.value)
    assert ("control.db" if opener.backend == "sqlite" else opener.database) in str(caught.value)
    assert _append(store, "titles/2/")[0].seq == 2  # nothing was left half-done
    assert [e.action for e in store.audit()] == ["invalidate", "invalidate"]


def test_a_newer_schema_is_refused(tmp_path: Any) -> None:
    path = str(tmp_path / "db")
    SQLiteStore.open(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="schema 99"):
        SQLiteStore.open(path)


def test_the_database_is_in_wal_mode(tmp_path: Any) -> None:
    path = str(tmp_path / "db")
    store = SQLiteStore.open(path)
    _append(store, "titles/1/")
    assert os.path.exists(path + "-wal")
    store.close()


def test_rollouts_are_documents_rewritten_in_place_newest_first(opener: Opener) -> None:
    store = opener()
    assert store.rollouts() == [] and store.get_rollout("r1") is None
    store.save_rollout("r1", {"id": "r1", "step": 1}, state="running", time=1.0)
    store.save_rollout("r2", {"id": "r2", "step": 0}, state="running", time=2.0)
    store.save_rollout("r1", {"id": "r1", "step": 2}, state="done", time=3.0)
    store.close()
    store = opener()
    assert store.get_rollout("r1") == {"id": "r1", "step": 2}
    assert [r["id"] for r in store.rollouts()] == ["r2", "r1"]  # by creation, not by last update
    assert [r["id"] for r in store.rollouts(limit=1)] == ["r2"]


def test_a_version_1_database_gains_the_rollouts_table(tmp_path: Any) -> None:
    path = str(tmp_path / "db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE drains (box TEXT PRIMARY KEY, operator TEXT NOT NULL, time REAL NOT NULL)")
    db.execute("INSERT INTO drains VALUES ('b1', 'alice', 1.0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = SQLiteStore.open(path)
    assert store.drained() == frozenset({"b1"})
    store.save_rollout("r1", {"id": "r1"}, state="running", time=1.0)
    assert store.get_rollout("r1") == {"id": "r1"}


def test_a_lease_has_one_holder_until_it_expires_and_only_its_holder_renews_it(opener: Opener) -> None:
    a, b = opener(), opener()  # two replicas on the same database
    assert a.take_lease("rollouts", "c1", now=100.0, ttl=10.0)
    assert not b.take_lease("rollouts", "c2", now=105.0, ttl=10.0)  # held until 110
    assert a.take_lease("rollouts", "c1", now=108.0, ttl=10.0)  # renewed until 118
    assert not b.take_lease("rollouts", "c2", now=115.0, ttl=10.0)
    assert b.take_lease("rollouts", "c2", now=118.5, ttl=10.0)  # expired: taken over
    assert not a.take_lease("rollouts", "c1", now=119.0, ttl=10.0)
    b.release_lease("rollouts", "c1")  # not the holder: nothing happens
    assert not a.take_lease("rollouts", "c1", now=119.5, ttl=10.0)
    b.release_lease("rollouts", "c2")
    assert a.take_lease("rollouts", "c1", now=120.0, ttl=10.0)
    assert b.take_lease("other", "c2", now=120.0, ttl=10.0)  # leases are per name


def test_replicas_keep_their_own_popularity_bundles_and_abort_requests(opener: Opener) -> None:
    a, b = opener(), opener()
    a.save_replica_popularity("c1", {"version": 1, "counters": {"s": {"t": [1.0, 5.0]}}}, 5.0)
    b.save_replica_popularity("c2", {"version": 1, "counters": {}}, 6.0)
    a.save_replica_popularity("c1", {"version": 1, "counters": {"s": {"t": [2.0, 7.0]}}}, 7.0)
    assert b.replica_popularity() == {"c1": {"version": 1, "counters": {"s": {"t": [2.0, 7.0]}}},
                                      "c2": {"version": 1, "counters": {}}}
    a.put_bundle("aa" * 32, b"\x00bundle\xff")
    a.put_bundle("aa" * 32, b"ignored: same digest, same bytes")
    a.put_bundle("bb" * 32, b"second")
    assert b.get_bundle("aa" * 32) == b"\x00bundle\xff" and b.get_bundle("cc" * 32) is None
    b.prune_bundles({"bb" * 32})
    assert a.get_bundle("aa" * 32) is None and a.get_bundle("bb" * 32) == b"second"
    assert a.abort_request("r1") is None
    b.request_abort("r1", "alice", 9.0)
    b.request_abort("r1", "bob", 9.5)  # the first request stands
    assert a.abort_request("r1") == "alice"
