"""Restarts: the index survives close/reopen, and a missing or damaged index is rebuilt from the sidecars."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from oca.config.model import StorageConfig
from oca.storage import Store
from oca.storage import index as index_module
from oca.storage.layout import Sidecar, key_hash
from tests.clock import FakeClock

from .conftest import assert_consistent, blob, digest_of, storage_config, tier_files

Src = Callable[..., str]


def fill(store: Store, src: Src, count: int = 40) -> None:
    for i in range(count):
        store.put_file(src(size=50 + i, seed=i), f"titles/{i % 4}/seg{i:03d}", hot=i % 5 == 0, pin=i % 7 == 0)


def reopen(config: StorageConfig, clock: FakeClock) -> Store:
    return Store.open(config, clock)


def test_close_and_reopen_keeps_everything(config: StorageConfig, clock: FakeClock, src: Src) -> None:
    with Store.open(config, clock) as store:
        fill(store, src)
        before = store.list()
    with reopen(config, clock) as store:
        assert store.list() == before
        assert store.pinned() == [i for i in before if i.pinned]  # the pinned set is made as the catalog loads
        assert_consistent(store)


def test_lru_order_survives_a_restart(tmp_path: Path, clock: FakeClock, src: Src) -> None:
    config = storage_config(tmp_path, ssd=300, hdd=500)
    with Store.open(config, clock) as store:
        for i in range(5):
            store.put_file(src(size=100, seed=i), f"k{i}")
            clock.advance(1)
        store.record_hits({"k0": 1})
    with reopen(config, clock) as store:
        store.put_file(src(size=100), "k5")
        assert store.get("k0") is not None and store.get("k1") is None


def test_last_access_is_written_in_batches(config: StorageConfig, clock: FakeClock, src: Src) -> None:
    def stored_access(key: str) -> float:
        with sqlite3.connect(os.path.join(config.state_dir, "index.sqlite")) as db:
            value: float = db.execute("SELECT last_access FROM objects WHERE key = ?", (key,)).fetchone()[0]
            return value

    with Store.open(config, clock) as store:
        store.put_file(src(), "k")
        put_at = clock.now
        clock.advance(0.5)
        store.record_hits({"k": 1})
        assert stored_access("k") == put_at  # not yet: within access_flush_interval (1 s)
        clock.advance(0.6)
        store.record_hits({"k": 1})
        assert stored_access("k") == clock.now


def damage_delete(path: Path) -> None:
    path.unlink()


def damage_truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def damage_garbage(path: Path) -> None:
    path.write_bytes(blob(path.stat().st_size, "garbage"))


def damage_zero_length(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [damage_delete, damage_truncate, damage_garbage, damage_zero_length])
def test_damaged_index_is_rebuilt_with_the_same_objects(config: StorageConfig, clock: FakeClock, src: Src,
                                                        damage: Callable[[Path], None],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oca.storage")
    with Store.open(config, clock) as store:
        fill(store, src, count=60)
        before = store.list()
    index_file = Path(config.state_dir) / "index.sqlite"
    assert index_file.stat().st_size >= 5 * 4096  # halving it cuts into the tables
    damage(index_file)
    caplog.clear()
    with reopen(config, clock) as store:
        assert "building one by scanning" in caplog.text or "rebuilding the storage index" in caplog.text
        assert store.list() == before
        assert_consistent(store)
    with sqlite3.connect(index_file) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_rebuild_deletes_junk_and_temp_files(config: StorageConfig, clock: FakeClock, src: Src,
                                             tmp_path: Path) -> None:
    with Store.open(config, clock) as store:
        good = store.put_file(src(size=100, seed=1), "good")
        no_meta = store.put_file(src(size=100, seed=2), "no-meta")
        no_object = store.put_file(src(size=100, seed=3), "no-object")
        short = store.put_file(src(size=100, seed=4), "short")
        wrong_key = store.put_file(src(size=100, seed=5), "wrong-key")
    os.unlink(no_meta.path + ".meta")
    os.unlink(no_object.path)
    with open(short.path, "r+b") as f:
        f.truncate(60)
    Path(wrong_key.path + ".meta").write_text(Path(good.path + ".meta").read_text())
    stray = tmp_path / "hdd/objects/zz"
    stray.write_text("junk")
    (tmp_path / "hdd/tmp/obj-leftover").write_bytes(b"partial")
    os.unlink(os.path.join(config.state_dir, "index.sqlite"))
    with reopen(config, clock) as store:
        # the short object's sidecar is trusted (every write makes the bytes durable first); damage found
        # later is a hit's to find (tests/serve/test_faults.py)
        assert [i.key for i in store.list()] == ["good", "short"]
        assert [i.size for i in store.list()] == [100, 100]
        assert tier_files(str(tmp_path / "hdd")) == sorted([good.path, good.path + ".meta",
                                                            short.path, short.path + ".meta"])
        assert tier_files(str(tmp_path / "hdd"), "tmp") == []
        assert not stray.exists()


def test_temp_files_are_removed_at_open(config: StorageConfig, clock: FakeClock, tmp_path: Path) -> None:
    Store.open(config, clock).close()
    (tmp_path / "ssd/tmp/obj-abc").write_bytes(b"half an object")
    (tmp_path / "hdd/tmp/meta-abc").write_bytes(b"{")
    Store.open(config, clock).close()
    assert tier_files(str(tmp_path / "ssd"), "tmp") == tier_files(str(tmp_path / "hdd"), "tmp") == []


def test_lowered_capacity_is_enforced_at_open(tmp_path: Path, clock: FakeClock, src: Src) -> None:
    with Store.open(storage_config(tmp_path, ssd=300, hdd=1000), clock) as store:
        for i in range(8):
            store.put_file(src(size=100, seed=i), f"k{i}")
    with Store.open(storage_config(tmp_path, ssd=300, hdd=500), clock) as store:
        assert len(store.list()) == 5
        assert_consistent(store)


def test_a_replaced_object_keeps_its_new_content_after_rebuild(config: StorageConfig, clock: FakeClock,
                                                               src: Src) -> None:
    new = blob(300, "new")
    with Store.open(config, clock) as store:
        store.put_file(src(size=300, seed="old"), "k")
        store.put_file(src(new), "k")
    os.unlink(os.path.join(config.state_dir, "index.sqlite"))
    with reopen(config, clock) as store:
        info = store.get("k")
        assert info is not None and info.digest == digest_of(new)


def test_rebuild_keeps_the_faster_copy_of_a_key_found_on_two_tiers(config: StorageConfig, clock: FakeClock,
                                                                   src: Src, tmp_path: Path) -> None:
    with Store.open(config, clock) as store:
        slow = store.put_file(src(size=100, seed=1), "dup")
        assert slow.tier == "hdd"
        others = [store.put_file(src(size=50, seed=i), f"titles/{i}/s") for i in range(2, 40)]  # many parts
    fast = slow.path.replace(str(tmp_path / "hdd"), str(tmp_path / "ssd"))
    os.makedirs(os.path.dirname(fast))
    shutil.copy(slow.path, fast)
    shutil.copy(slow.path + ".meta", fast + ".meta")
    os.unlink(os.path.join(config.state_dir, "index.sqlite"))
    with reopen(config, clock) as store:
        found = store.get("dup")
        assert found is not None and found.tier == "ssd" and found.path == fast
        assert not os.path.exists(slow.path) and not os.path.exists(slow.path + ".meta")
        assert sorted(i.key for i in store.list()) == sorted(["dup", *(o.key for o in others)])
        assert_consistent(store)


def _quick_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each PRAGMA quick_check the index runs (the connection class is wrapped, not the check)."""
    ran: list[str] = []
    real = index_module._connect

    class Spy(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if "quick_check" in sql:
                ran.append(sql)
            return super().execute(sql, *args)  # type: ignore[arg-type]

    def connect(path: str) -> sqlite3.Connection:
        real(path).close()  # the real settings, on a connection of the spying class
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=Spy)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    monkeypatch.setattr(index_module, "_connect", connect)
    return ran


def test_an_index_closed_cleanly_opens_without_quick_check(config: StorageConfig, clock: FakeClock, src: Src,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(config, clock) as store:
        fill(store, src, count=5)
        before = store.list()
    mark = Path(config.state_dir) / ("index.sqlite" + index_module.CLEAN_SUFFIX)
    assert mark.exists()
    ran = _quick_checks(monkeypatch)
    with Store.open(config, clock) as store:
        assert not mark.exists(), "the mark goes before anything is written"
        assert ran == [] and store.list() == before


def test_an_index_changed_after_its_clean_close_is_checked(config: StorageConfig, clock: FakeClock, src: Src,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(config, clock) as store:
        fill(store, src, count=5)
    with sqlite3.connect(Path(config.state_dir) / "index.sqlite") as db:  # anything but the owner's close
        db.execute("UPDATE objects SET pinned = pinned")
    ran = _quick_checks(monkeypatch)
    Store.open(config, clock).close()
    assert ran == ["PRAGMA quick_check"]


def test_an_owner_that_died_leaves_no_clean_mark(config: StorageConfig, clock: FakeClock, src: Src,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(config, clock) as store:
        fill(store, src, count=2)
    store = Store.open(config, clock)  # opened (mark taken) and never closed: as if killed
    store.put_file(src(size=10, seed=99), "after")
    mark = Path(config.state_dir) / ("index.sqlite" + index_module.CLEAN_SUFFIX)
    assert not mark.exists()
    store._index.close()  # let the next owner in without a clean close
    store._gen.close()
    os.close(store._lock_fd)
    ran = _quick_checks(monkeypatch)
    Store.open(config, clock).close()
    assert ran == ["PRAGMA quick_check"]


def test_a_rebuilt_index_opens_without_quick_check(config: StorageConfig, clock: FakeClock, src: Src,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """quick_check reads the whole file (10 s at 10^7 objects); a rebuild has just written every page of it."""
    with Store.open(config, clock) as store:
        fill(store, src, count=5)
        before = store.list()
    os.unlink(os.path.join(config.state_dir, "index.sqlite"))
    ran = _quick_checks(monkeypatch)
    with Store.open(config, clock) as store:
        assert ran == [] and store.list() == before


_CRASH_AT_SIDECAR = """
import os, sys
from pathlib import Path
from oca.storage import Store, files
from tests.storage.conftest import storage_config

root, put, src = sys.argv[1:]
store = Store.open(storage_config(Path(root)))
real_replace, real_write_new = os.replace, files.write_new


def replace(source, destination):
    if str(destination).endswith(".meta"):
        os._exit(9)  # the process dies as the sidecar would take its final name
    real_replace(source, destination)


def write_new(path, data):
    if path.endswith(".meta"):
        os._exit(9)
    real_write_new(path, data)


os.replace, files.write_new = replace, write_new
if put == "one":
    store.put_file(src, "titles/1/a")
else:
    store.put_files([(src, "titles/1/a")])
"""


@pytest.mark.parametrize("put", ["one", "batch"])
def test_a_crash_before_the_sidecar_leaves_no_sidecar_of_a_failed_removal_beside_the_new_bytes(
        put: str, config: StorageConfig, clock: FakeClock, src: Src, tmp_path: Path) -> None:
    """A rebuild trusts a sidecar's size (layout.py): new bytes written where a failed removal left a pair must
    never sit beside its old sidecar, whether put alone (renamed into place) or in a batch (written there)."""
    with Store.open(config, clock) as store:
        layout = store._cat.tiers[-1].layout  # where a cold put lands (conftest)
    h = key_hash("titles/1/a")
    layout.ensure_fanout(h)  # a pair a failed removal left behind, its key not indexed
    Path(layout.object_path(h)).write_bytes(b"x" * 100)
    Path(layout.meta_path(h)).write_bytes(Sidecar("titles/1/a", 100, "0" * 32, 1.0, False, False).to_bytes())
    crashed = subprocess.run([sys.executable, "-c", _CRASH_AT_SIDECAR, str(tmp_path), put, src(size=40, seed="new")],
                             cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=60)
    assert crashed.returncode == 9, crashed.stderr
    assert os.path.getsize(layout.object_path(h)) == 40  # the new bytes took the name
    assert not os.path.exists(layout.meta_path(h))  # and the old sidecar is gone, not beside them
    os.unlink(os.path.join(config.state_dir, "index.sqlite"))
    with reopen(config, clock) as store:
        assert store.get("titles/1/a") is None  # bytes without a sidecar: junk, never served as the old object
