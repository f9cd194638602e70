"""Store.open(background=True): the index is servable at once, memory loads in chunks, each behind the lock
(tests/storage/test_store_streamed_load.py: what happens between two chunks)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oca.config.model import StorageConfig, TierConfig
from oca.errors import StorageError
from oca.storage import Store, StoreView
from oca.storage.index import Index
from oca.storage.policy import LRUPolicy
from tests.clock import FakeClock

from .conftest import assert_consistent, blob


class _GatedPolicy(LRUPolicy):
    """An LRU policy whose first `add` waits for `gate` (or raises `fail`): holds a load in the middle."""

    def __init__(self, gate: threading.Event, fail: Exception | None = None) -> None:
        super().__init__()
        self.gate, self.fail = gate, fail

    def add(self, key: str, size: int) -> None:
        if not self.gate.is_set():
            if self.fail is not None:
                raise self.fail
            assert self.gate.wait(10)
        super().add(key, size)


def _config(root: Path) -> StorageConfig:
    return StorageConfig(state_dir=str(root / "state"), policy="lru",
                         tiers=(TierConfig("hdd", str(root / "hdd"), 1 << 20),))


def _fill(config: StorageConfig, clock: FakeClock, src: Callable[..., str], n: int) -> None:
    with Store.open(config, clock) as s:
        s.put_files([(src(blob(100, i)), f"titles/1/s{i}") for i in range(n)])


def test_a_background_load_serves_the_index_at_once_and_a_write_waits_for_the_chunk_being_attached(
        tmp_path: Path, clock: FakeClock, src: Callable[..., str]) -> None:
    config = _config(tmp_path)
    _fill(config, clock, src, 5)
    gate = threading.Event()
    s = Store.open(config, clock, policy=lambda: _GatedPolicy(gate), background=True)
    try:
        status = s.status()
        assert status["loading"] is True and status["objects"] in (0, 1)  # stuck in the first add
        with StoreView.open(config) as view:  # a worker serves from the index meanwhile
            found = view.lookup("titles/1/s3")
            assert found is not None and Path(found.path).read_bytes() == blob(100, 3)
        replaced: list[object] = []
        writer = threading.Thread(target=lambda: replaced.append(s.put_file(src(blob(70, 9)), "titles/1/s3")))
        writer.start()
        writer.join(0.2)
        assert writer.is_alive(), "a put must wait for the chunk being attached (all 5 rows: one chunk)"
        gate.set()
        writer.join(10)
        assert not writer.is_alive() and s.status()["objects"] == 5
        # the put may run between the last chunk and the load's last step (capacities, held-back hits), which
        # takes the lock again: the load ends soon after, not necessarily before the put returns
        deadline = time.monotonic() + 10
        while s.status()["loading"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.status()["loading"] is False and s.status()["objects"] == 5
        info = s.get("titles/1/s3")
        assert info is not None and info.size == 70 and replaced == [info]
        assert_consistent(s)
    finally:
        gate.set()
        s.close()


def test_close_during_a_background_load_stops_it(tmp_path: Path, clock: FakeClock, src: Callable[..., str]) -> None:
    config = _config(tmp_path)
    _fill(config, clock, src, 5)
    gate = threading.Event()
    policies: list[_GatedPolicy] = []

    def policy() -> _GatedPolicy:
        policies.append(_GatedPolicy(gate))
        return policies[-1]

    s = Store.open(config, clock, policy=policy, background=True, load_chunk=1)
    deadline = time.monotonic() + 10
    while s.status()["objects"] != 1 and time.monotonic() < deadline:  # the first row's add holds the load
        time.sleep(0.01)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert sum(len(p) for p in policies) < 5, "the load gave up instead of finishing"
    with Store.open(config, clock) as again:  # nothing lost: the index is whole
        assert again.status()["objects"] == 5


def test_a_background_load_that_fails_makes_every_write_fail(tmp_path: Path, clock: FakeClock,
                                                             src: Callable[..., str]) -> None:
    config = _config(tmp_path)
    _fill(config, clock, src, 2)
    s = Store.open(config, clock, policy=lambda: _GatedPolicy(threading.Event(), RuntimeError("boom")),
                   background=True)
    try:
        deadline = time.monotonic() + 10
        while s.status()["loading"] and time.monotonic() < deadline:  # a put before the failing chunk is stored
            time.sleep(0.01)
        assert s.status()["loading"] is False
        with pytest.raises(StorageError, match="was not loaded: boom"):
            s.put_file(src(blob(10, 1)), "titles/1/x")
    finally:
        s.close()


def test_interrupt_aborts_a_long_index_read_on_another_thread(tmp_path: Path) -> None:
    """What close() does to a background load stuck in SQLite's sort of 10^7 rows by last access."""
    index = Index.create(str(tmp_path / "index.sqlite"), [])
    errors: list[Exception] = []

    def long_read() -> None:
        try:
            index._conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                                "SELECT count(*) FROM n").fetchall()
        except sqlite3.OperationalError as e:
            errors.append(e)

    reader = threading.Thread(target=long_read)
    reader.start()
    time.sleep(0.2)
    index.interrupt()
    reader.join(10)
    assert not reader.is_alive() and len(errors) == 1 and "interrupt" in str(errors[0])
    index.close()
