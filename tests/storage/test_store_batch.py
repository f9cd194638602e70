"""Store.put_files: many objects with one index commit, every outcome the one put_file would give."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from oca.config.model import StorageConfig
from oca.errors import OcaError, StorageError
from oca.storage import ObjectInfo, Store
from oca.storage.index import Index

from .conftest import assert_consistent, blob, storage_config

Src = Callable[..., str]


def test_a_batch_is_stored_with_one_index_commit_for_all_its_objects(store: Store, src: Src,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    commits = 0
    real = Index.transaction

    def counted(self: Index):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return real(self)

    monkeypatch.setattr(Index, "transaction", counted)
    items = [(src(size=100, seed=i), f"titles/{i % 4}/seg{i}") for i in range(40)]
    results = store.put_files(items)
    assert all(isinstance(r, ObjectInfo) for r in results)
    assert [r.key for r in results if isinstance(r, ObjectInfo)] == [k for _, k in items]
    assert commits == 2  # the journal rows, then the objects: not two per object
    assert Path(store.get("titles/1/seg1").path).read_bytes() == blob(100, 1)  # type: ignore[union-attr]
    assert_consistent(store)


def test_bad_items_are_refused_alone_and_replacements_go_one_by_one(store: Store, src: Src) -> None:
    store.put_file(src(size=10, seed="old"), "titles/1/old")
    items = [(src(size=20, seed="a"), "titles/1/a"), ("/nonexistent/file", "titles/1/b"),
             (src(size=30, seed="c"), ""), (src(size=40, seed="new"), "titles/1/old"),
             (src(size=50, seed="d"), "titles/1/d"), (src(size=60, seed="d2"), "titles/1/d")]
    results = store.put_files(items)
    assert isinstance(results[0], ObjectInfo) and results[0].size == 20
    assert isinstance(results[1], StorageError) and isinstance(results[2], OcaError)
    assert isinstance(results[3], ObjectInfo) and results[3].size == 40  # replaced, as put_file does
    assert isinstance(results[4], ObjectInfo) and isinstance(results[5], ObjectInfo)
    assert store.get("titles/1/d").size == 60  # type: ignore[union-attr]  # the later one wins, in order
    assert_consistent(store)


def test_a_batch_larger_than_the_free_space_evicts_to_make_room(tmp_path: Path, src: Src) -> None:
    config: StorageConfig = storage_config(tmp_path, ssd=1000, hdd=1000)
    with Store.open(config) as store:
        for i in range(8):
            store.put_file(src(size=100, seed=f"o{i}"), f"titles/0/old{i}")
        results = store.put_files([(src(size=100, seed=i), f"titles/1/n{i}") for i in range(5)])
        assert all(isinstance(r, ObjectInfo) and r.tier == "hdd" for r in results)
        tiers = {t["name"]: t for t in store.status()["tiers"]}  # type: ignore[union-attr]
        assert tiers["hdd"]["used"] <= 1000
        assert_consistent(store)


def test_a_batch_that_cannot_fit_at_once_falls_back_to_one_by_one(tmp_path: Path, src: Src) -> None:
    config: StorageConfig = storage_config(tmp_path, ssd=300, hdd=300)
    with Store.open(config) as store:
        results = store.put_files([(src(size=100, seed=i), f"titles/1/n{i}") for i in range(5)])
        assert all(isinstance(r, ObjectInfo) for r in results)  # one by one, each evicting older ones
        assert_consistent(store)


def test_a_batch_survives_a_reopen(config: StorageConfig, src: Src) -> None:
    with Store.open(config) as store:
        store.put_files([(src(size=100, seed=i), f"titles/1/n{i}") for i in range(10)])
    with Store.open(config) as store:
        assert len(store.list("titles/1/")) == 10
        assert_consistent(store)


def test_a_batch_whose_commit_fails_is_stored_one_by_one(store: Store, src: Src,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError(5, "I/O error in the middle of a batch")

    monkeypatch.setattr(store._engine, "install_many", fail)
    results = store.put_files([(src(size=100, seed=i), f"titles/1/n{i}") for i in range(6)])
    assert all(isinstance(r, ObjectInfo) for r in results)
    assert len(store.list("titles/1/")) == 6
    assert_consistent(store)
