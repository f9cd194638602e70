"""`oca control migrate --from sqlite:PATH --to postgresql://...`: a real SQLite state copied into the PostgreSQL
cluster the tests start, counts printed and checked, run as the `oca` command."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from control.model import CatalogFile, Rendition, Title
from control.store.postgres import PostgresStore
from control.store.sqlite import SQLiteStore
from tests.conftest import OCA, ROOT
from tests.postgres import PostgresCluster

TITLE = Title("42", (Rendition("720p", "video", 2_000_000, "avc1.4d401f", (1280, 720), None, 25.0,
                               "titles/42/720p/index.m3u8"),),
              (CatalogFile("titles/42/720p/index.m3u8", 10, "0" * 32),), frozenset({"NL"}),
              "titles/42/master.m3u8", "titles/42/manifest.mpd", 5.0)


def _sqlite_state(path: str) -> None:
    store = SQLiteStore.open(path)
    for i in range(1, 5):
        store.append_invalidation("prefix", f"titles/{i}/", soft=i % 2 == 0, reason="r", operator="alice",
                                  time=float(i), client_id=f"op-{i}")
    store.record_applied("b1", 3, 5.0)
    store.set_drained("b2", True, operator="bob", time=6.0)
    store.add_audit(time=7.0, operator="carol", action="catalog", subject="42", detail={"files": 1})
    store.save_popularity({"version": 1, "counters": {"lab": {"42": [1.5, 10.0]}}}, 8.0)
    store.put_title(TITLE, "<MPD/>")
    store.save_rollout("r1", {"id": "r1", "step": 2}, state="done", time=9.0)
    store.save_replica_popularity("c1", {"version": 1, "counters": {}}, 9.5)
    store.put_bundle("ab" * 32, b"bundle bytes")
    store.request_abort("r1", "dave", 9.7)
    store.take_lease("rollouts", "c1", now=9.8, ttl=10)  # not copied: the new replicas take their own
    store.close()
    store = SQLiteStore.open(path)  # the newest entry deleted: its number must still never come back
    store._write("DELETE FROM invalidations WHERE seq = 4")
    store.close()


def _migrate(*args: str, password_file: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("PGPASSWORD", None)
    extra = ["--password-file", password_file] if password_file else []
    return subprocess.run([OCA, "control", "migrate", *args, *extra], capture_output=True, text=True, timeout=120,
                          env=env)


def test_a_sqlite_state_is_copied_with_its_counts(tmp_path: Any, postgres_cluster: PostgresCluster) -> None:
    source = str(tmp_path / "state.db")
    _sqlite_state(source)
    database = postgres_cluster.create_database()
    url = postgres_cluster.url(database)
    done = _migrate("--from", f"sqlite:{source}", "--to", url,
                    password_file=postgres_cluster.password_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "invalidations: copied 3, target has 3", "applied: copied 1, target has 1", "drains: copied 1, target has 1",
        "audit: copied 6, target has 6", "popularity: copied 1, target has 1", "titles: copied 1, target has 1",
        "rollouts: copied 1, target has 1", "replica_popularity: copied 1, target has 1",
        "bundles: copied 1, target has 1", "rollout_aborts: copied 1, target has 1",
        f"migrated {source} to {url}: 17 rows in 10 tables"]
    before = SQLiteStore.open(source)
    after = PostgresStore.open(url, password=postgres_cluster.password)
    assert after.invalidations_since(0) == before.invalidations_since(0)
    assert [e.json() for e in after.audit()] == [e.json() for e in before.audit()]
    assert (after.applied_seqs(), after.drained()) == (before.applied_seqs(), before.drained())
    assert after.load_popularity() == before.load_popularity()
    assert after.titles() == [TITLE] and after.get_mpd("42") == "<MPD/>"
    assert after.rollouts() == before.rollouts() == [{"id": "r1", "step": 2}]
    entry, created = after.append_invalidation("key", "k", soft=False, reason="r", operator="dave", time=10.0)
    assert created and entry.seq == 5  # after 4, deleted in SQLite: never reused
    assert after.append_invalidation("prefix", "titles/1/", soft=False, reason="r", operator="x", time=11.0,
                                     client_id="op-1")[1] is False  # client ids came along
    after.add_audit(time=12.0, operator="dave", action="catalog", subject="43", detail={})
    assert [e.id for e in after.audit()][-3:] == [6, 7, 8]  # the audit ids continue after the copied ones
    before.close()
    after.close()

    again = _migrate("--from", f"sqlite:{source}", "--to", url,
                     password_file=postgres_cluster.password_file)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip().count("\n") == 0
    assert "already holds 4 rows in invalidations; migrate copies into an empty database only" in again.stderr


def test_a_count_mismatch_exits_1_and_commits_nothing(tmp_path: Any, postgres_cluster: PostgresCluster) -> None:
    source = str(tmp_path / "state.db")
    _sqlite_state(source)
    database = postgres_cluster.create_database()
    PostgresStore.open(postgres_cluster.url(database), password=postgres_cluster.password).close()
    postgres_cluster.execute(  # a target that silently drops drains: the count check must notice
        "CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';"
        "CREATE TRIGGER skip_drains BEFORE INSERT ON drains FOR EACH ROW EXECUTE FUNCTION skip()", database)
    done = _migrate("--from", f"sqlite:{source}", "--to", postgres_cluster.url(database),
                    password_file=postgres_cluster.password_file)
    assert done.returncode == 1, done.stderr
    assert "drains: copied 1, target has 0" in done.stdout
    assert done.stderr.strip().count("\n") == 0
    assert "drains: copied 1, target has 0 (of 10 tables, 1 differ); nothing was committed" in done.stderr
    assert postgres_cluster.execute("SELECT COUNT(*) FROM invalidations", database) == [(0,)]


def test_bad_arguments_are_one_line(tmp_path: Any, postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.url(postgres_cluster.create_database())
    secret = url.replace("oca@", "oca:hunter2@")
    for args, code, message in [
        (["--from", f"sqlite:{tmp_path}/x.db", "--to", secret], 2, "--to: a password in the URL is refused"),
        (["--from", f"{tmp_path}/x.db", "--to", url], 2, "--from: expected sqlite:PATH"),
        (["--from", "sqlite:x.db", "--to", "mysql://db/x"], 2, "--to: expected postgresql://"),
        (["--from", f"sqlite:{tmp_path}/none.db", "--to", url], 1, f"{tmp_path}/none.db: no such state database"),
    ]:
        done = _migrate(*args, password_file=postgres_cluster.password_file)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr and done.stderr.strip().count("\n") == 0 and "hunter2" not in done.stderr
    done = _migrate("--from", f"sqlite:{tmp_path}/none.db", "--to", url)  # no password at all
    assert done.returncode == 1 and "cannot open state database" in done.stderr and "password" in done.stderr
