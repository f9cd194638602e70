"""The per-object costs an import pays, taken out without changing what is stored: fan-out directories made
once, temp files named without random letters, no unlink of what was renamed into place, flushes shared by the
batches staged at once, copies made while another batch commits."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize(("done", "ticket", "durable"), [
    (0, 1, False),  # nothing flushed yet
    (1, 1, True),  # the flush that started after the writes has completed
    (3, 2, True),  # a later one has
    (1, 2, False),  # only one that began before the writes ended
])
def test_writes_are_durable_once_a_flush_that_began_after_them_completed(done: int, ticket: int,
                                                                         durable: bool) -> None:
    assert files.covered(done, ticket) is durable


def test_batches_staged_before_a_flush_share_it() -> None:
    calls: list[str] = []
    flusher = files.Flusher("/tier", calls.append)
    first, second = flusher.ticket(), flusher.ticket()  # two batches done writing, neither flushed yet
    flusher.flush(first)
    flusher.flush(second)
    assert calls == ["/tier"], "the second batch was covered by the first flush"
    flusher.flush(flusher.ticket())  # writes after that flush need one of their own
    assert calls == ["/tier", "/tier"] and flusher.flushes == 2


def test_a_failed_flush_covers_nobody() -> None:
    outcomes = [OSError(5, "Input/output error"), None]

    def sync(path: str) -> None:
        error = outcomes.pop(0)
        if error is not None:
            raise error

    flusher = files.Flusher("/tier", sync)
    ticket = flusher.ticket()
    with pytest.raises(OSError):
        flusher.flush(ticket)
    flusher.flush(ticket)  # asks the disk again: the error is not taken as durability
    assert outcomes == [] and flusher.flushes == 2


def test_a_batch_done_while_a_flush_runs_waits_for_it_then_flushes_once_for_all_who_waited() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def sync(path: str) -> None:
        calls.append(len(calls))
        if len(calls) == 1:  # the first flush is slow: batches finish writing meanwhile
            started.set()
            assert release.wait(30)

    flusher = files.Flusher("/tier", sync)
    first = threading.Thread(target=flusher.flush, args=(flusher.ticket(),))
    first.start()
    assert started.wait(30)
    late = [flusher.ticket() for _ in range(3)]  # written while the first flush ran: it may not cover them
    waiters = [threading.Thread(target=flusher.flush, args=(t,)) for t in late]
    for w in waiters:
        w.start()
    release.set()
    for t in (first, *waiters):
        t.join(30)
    assert len(calls) == 2, "one more flush for the three batches that waited, not three"


def test_a_batch_is_copied_while_another_flushes(tmp_path: Path, clock: FakeClock, src: Callable[..., str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the claim and the commit hold the store's lock: a second batch writes every copy while the first
    one's flush (held here, as a slow disk would) runs, and both are stored once it ends."""
    config = StorageConfig(state_dir=str(tmp_path / "state"), policy="lru",
                           tiers=(TierConfig("hdd", str(tmp_path / "hdd"), 1 << 20),))
    flushing, release = threading.Event(), threading.Event()
    copied_while_held: list[str] = []
    real_flush, real_copy = files.Flusher.flush, files.copy_new

    def slow_flush(self: files.Flusher, ticket: int) -> None:
        if not flushing.is_set():
            flushing.set()
            assert release.wait(30)
        real_flush(self, ticket)

    def copy(source: str, *args: Any) -> str:
        if flushing.is_set() and not release.is_set():
            copied_while_held.append(source)
        return real_copy(source, *args)

    monkeypatch.setattr(files.Flusher, "flush", slow_flush)
    monkeypatch.setattr(files, "copy_new", copy)
    with Store.open(config, clock) as store:
        first = [(src(blob(50, i)), f"titles/1/a{i}") for i in range(3)]
        second = [(src(blob(50, 10 + i)), f"titles/1/b{i}") for i in range(3)]
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(store.put_files, first)
            assert flushing.wait(30)
            other = pool.submit(store.put_files, second)
            while len(copied_while_held) < len(second) and not other.done():
                time.sleep(0.01)
            assert copied_while_held == [s for s, _ in second], "the second batch waited for the lock to copy"
            release.set()
            results = held.result(30) + other.result(30)
        assert all(not isinstance(r, Exception) for r in results)
        assert store.status()["objects"] == 6
        assert_consistent(store)
