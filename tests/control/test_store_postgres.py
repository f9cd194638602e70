"""What only the PostgreSQL store has to show: several replicas on one database (dense sequence numbers,
idempotent client ids, migrations applied once), passwords kept out of URLs, and an outage survived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from control.store import StoreError, open_store
from control.store.postgres import PostgresStore, migrations
from oca.errors import Conflict
from tests.postgres import PostgresCluster


def _open(cluster: PostgresCluster, database: str, **options: Any) -> PostgresStore:
    return PostgresStore.open(cluster.url(database), password=cluster.password, **options)


def _together(workers: list[Callable[[], None]]) -> None:
    """Run the workers in threads released at the same moment; re-raise the first failure."""
    barrier = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if failures:
        raise failures[0]


def _append(store: PostgresStore, value: str, client_id: str | None = None, operator: str = "alice") -> Any:
    return store.append_invalidation("prefix", value, soft=False, reason="test", operator=operator, time=1.0,
                                     client_id=client_id)


def test_two_replicas_appending_1000_invalidations_get_1_to_1000(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    replicas = [_open(postgres_cluster, database), _open(postgres_cluster, database)]
    seqs: list[list[int]] = [[] for _ in range(4)]

    def work(n: int) -> Callable[[], None]:
        def append() -> None:  # two threads per replica, 250 appends each
            for i in range(250):
                seqs[n].append(_append(replicas[n % 2], f"titles/{n}-{i}/", f"id-{n}-{i}")[0].seq)
        return append

    started = time.monotonic()
    _together([work(n) for n in range(4)])
    assert sorted(s for part in seqs for s in part) == list(range(1, 1001)), "a gap or a duplicate"
    assert all(part == sorted(part) for part in seqs)  # each caller sees its own appends in order
    assert replicas[0].last_invalidation_seq() == replicas[1].last_invalidation_seq() == 1000
    assert [e.seq for e in replicas[1].invalidations_since(0, limit=1000)] == list(range(1, 1001))
    assert len(replicas[0].audit(limit=2000)) == 1000
    assert time.monotonic() - started < 60
    for store in replicas:
        store.close()


def test_the_same_client_id_from_two_replicas_at_once_is_one_entry(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    replicas = [_open(postgres_cluster, database) for _ in range(2)]
    results: list[tuple[str, int, bool]] = []

    def same(n: int) -> Callable[[], None]:  # four callers, two per replica, the same 30 requests
        def append() -> None:
            for i in range(30):
                entry, created = _append(replicas[n % 2], f"titles/{i}/", f"op-{i}")
                results.append((f"op-{i}", entry.seq, created))
        return append

    _together([same(n) for n in range(4)])
    entries = replicas[1].invalidations_since(0)
    assert [e.seq for e in entries] == list(range(1, 31))  # one entry per id, numbers dense
    seq_of = {e.client_id: e.seq for e in entries}
    assert sorted(seq_of) == sorted(f"op-{i}" for i in range(30))
    assert all(seq == seq_of[cid] for cid, seq, _ in results)  # everyone got the one entry
    assert sorted(cid for cid, _, created in results if created) == sorted(seq_of)  # created once per id
    for replica in replicas:
        replica.close()


def test_the_same_client_id_for_two_requests_at_once_is_a_conflict(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    replicas = [_open(postgres_cluster, database) for _ in range(2)]
    conflicts: list[str] = []

    def one(n: int) -> Callable[[], None]:  # each replica: the same ids, its own values
        def append() -> None:
            for i in range(30):
                try:
                    _append(replicas[n], f"replica{n}/{i}/", f"op-{i}")
                except Conflict as exc:
                    conflicts.append(str(exc))
        return append

    _together([one(0), one(1)])
    entries = replicas[0].invalidations_since(0)
    assert [e.seq for e in entries] == list(range(1, 31)) and len(conflicts) == 30
    assert all(f"'op-{i}'" in " ".join(conflicts) for i in range(30))
    for replica in replicas:
        replica.close()


def test_a_rolled_back_append_gives_its_number_back(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    store = _open(postgres_cluster, database)
    assert _append(store, "titles/1/")[0].seq == 1
    postgres_cluster.execute("ALTER TABLE audit ADD CONSTRAINT no_mallory CHECK (operator <> 'mallory')", database)
    with pytest.raises(StoreError, match="no_mallory") as caught:  # the audit insert fails after the seq was taken
        _append(store, "titles/2/", operator="mallory")
    assert caught.value.status == 503 and "\n" not in str(caught.value)
    with pytest.raises(Conflict):
        _append(store, "titles/3/", "op-1") and _append(store, "titles/4/", "op-1")
    assert [(e.seq, e.value) for e in store.invalidations_since(0)] == [(1, "titles/1/"), (2, "titles/3/")]
    assert _append(store, "titles/5/")[0].seq == 3
    store.close()


def test_a_deleted_number_is_never_reused(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    store = _open(postgres_cluster, database)
    _append(store, "titles/1/")
    _append(store, "titles/2/")
    postgres_cluster.execute("DELETE FROM invalidations WHERE seq = 2", database)
    assert _append(store, "titles/3/")[0].seq == 3
    store.close()


def test_replicas_starting_together_apply_each_migration_once(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    stores: list[PostgresStore] = []
    _together([lambda: stores.append(_open(postgres_cluster, database)) for _ in range(6)])
    shipped = migrations()
    rows = postgres_cluster.execute("SELECT version, name FROM oca_schema ORDER BY version", database)
    assert rows == [(v, name) for v, name, _ in shipped] and len(stores) == 6
    assert all(s.schema_version() == len(shipped) for s in stores)
    for store in stores:
        store.close()
    _open(postgres_cluster, database).close()  # reopening applies nothing (a second CREATE TABLE would fail)
    assert postgres_cluster.execute("SELECT COUNT(*) FROM oca_schema", database) == [(len(shipped),)]


def test_a_newer_schema_is_refused(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    _open(postgres_cluster, database).close()
    postgres_cluster.execute("INSERT INTO oca_schema (version, name) VALUES (99, '0099_future.sql')", database)
    with pytest.raises(StoreError, match=r"has schema 99; this version knows \d+"):
        _open(postgres_cluster, database)


def test_a_password_comes_from_a_file_or_libpq_never_the_url(postgres_cluster: PostgresCluster,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    database = postgres_cluster.create_database()
    url = postgres_cluster.url(database)
    secret_url = url.replace("oca@", f"oca:{postgres_cluster.password}@")
    with pytest.raises(StoreError, match="password in the URL is refused") as caught:
        PostgresStore.open(secret_url)
    assert postgres_cluster.password not in str(caught.value)
    with pytest.raises(StoreError, match="password in the URL is refused"):
        PostgresStore.open(url + f"?password={postgres_cluster.password}")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(StoreError, match=r"cannot open state database .*password") as caught:
        PostgresStore.open(url, timeout=1)
    assert caught.value.status == 503 and "\n" not in str(caught.value)
    monkeypatch.setenv("PGPASSWORD", postgres_cluster.password)
    store = open_store(url)  # libpq reads PGPASSWORD
    assert isinstance(store, PostgresStore) and store.last_invalidation_seq() == 0
    store.close()


def test_an_unreachable_database_is_503_and_the_pool_reconnects(postgres_cluster: PostgresCluster) -> None:
    database = postgres_cluster.create_database()
    store = _open(postgres_cluster, database, timeout=1)
    assert _append(store, "titles/1/")[0].seq == 1
    postgres_cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="unreachable") as caught:
            store.last_invalidation_seq()
        assert time.monotonic() - started < 10
        assert caught.value.status == 503 and "\n" not in str(caught.value)
        assert "127.0.0.1" in str(caught.value) and database in str(caught.value)
        with pytest.raises(StoreError) as caught:
            _append(store, "titles/2/")
        assert caught.value.status == 503
        with pytest.raises(StoreError, match="cannot open state database"):
            _open(postgres_cluster, database, timeout=1)
    finally:
        postgres_cluster.start()
    assert _append(store, "titles/2/")[0].seq == 2  # the same store, not reopened
    assert store.last_invalidation_seq() == 2
    store.close()
