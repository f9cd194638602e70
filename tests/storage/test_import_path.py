"""The per-object costs an import pays, taken out without changing what is stored: fan-out directories made
once, temp files named without random letters, no unlink of what was renamed into place."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from oca.config.model import StorageConfig, TierConfig
from oca.storage import Store, TierState, files
from oca.storage.layout import Sidecar, TierLayout, key_hash
from tests.clock import FakeClock

from .conftest import assert_consistent, blob


def test_fanout_directories_are_made_once_and_asked_again_after_forgetting(tmp_path: Path) -> None:
    layout = TierLayout(str(tmp_path / "t"))
    layout.prepare()
    h = key_hash("a")
    assert layout.ensure_fanout(h) == [layout.objects_dir, os.path.join(layout.objects_dir, h[:2])]
    assert layout.ensure_fanout(h) == []
    shutil.rmtree(os.path.join(layout.objects_dir, h[:2]))
    assert layout.ensure_fanout(h) == [], "remembered: no mkdir asked"
    layout.forget_directories()
    assert layout.ensure_fanout(h) == [layout.objects_dir, os.path.join(layout.objects_dir, h[:2])]
    assert os.path.isdir(layout.fanout_dir(h))


def test_a_tier_back_from_failed_makes_its_fanout_directories_again(tmp_path: Path, clock: FakeClock,
                                                                    src: Callable[..., str]) -> None:
    config = StorageConfig(state_dir=str(tmp_path / "state"), policy="lru",
                           tiers=(TierConfig("hdd", str(tmp_path / "hdd"), 1 << 20),))
    with Store.open(config, clock) as store:
        store.put_file(src(blob(100, 1)), "titles/1/a")
        store.evict("titles/1/a")
        shutil.rmtree(tmp_path / "hdd" / "objects")  # the disk goes away...
        store.check_tiers()
        assert store.status()["tiers"][0]["state"] == TierState.FAILED.value  # type: ignore[index]
        (tmp_path / "hdd" / "objects").mkdir()  # ...and comes back empty
        store.check_tiers()
        info = store.put_file(src(blob(100, 2)), "titles/1/a")  # the same fan-out directory as before
        assert info.tier == "hdd" and Path(info.path).read_bytes() == blob(100, 2)
        assert_consistent(store)


def test_a_temp_name_left_by_an_earlier_process_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_temp_names", itertools.count(5))
    leftover = tmp_path / f"meta-{os.getpid()}-5"
    leftover.write_bytes(b"old")
    path = files.stage_bytes(b"new", str(tmp_path))
    assert path == str(tmp_path / f"meta-{os.getpid()}-6")
    assert Path(path).read_bytes() == b"new" and leftover.read_bytes() == b"old"
    assert os.stat(path).st_mode & 0o777 == files.FILE_MODE


@pytest.mark.parametrize("size", [0, 1, 4096, files.CHUNK - 1, files.CHUNK, files.CHUNK + 1, 3 * files.CHUNK + 7])
def test_copies_of_any_size_around_the_buffer_are_whole_and_hashed(tmp_path: Path, size: int) -> None:
    source = tmp_path / "src"
    source.write_bytes(blob(size, size))
    staged = files.stage_copy(str(source), str(tmp_path), expect_size=size)
    assert Path(staged.path).read_bytes() == source.read_bytes()
    assert (staged.size, staged.digest) == files.hash_file(str(source))


def test_a_sidecar_written_by_hand_reads_back_the_same() -> None:
    meta = Sidecar("titles/1/é", 12, "ab" * 16, 1.5, True, False)
    assert Sidecar.from_bytes(meta.to_bytes()) == meta


def test_a_batch_unlinks_nothing_it_renamed_into_place(tmp_path: Path, clock: FakeClock, src: Callable[..., str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = StorageConfig(state_dir=str(tmp_path / "state"), policy="lru",
                           tiers=(TierConfig("hdd", str(tmp_path / "hdd"), 1 << 20),))
    unlinked: list[str] = []
    real_unlink = os.unlink
    with Store.open(config, clock) as store:
        items = [(src(blob(50, i)), f"titles/1/s{i}") for i in range(5)]

        def spy(path: str, *args: object, **kwargs: object) -> None:
            unlinked.append(path)
            real_unlink(path)

        monkeypatch.setattr(os, "unlink", spy)
        results = store.put_files(items)
        monkeypatch.undo()
        assert all(not isinstance(r, Exception) for r in results)
        assert not [p for p in unlinked if str(tmp_path / "hdd") in p], unlinked
        assert os.listdir(tmp_path / "hdd" / "tmp") == []
        assert_consistent(store)
