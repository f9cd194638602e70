"""Faults: a tier directory vanishing, a disk filling up (a real tmpfs, and an injected ENOSPC), I/O errors."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oca.config.model import StorageConfig, TierConfig
from oca.errors import InsufficientStorage, NotFound, StorageError
from oca.storage import Store, StoreView, TierState, files, index
from tests.clock import FakeClock
from tests.tmpfs import tmpfs

from .conftest import assert_consistent, storage_config, tier_files

Src = Callable[..., str]


def tier_status(store: Store, name: str) -> dict[str, object]:
    tiers = store.status()["tiers"]
    assert isinstance(tiers, list)
    found: dict[str, object] = next(t for t in tiers if t["name"] == name)
    return found


def no_temp_files(root: Path) -> bool:
    return tier_files(str(root / "ssd"), "tmp") == tier_files(str(root / "hdd"), "tmp") == []


@pytest.fixture
def view(store: Store, config: StorageConfig) -> Iterator[StoreView]:
    v = StoreView.open(config)
    yield v
    v.close()


def break_by_removing(path: Path) -> None:
    shutil.rmtree(path)


def break_by_replacing_with_a_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a directory")


@pytest.mark.parametrize("breakage", [break_by_removing, break_by_replacing_with_a_file])
def test_a_vanished_tier_is_failed_skipped_and_avoided(store: Store, view: StoreView, src: Src, tmp_path: Path,
                                                       breakage: Callable[[Path], None]) -> None:
    store.put_file(src(size=100, seed=1), "on-ssd", hot=True)
    store.put_file(src(size=100, seed=2), "on-hdd")
    assert view.lookup("on-hdd") is not None
    g0 = store.generation
    breakage(tmp_path / "hdd")
    store.check_tiers()
    hdd = tier_status(store, "hdd")
    assert hdd["state"] == TierState.FAILED and str(tmp_path / "hdd") in str(hdd["error"])
    assert store.generation > g0 and view.changed()
    assert view.lookup("on-hdd") is None and store.get("on-hdd") is None
    assert view.lookup("on-ssd") is not None
    assert [i.key for i in store.list()] == ["on-ssd"]
    assert store.put_file(src(size=100, seed=3), "new").tier == "ssd"
    assert tier_status(store, "ssd")["state"] == TierState.UP


def test_a_put_that_finds_its_tier_gone_fails_it_and_goes_to_the_next(store: Store, src: Src,
                                                                      tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "hdd")
    info = store.put_file(src(size=100), "k")  # no check_tiers first: the put itself finds out
    assert info.tier == "ssd" and Path(info.path).is_file()
    assert tier_status(store, "hdd")["state"] == TierState.FAILED


def test_no_usable_tier_is_a_storage_error(store: Store, src: Src, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "hdd")
    shutil.rmtree(tmp_path / "ssd")
    store.check_tiers()
    with pytest.raises(StorageError, match="no tier takes new objects"):
        store.put_file(src(), "k")


def test_a_tier_that_comes_back_serves_again_and_purges_are_kept(store: Store, view: StoreView, src: Src,
                                                                 tmp_path: Path) -> None:
    kept = store.put_file(src(size=100, seed=1), "kept")
    purged = store.put_file(src(size=100, seed=2), "purged")
    (tmp_path / "hdd").rename(tmp_path / "hdd.away")  # an unmount, say
    store.check_tiers()
    assert store.evict("purged") is True  # recorded now, files removed when the tier is back
    (tmp_path / "hdd.away").rename(tmp_path / "hdd")
    store.check_tiers()
    assert tier_status(store, "hdd")["state"] == TierState.UP
    assert store.get("kept") == kept and view.lookup("kept") == kept
    assert store.get("purged") is None and not os.path.exists(purged.path)
    assert_consistent(store)


def test_a_purge_on_a_tier_that_vanished_unnoticed_is_kept_for_its_return(store: Store, src: Src,
                                                                           tmp_path: Path) -> None:
    purged = store.put_file(src(size=100), "purged")
    (tmp_path / "hdd").rename(tmp_path / "hdd.away")
    assert store.evict("purged") is True  # no check_tiers in between
    assert tier_status(store, "hdd")["state"] == TierState.FAILED
    (tmp_path / "hdd.away").rename(tmp_path / "hdd")
    store.check_tiers()
    assert not os.path.exists(purged.path) and tier_status(store, "hdd")["state"] == TierState.UP


def test_a_tier_that_comes_back_empty_forgets_its_objects(store: Store, src: Src, tmp_path: Path) -> None:
    store.put_file(src(size=100), "k")
    shutil.rmtree(tmp_path / "hdd")
    store.check_tiers()
    for sub in ("objects", "tmp"):  # a fresh, empty disk mounted in its place
        (tmp_path / "hdd" / sub).mkdir(parents=True)
    store.check_tiers()
    assert tier_status(store, "hdd")["state"] == TierState.UP
    assert store.list() == [] and tier_status(store, "hdd")["used"] == 0


def test_a_vanished_tier_at_open_is_not_trusted(config: StorageConfig, clock: FakeClock, src: Src,
                                                 tmp_path: Path) -> None:
    with Store.open(config, clock) as store:
        store.put_file(src(size=100), "k")
    shutil.rmtree(tmp_path / "hdd")
    with Store.open(config, clock) as store:
        assert store.list() == [] and tier_status(store, "hdd")["used"] == 0


def test_reported_io_error_takes_the_tier_out_until_reopen(config: StorageConfig, clock: FakeClock, src: Src) -> None:
    with Store.open(config, clock) as store, StoreView.open(config) as view:
        store.put_file(src(size=100), "k")
        store.report_io_error("hdd", "EIO reading k")
        assert view.changed() and view.lookup("k") is None and store.get("k") is None
        store.check_tiers()  # still FAILED: the probe would pass on a disk with bad sectors
        hdd = tier_status(store, "hdd")
        assert hdd["state"] == TierState.FAILED and "EIO reading k" in str(hdd["error"])
        with pytest.raises(NotFound):
            store.report_io_error("nvme", "?")
    with Store.open(config, clock) as store:
        assert tier_status(store, "hdd")["state"] == TierState.UP and store.get("k") is not None


def enospc(fd: int, data: memoryview) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_injected_enospc_fails_the_put_and_marks_the_tier_full(store: Store, view: StoreView, src: Src,
                                                               tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old = store.put_file(src(size=100, seed=1), "old")
    monkeypatch.setattr(files, "write_chunk", enospc)
    with pytest.raises(StorageError, match="full") as caught:
        store.put_file(src(size=100, seed=2), "new")
    assert not isinstance(caught.value, InsufficientStorage) and caught.value.status == 503
    hdd = tier_status(store, "hdd")
    assert hdd["state"] == TierState.FULL and "No space left" in str(hdd["error"])
    assert store.get("new") is None and no_temp_files(tmp_path)
    assert store.get("old") == old and view.lookup("old") == old  # a FULL tier keeps serving
    assert Path(old.path).read_bytes() == Path(src(size=100, seed=1)).read_bytes()
    monkeypatch.undo()
    assert store.put_file(src(size=100, seed=3), "next").tier == "ssd"  # FULL takes nothing new
    monkeypatch.setattr(files, "write_chunk", enospc)
    with pytest.raises(StorageError, match="full"):
        store.put_file(src(size=100, seed=5), "old")  # a failed replacement keeps the old copy
    assert store.get("old") == old and tier_status(store, "ssd")["state"] == TierState.FULL
    monkeypatch.undo()
    store.check_tiers()  # the real disk has room: back in service
    assert tier_status(store, "hdd")["state"] == tier_status(store, "ssd")["state"] == TierState.UP
    assert store.put_file(src(size=100, seed=4), "after").tier == "hdd"
    assert_consistent(store)


def test_injected_eio_fails_the_tier_and_the_put_goes_to_the_next(store: Store, src: Src, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = files.write_chunk
    calls = []

    def eio_once(fd: int, data: memoryview) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd, data)

    monkeypatch.setattr(files, "write_chunk", eio_once)
    info = store.put_file(src(size=100), "k", hot=True)
    assert info.tier == "hdd" and store.get("k") == info
    assert tier_status(store, "ssd")["state"] == TierState.FAILED and no_temp_files(tmp_path)
    monkeypatch.undo()
    store.check_tiers()  # a media error sticks: the probe passing proves nothing about bad sectors
    assert tier_status(store, "ssd")["state"] == TierState.FAILED


def test_rotten_bytes_found_while_moving_are_dropped(store: Store, src: Src) -> None:
    info = store.put_file(src(size=100), "k")
    with open(info.path, "r+b") as f:
        f.write(b"bitrot")
    store.record_hits({"k": 3})  # earns promotion; the copy does not verify
    assert store.get("k") is None and not os.path.exists(info.path)
    assert store.status()["promotions"] == 0


def test_a_failed_demotion_target_turns_demotion_into_deletion(tmp_path: Path, clock: FakeClock, src: Src) -> None:
    with Store.open(storage_config(tmp_path, ssd=200, hdd=1000), clock) as store:
        store.put_file(src(size=100, seed=1), "a", hot=True)
        store.put_file(src(size=100, seed=2), "b", hot=True)
        shutil.rmtree(tmp_path / "hdd")
        store.put_file(src(size=100, seed=3), "c", hot=True)
        assert [i.key for i in store.list()] == ["b", "c"]
        assert tier_status(store, "hdd")["state"] == TierState.FAILED
        assert_consistent(store)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "hdd") as mount_point:
        yield mount_point


def test_a_real_full_disk_fails_the_put_and_marks_the_tier_full(tiny_tmpfs: Path, tmp_path: Path,
                                                                clock: FakeClock, src: Src) -> None:
    config = storage_config(tmp_path, ssd=10_000_000, hdd=10_000_000)  # more than the 1 MiB really there
    with Store.open(config, clock) as store, StoreView.open(config) as view:
        stored = []
        with pytest.raises(StorageError, match="full") as caught:
            for i in range(20):
                stored.append(store.put_file(src(size=200_000, seed=i), f"k{i}"))
        assert not isinstance(caught.value, InsufficientStorage)
        assert 2 <= len(stored) < 6
        assert tier_status(store, "hdd")["state"] == TierState.FULL
        assert no_temp_files(tmp_path)
        for i, info in enumerate(stored):
            assert view.lookup(info.key) == info
            assert Path(info.path).read_bytes() == Path(src(size=200_000, seed=i)).read_bytes()
        assert store.put_file(src(size=200_000, seed=99), "elsewhere").tier == "ssd"
        store.check_tiers()
        assert tier_status(store, "hdd")["state"] == TierState.FULL  # still no room for 200 kB
        store.evict(stored[0].key)
        store.evict(stored[1].key)
        store.check_tiers()
        assert tier_status(store, "hdd")["state"] == TierState.UP
        assert store.put_file(src(size=200_000, seed=100), "again").tier == "hdd"
        assert_consistent(store)


def test_enospc_writing_the_sidecar_keeps_the_old_copy(store: Store, src: Src, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    old = store.put_file(src(size=100, seed=1), "k")

    def no_room(data: bytes, tmp_dir: str, sync: bool = True) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "stage_bytes", no_room)
    with pytest.raises(StorageError, match="full"):
        store.put_file(src(size=100, seed=2), "k")
    assert store.get("k") == old and Path(old.path).read_bytes() == Path(src(size=100, seed=1)).read_bytes()
    assert tier_status(store, "hdd")["state"] == TierState.FULL and no_temp_files(tmp_path)


def test_an_index_write_error_fails_the_put_without_damaging_the_index(
        config: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(config, clock) as store:
        kept = store.put_file(src(size=100, seed=1), "kept")

        def disk_io_error(self: index.Index, row: index.Row) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(index.Index, "put", disk_io_error)
        with pytest.raises(StorageError, match="disk I/O error"):
            store.put_file(src(size=100, seed=2), "new")
        monkeypatch.undo()
        assert store.get("new") is None and store.get("kept") == kept
        assert store.put_file(src(size=100, seed=3), "after").tier == "hdd"
    with sqlite3.connect(os.path.join(config.state_dir, "index.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store.open(config, clock) as store:
        assert {i.key for i in store.list()} == {"kept", "after"}
        assert_consistent(store)


def test_a_tier_that_cannot_be_created_is_failed_at_open(tmp_path: Path, clock: FakeClock, src: Src) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    config = StorageConfig(state_dir=str(tmp_path / "state"), tiers=(
        TierConfig("ssd", str(tmp_path / "blocker" / "ssd"), 1000), TierConfig("hdd", str(tmp_path / "hdd"), 1000)))
    with Store.open(config, clock) as store:
        assert tier_status(store, "ssd")["state"] == TierState.FAILED
        assert store.put_file(src(size=10), "k", hot=True).tier == "hdd"
