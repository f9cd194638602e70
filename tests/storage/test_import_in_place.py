"""Store.put_files writes a batch's objects and sidecars at their final names (no temp file, no rename): the
system calls that costs per object, and the crash guarantees it keeps — a stored object is whole or absent,
and the index matches the files after the next open (journal settled) or after a rebuild (scan)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oca.config.model import StorageConfig, TierConfig
from oca.storage import ObjectInfo, Store, files
from oca.storage.index import index_path
from oca.storage.layout import TierLayout, key_hash
from oca.storage.store import Store as StoreClass
from tests.clock import FakeClock

from .conftest import assert_consistent, blob, tier_files

Src = Callable[..., str]


@pytest.fixture
def one_tier(tmp_path: Path) -> StorageConfig:
    return StorageConfig(state_dir=str(tmp_path / "state"), policy="lru",
                         tiers=(TierConfig("hdd", str(tmp_path / "hdd"), 1 << 24),))


def _count_os_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the calls the storage code makes through the os module (the C library's own, SQLite's, are not)."""
    calls: Counter[str] = Counter()
    for name in ("open", "close", "write", "read", "readv", "stat", "fstat", "replace", "rename", "fchmod",
                 "fsync", "getpid", "mkdir", "unlink"):
        real = getattr(os, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counted)
    return calls


def test_a_batch_costs_three_files_calls_each_per_object_and_no_rename_fsync_or_stat(
        one_tier: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 200
    with Store.open(one_tier, clock) as store:
        items = [(src(blob(4096, i)), f"titles/{i // 50}/seg{i}") for i in range(n)]
        for _, key in items:  # fan-out directories made beforehand: what a box of 10^7 objects has
            store._cat.tiers[0].layout.ensure_fanout(key_hash(key))
        calls = _count_os_calls(monkeypatch)
        results = store.put_files(items, sizes=[4096] * n)
        monkeypatch.undo()
        assert all(isinstance(r, ObjectInfo) for r in results)
        # per object: the source opened, read once and closed; the object and its sidecar each created,
        # written once and closed; before, each also went through a temp file (a rename, an fchmod and a
        # getpid each) and the source was stat'ed, fstat'ed and read twice
        flushes = 2  # the batch's two syncfs, each through an open directory
        assert calls["open"] == 3 * n + flushes and calls["close"] == 3 * n + flushes, calls
        assert calls["readv"] + calls["read"] == n, calls
        assert calls["write"] == 2 * n, calls
        for name in ("replace", "rename", "fchmod", "fsync", "getpid", "stat", "fstat", "mkdir", "unlink"):
            assert calls[name] == 0, calls
        assert_consistent(store)
        assert Path(store.get("titles/1/seg77").path).read_bytes() == blob(4096, 77)  # type: ignore[union-attr]


_IMPORT = textwrap.dedent("""
    import os, sys
    from oca.config.model import StorageConfig, TierConfig
    from oca.storage import Store
    root, n = sys.argv[1], int(sys.argv[2])
    config = StorageConfig(state_dir=root + "/state", policy="lru",
                           tiers=(TierConfig("hdd", root + "/hdd", 1 << 26),))
    items = [(f"{root}/src/{i}", f"titles/{i // 100}/seg{i}") for i in range(n)]
    with Store.open(config) as store:
        for _, key in items:
            store._cat.tiers[0].layout.ensure_fanout(__import__("oca.storage.layout").storage.layout.key_hash(key))
        print("BEGIN", flush=True)
        os.getppid()  # a marker in the trace: counting starts after it
        store.put_files(items, sizes=[4096] * n)
        os.getppid()
""")


def _syscalls_per_object(tmp_path: Path, n: int) -> dict[str, int]:
    root = tmp_path / f"n{n}"
    (root / "src").mkdir(parents=True)
    for i in range(n):
        (root / "src" / str(i)).write_bytes(blob(4096, i))
    trace = root / "trace"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run(["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-c", _IMPORT, str(root), str(n)],
                   check=True, env=env, capture_output=True, timeout=300)
    counts: Counter[str] = Counter()
    counting = False
    for line in trace.read_text().splitlines():
        call = line.split(None, 1)[1].split("(", 1)[0] if " " in line else ""
        if call == "getppid":
            counting = not counting
        elif counting and call and not call.startswith(("<", "+", "-")) and call != "futex":
            counts[call] += 1
    return counts


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_an_imported_object_costs_about_ten_system_calls(tmp_path: Path) -> None:
    """The kernel's count, strace'd: a batch of 300 objects whose fan-out directories exist, futex waits
    aside. Before: 24 per object (a temp file and a rename for each of the two files, fchmods, getpids, a stat
    and an fstat of the source and a second read); now 9 (open, read, close of the source; open, write, close
    of the object and of its sidecar) and the batch's few (two syncfs, the index's commits)."""
    n = 300
    counts = _syscalls_per_object(tmp_path, n)
    total = sum(counts.values())
    assert total <= 10 * n, (total / n, counts.most_common(12))
    for call in ("rename", "renameat", "renameat2", "fchmod", "getpid"):
        assert counts[call] == 0, (call, counts.most_common(20))
    stats = counts["newfstatat"] + counts["fstat"] + counts["statx"] + counts["stat"]
    assert stats <= 10, counts.most_common(20)  # SQLite's look at its files per commit, none per object
    assert counts["syncfs"] == 2, counts  # once for the objects, once for their sidecars


class _Crash(BaseException):
    """The process dies here: nothing after it runs (no cleanup: _release_batch is disabled too)."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, flush_number: int) -> None:
    """Crash the next batch at its `flush_number`-th flush (1: after the objects are written, 2: after the
    sidecars are), before the flush, and leave whatever it wrote as a killed process would."""
    flushes = 0
    real = files.Flusher.flush

    def flush(self: files.Flusher, ticket: int) -> None:
        nonlocal flushes
        flushes += 1
        if flushes == flush_number:
            raise _Crash
        real(self, ticket)

    monkeypatch.setattr(files.Flusher, "flush", flush)
    monkeypatch.setattr(StoreClass, "_release_batch", lambda *args: None)


def _crashed_batch(config: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch,
                   flush_number: int, n: int = 6) -> list[tuple[str, str]]:
    items = [(src(blob(300, i)), f"titles/1/s{i}") for i in range(n)]
    store = Store.open(config, clock)
    _crash_at(monkeypatch, flush_number)
    with pytest.raises(_Crash):
        store.put_files(items)
    monkeypatch.undo()
    store._index.close()  # as a killed process leaves it: no clean close, the journal rows still there
    os.close(store._lock_fd)
    return items


@pytest.fixture
def reopened(one_tier: StorageConfig, clock: FakeClock) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def reopen() -> Store:
        opened.append(Store.open(one_tier, clock))
        return opened[-1]

    yield reopen
    for s in opened:
        s.close()


def test_a_crash_before_the_sidecars_leaves_nothing_stored_and_no_file_behind(
        one_tier: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch,
        reopened: Callable[[], Store]) -> None:
    _crashed_batch(one_tier, clock, src, monkeypatch, flush_number=1)
    assert len(tier_files(one_tier.tiers[0].path)) == 6, "the objects were written at their final names"
    store = reopened()
    assert store.list() == [] and tier_files(one_tier.tiers[0].path) == []  # the journal said: remove them
    assert store._index.pending() == []
    assert_consistent(store)


def test_a_crash_before_the_index_commit_keeps_the_whole_objects_and_drops_a_torn_one(
        one_tier: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch,
        reopened: Callable[[], Store]) -> None:
    items = _crashed_batch(one_tier, clock, src, monkeypatch, flush_number=2)
    layout = TierLayout(one_tier.tiers[0].path)
    torn = layout.object_path(key_hash("titles/1/s3"))
    with open(torn, "r+b") as fh:  # a write the disk never got: the right size, the wrong bytes
        fh.write(b"\0" * 100)
    store = reopened()
    assert sorted(o.key for o in store.list()) == sorted(k for _, k in items if k != "titles/1/s3")
    assert not os.path.exists(torn) and not os.path.exists(torn + ".meta")
    for info in store.list():
        assert Path(info.path).read_bytes() == blob(300, int(info.key[-1]))
    assert store._index.pending() == []
    assert_consistent(store)


def test_an_index_lost_after_a_crash_mid_batch_is_rebuilt_without_objects_that_have_no_sidecar(
        one_tier: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch,
        reopened: Callable[[], Store]) -> None:
    _crashed_batch(one_tier, clock, src, monkeypatch, flush_number=1)
    os.unlink(index_path(one_tier.state_dir))  # no journal to settle from: the scan decides alone
    store = reopened()
    assert store.list() == [] and tier_files(one_tier.tiers[0].path) == []  # no sidecar: junk, deleted
    assert_consistent(store)


def test_a_put_of_a_key_a_batch_is_writing_waits_for_it_and_then_replaces_it(
        one_tier: StorageConfig, clock: FakeClock, src: Src, monkeypatch: pytest.MonkeyPatch) -> None:
    writing, release = threading.Event(), threading.Event()
    real_copy = files.copy_new

    def slow_copy(source: str, path: str, size: int, stale: str = "") -> str:
        digest = real_copy(source, path, size, stale)
        writing.set()
        assert release.wait(30)
        return digest

    monkeypatch.setattr(files, "copy_new", slow_copy)
    with Store.open(one_tier, clock) as store:
        batch = threading.Thread(target=store.put_files, args=([(src(blob(100, 1)), "titles/1/a")],))
        batch.start()
        assert writing.wait(30)
        done: list[ObjectInfo] = []
        single = threading.Thread(target=lambda: done.append(store.put_file(src(blob(200, 2)), "titles/1/a")))
        single.start()
        single.join(0.3)
        assert not done, "the put wrote the name a batch was writing"
        release.set()
        batch.join(30)
        single.join(30)
        assert done and done[0].size == 200
        assert Path(store.get("titles/1/a").path).read_bytes() == blob(200, 2)  # type: ignore[union-attr]
        assert store._claimed == set() and store._index.pending() == []
        assert_consistent(store)


def test_a_file_left_at_the_final_name_is_replaced_not_truncated_under_its_reader(
        one_tier: StorageConfig, clock: FakeClock, src: Src) -> None:
    with Store.open(one_tier, clock) as store:
        layout = store._cat.tiers[0].layout
        h = key_hash("titles/1/a")
        layout.ensure_fanout(h)
        Path(layout.object_path(h)).write_bytes(b"left by a removal that failed")
        with open(layout.object_path(h), "rb") as reader:
            [result] = store.put_files([(src(blob(100, 1)), "titles/1/a")])
            assert isinstance(result, ObjectInfo)
            assert reader.read() == b"left by a removal that failed"  # a reader's bytes never change under it
        assert Path(result.path).read_bytes() == blob(100, 1)
        assert_consistent(store)
