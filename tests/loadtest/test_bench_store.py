"""`python -m loadtest.bench_store`'s ways of filling a store (no box): index rows with hard-linked objects that a
hit can read, the disk each way needs, and the import's own peak RSS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import xxhash

from loadtest import bench_store
from loadtest.bench_store import fits, key_of, run_for_peak_rss, write_index_rows
from oca.config.model import StorageConfig, TierConfig
from oca.storage import Store
from oca.storage.index import IndexReader, index_path
from oca.storage.layout import TierLayout, key_hash


def test_index_rows_each_have_an_object_file_of_their_size_and_digest_sharing_a_few_inodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_store, "LINKS_PER_FILE", 40)  # ext4's limit is 65,000 links an inode: stay below
    write_index_rows(100, 512, str(tmp_path), batch=30)
    reader = IndexReader(index_path(str(tmp_path / "state")))
    layout = TierLayout(str(tmp_path / "hdd"))
    inodes = set()
    try:
        for i in range(100):
            row = reader.lookup(key_of(i))
            assert row is not None and (row.tier, row.size) == ("hdd", 512)
            path = layout.object_path(key_hash(row.key))
            with open(path, "rb") as fh:
                assert xxhash.xxh3_128_hexdigest(fh.read()) == row.digest
            inodes.add(os.stat(path).st_ino)
            assert not os.path.exists(layout.meta_path(key_hash(row.key)))  # index rows only: no sidecar
        assert reader.lookup(key_of(100)) is None
    finally:
        reader.close()
    assert len(inodes) == 3  # a new file every 40 links


def test_what_fits_counts_inodes_and_bytes_by_how_the_store_is_filled(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    class Fs:
        f_favail, f_bavail, f_frsize = 10_000_000, 100 * 2**30 // 4096, 4096  # 10^7 inodes, 100 GiB free

    monkeypatch.setattr(os, "statvfs", lambda path: Fs())
    # 10^7 through the import: 3 inodes each at the peak
    assert "inodes" in fits(10_000_000, 4096, 100_000, str(tmp_path))
    # into the layout: an object and a sidecar each (2 inodes), plus the imports' 3: too many inodes too
    assert "inodes" in fits(10_000_000, 4096, 100_000, str(tmp_path), "layout", 20_000)
    assert fits(3_000_000, 4096, 100_000, str(tmp_path), "layout", 20_000) == ""
    # index rows: no inode per object, only the imported ones'; ~300 bytes each
    assert fits(10_000_000, 4096, 100_000, str(tmp_path), "index", 20_000) == ""
    assert "GiB" in fits(400_000_000, 4096, 100_000, str(tmp_path), "index", 20_000)


def test_the_peak_rss_is_that_of_the_command_alone_and_a_failure_says_what_it_printed() -> None:
    ballast = bytearray(300 << 20)  # this process big: a spawned child is charged that before its exec
    ballast[::4096] = b"1" * len(ballast[::4096])
    hold = "x = bytearray(200 << 20); x[::4096] = b'1' * len(x[::4096]); import time; time.sleep(0.3)"
    big = run_for_peak_rss([sys.executable, "-c", hold])
    small = run_for_peak_rss([sys.executable, "-c", "import time; time.sleep(0.3)"])
    del ballast
    assert big > 200 << 10 > 100 << 10 > small  # KiB: the 200 MiB child, then a small one as its own
    with pytest.raises(RuntimeError, match="boom"):
        run_for_peak_rss([sys.executable, "-c", "import sys; sys.exit('boom')"])


def test_index_only_writes_n_distinct_rows_through_index_create_and_reports_its_rate(tmp_path: Path) -> None:
    row = bench_store.index_only(1200, str(tmp_path), batch=500)
    assert row["objects"] == 1200 and row["index_create_per_s"] > 0 and row["index_create_cpu_us_per_row"] > 0
    reader = IndexReader(index_path(str(tmp_path / "state")))
    try:
        count = reader._conn.execute("SELECT count(*), count(DISTINCT key) FROM objects").fetchone()
    finally:
        reader.close()
    assert count == (1200, 1200)
    assert "index rows (no files)" in bench_store.render([row])


@pytest.mark.parametrize("processes", [1, 2])
def test_a_linked_layout_rebuilds_into_every_object_sharing_a_few_inodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int) -> None:
    monkeypatch.setattr(bench_store, "LINKS_PER_FILE", 25)
    tier = str(tmp_path / "hdd")
    bench_store.write_layout(120, 300, tier, linked=True, processes=processes)
    layout = TierLayout(tier)
    inodes = {os.stat(layout.object_path(key_hash(key_of(i)))).st_ino for i in range(120)}
    assert len(inodes) == 120 // 25 + processes  # a new file every 25 links, per writer
    store = Store.open(StorageConfig(tiers=(TierConfig("hdd", tier, 1 << 30),), state_dir=str(tmp_path / "state")))
    try:
        assert store.status()["objects"] == 120  # every sidecar found, none taken for junk
        info = store.get(key_of(119))
        assert info is not None
        with open(info.path, "rb") as fh:
            assert xxhash.xxh3_128_hexdigest(fh.read()) == info.digest and info.size == 300
    finally:
        store.close()


def test_rebuilds_of_one_layout_each_find_every_object(tmp_path: Path) -> None:
    rows = bench_store.rebuild_only(60, 200, str(tmp_path), linked=True, hows=("background",), runs=2)
    assert [row["run"] for row in rows] == [1, 2]
    assert [row["rebuilt_objects"] for row in rows] == [60, 60]
    assert all(row["rebuild_per_s"] > 0 and row["objects"] == 60 for row in rows)
