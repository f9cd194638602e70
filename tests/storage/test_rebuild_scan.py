"""The rebuild's scan of a tier: sidecars decoded and checked, junk deleted per fan-out directory, parts read as
the index is written (never the whole tier at once), by worker processes when the tier is big (the same rows and
the same deletions as threads, and threads again when they break), the new index written as a bulk load, and a
crash in the middle that the next open rebuilds from."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from oca.storage import Store
from oca.storage import scan as scan_module
from oca.storage.index import Index, Row, RowValues
from oca.storage.layout import Sidecar, TierLayout, key_hash
from oca.storage.scan import scan_tiers, worth_processes

from .conftest import assert_consistent, storage_config, tier_files

DIGEST = "0123456789abcdef" * 2
GOOD = {"key": "titles/1/a", "size": 3, "digest": DIGEST, "stored_at": 1.5, "hot": False, "pinned": True}


@pytest.mark.parametrize(("change", "valid"), [
    ({}, True),
    ({"stored_at": 17}, True),  # a whole number of seconds, as json.dumps writes 17.0's neighbours
    ({"extra": [1, 2]}, True),  # a field a later release adds is ignored
    ({"size": True}, False),
    ({"size": -1}, False),
    ({"size": 3.0}, False),
    ({"digest": DIGEST.upper()}, False),
    ({"digest": DIGEST + "\n"}, False),
    ({"digest": DIGEST[:-1]}, False),
    ({"stored_at": True}, False),
    ({"stored_at": "1.5"}, False),
    ({"hot": 1}, False),
    ({"pinned": None}, False),
    ({"key": 7}, False),
])
def test_a_sidecar_is_well_formed_only_with_every_field_of_its_type(change: dict[str, object], valid: bool) -> None:
    meta = Sidecar.from_bytes(json.dumps({**GOOD, **change}).encode())
    assert (meta is not None) is valid
    if meta is not None:
        assert (meta.key, meta.size, meta.digest, meta.pinned) == ("titles/1/a", 3, DIGEST, True)
        assert isinstance(meta.stored_at, float)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"key": "titles/1/a"}',
                                  b'{"key": "\\ud800", "size": 1}'])
def test_a_sidecar_that_is_not_json_of_an_object_is_not_well_formed(data: bytes) -> None:
    assert Sidecar.from_bytes(data) is None


def test_a_sidecar_reads_back_what_it_wrote() -> None:
    meta = Sidecar("titles/1/é", 12, "ab" * 16, 1.5, True, False)
    assert Sidecar.from_bytes(meta.to_bytes()) == meta


def put(layout: TierLayout, key: str, data: bytes, *, size: int | None = None, meta_key: str | None = None) -> str:
    """An object and its sidecar written straight into the layout, as a store leaves them; returns the hash."""
    h = key_hash(key)
    layout.ensure_fanout(h)
    Path(layout.object_path(h)).write_bytes(data)
    Path(layout.meta_path(h)).write_bytes(
        Sidecar(meta_key or key, len(data) if size is None else size, DIGEST, 1.0, False, False).to_bytes())
    return h


def same_leaf_keys(count: int) -> list[str]:
    """`count` keys whose hashes share one fan-out directory."""
    found: list[str] = []
    first = key_hash("k0")[:4]
    i = 0
    while len(found) < count:
        key = f"k{i}"
        if key_hash(key)[:4] == first:
            found.append(key)
        i += 1
    return found


def test_reading_a_leaf_keeps_valid_pairs_and_deletes_everything_else(tmp_path: Path) -> None:
    layout = TierLayout(str(tmp_path / "hdd"))
    layout.prepare()
    good, no_meta, no_object, short, other_key, stray_dir = same_leaf_keys(6)
    put(layout, good, b"good")
    os.unlink(layout.meta_path(put(layout, no_meta, b"x")))
    os.unlink(layout.object_path(put(layout, no_object, b"x")))
    put(layout, short, b"abc", size=4)  # damaged after it was written: the scan trusts the sidecar (a hit drops it)
    put(layout, other_key, b"x", meta_key=good)  # a sidecar copied from another object
    leaf = os.path.dirname(layout.object_path(key_hash(good)))
    dir_named_like_an_object = Path(leaf) / key_hash(stray_dir)
    dir_named_like_an_object.mkdir()
    (dir_named_like_an_object / "inside").write_bytes(b"x")
    (Path(leaf) / "notes.txt").write_bytes(b"x")
    (Path(leaf) / ("f" * 32)).write_bytes(b"x")  # a hash name of another fan-out directory
    name = f"{key_hash(good)[:2]}/{key_hash(good)[2:4]}"
    found = layout.read_leaf(name)
    assert sorted((m.key, m.size) for m in found) == sorted([(good, 4), (short, 4)])
    kept = [key_hash(good), key_hash(short)]
    assert sorted(os.listdir(leaf)) == sorted(kept + [h + ".meta" for h in kept])


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (make system-deps installs it)")
def test_reading_a_leaf_opens_each_sidecar_once_and_never_looks_at_the_objects(tmp_path: Path) -> None:
    """A scan of 10^7 objects pays per system call and per inode: one open and read of each sidecar, no stat
    (or open) of the object beside it, whose size the sidecar holds."""
    layout = TierLayout(str(tmp_path / "hdd"))
    layout.prepare()
    keys = same_leaf_keys(40)
    for key in keys:
        put(layout, key, b"data")
    h = key_hash(keys[0])
    trace = tmp_path / "trace"
    script = (f"from oca.storage.layout import TierLayout; "
              f"print(len(TierLayout({str(tmp_path / 'hdd')!r}).read_leaf({h[:2] + '/' + h[2:4]!r})))")
    out = subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file,%stat", "-o", str(trace), sys.executable,
                          "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "40"
    lines = trace.read_text().splitlines()
    hashes = {key_hash(k) for k in keys}
    sidecar_opens = [line for line in lines if any(f'"{x}.meta"' in line for x in hashes)]
    object_calls = [line for line in lines if any(f'"{x}"' in line or f'/{x}"' in line for x in hashes)]
    assert len(sidecar_opens) == 40 and all("openat(" in line for line in sidecar_opens)
    assert object_calls == []


def test_reading_a_leaf_leaves_access_times_alone(tmp_path: Path) -> None:
    """A scan is not an access: with relatime, the first read of a file whose atime is older than its mtime
    would write its inode, once per object of the tier being scanned."""
    layout = TierLayout(str(tmp_path / "hdd"))
    layout.prepare()
    h = put(layout, "titles/1/a", b"a")
    before = os.stat(layout.meta_path(h))
    os.utime(layout.meta_path(h), ns=(before.st_mtime_ns - 10**12, before.st_mtime_ns))
    assert [m.key for m in layout.read_leaf(f"{h[:2]}/{h[2:4]}")] == ["titles/1/a"]
    assert os.stat(layout.meta_path(h)).st_atime_ns == before.st_mtime_ns - 10**12


def test_a_scan_by_someone_else_than_the_owner_reads_without_noatime(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    layout = TierLayout(str(tmp_path / "hdd"))
    layout.prepare()
    h = put(layout, "titles/1/a", b"a")
    real_open = os.open
    refused: list[str] = []

    def open_as_another_user(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & getattr(os, "O_NOATIME", 0):  # what the kernel answers a process that does not own the file
            refused.append(path)
            raise PermissionError(1, "Operation not permitted", path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_as_another_user)
    assert [m.key for m in layout.read_leaf(f"{h[:2]}/{h[2:4]}")] == ["titles/1/a"]
    assert len(refused) == (2 if hasattr(os, "O_NOATIME") else 0)  # the directory, then the sidecar


def test_listing_leaves_deletes_what_is_not_a_fan_out_directory(tmp_path: Path) -> None:
    layout = TierLayout(str(tmp_path / "hdd"))
    layout.prepare()
    h = put(layout, "titles/1/a", b"a")
    objects = Path(layout.objects_dir)
    (objects / "zz").mkdir()  # two characters, not hex: holds nothing a scan could keep
    (objects / "zz" / "x").write_bytes(b"x")
    (objects / "abc").mkdir()
    (objects / "stray").write_bytes(b"x")
    (objects / h[:2] / "stray").write_bytes(b"x")
    (objects / h[:2] / "0g").mkdir()
    assert list(layout.scan_leaves()) == [f"{h[:2]}/{h[2:4]}"]
    assert sorted(os.listdir(objects)) == [h[:2]]
    assert sorted(os.listdir(objects / h[:2])) == [h[2:4]]


def test_the_scan_reads_a_few_parts_ahead_of_the_index_not_the_whole_tier(tmp_path: Path) -> None:
    layout = TierLayout(str(tmp_path / "hdd"))
    layout.prepare()
    for i in range(3000):
        put(layout, f"titles/{i}/s", b"x")
    leaves = len(list(layout.scan_leaves()))
    read: list[str] = []

    class Counting(TierLayout):
        def read_leaf(self, leaf: str) -> list[Sidecar]:
            read.append(leaf)
            return super().read_leaf(leaf)

    window = 2 * scan_module.SCAN_THREADS * scan_module.LEAVES_PER_PART
    assert leaves > 3 * window
    errors: dict[str, str] = {}
    batches = scan_tiers([("hdd", Counting(layout.root))], errors)
    first = next(batches)
    assert first and len(read) <= window + scan_module.LEAVES_PER_PART
    assert len(first) + sum(map(len, batches)) == 3000 and errors == {}
    assert len(read) == leaves


@pytest.mark.parametrize(("rows_seen", "leaves_seen", "leaves_left", "worth"), [
    (256, 128, 51_000, True),  # 2 objects a directory, 51,000 directories to go: 102,000 objects
    (256, 128, 24_000, False),  # 48,000 to go
    (0, 128, 65_000, False),  # the first parts were empty: an empty tier is not worth a process
    (19_200, 128, 0, False),  # nothing left after the first parts
    (0, 0, 10, False),  # no directory read yet: nothing to go by
])
def test_worker_processes_pay_only_for_a_tier_whose_first_parts_promise_enough_objects(
        rows_seen: int, leaves_seen: int, leaves_left: int, worth: bool) -> None:
    assert worth_processes(rows_seen, leaves_seen, leaves_left, 50_000) is worth


def tier_with_junk(root: Path, count: int, damaged: bool = True) -> TierLayout:
    """`count` keys, one in 7 of them left as each kind of junk the scan deletes, and one in 7 (with `damaged`)
    shorter than its sidecar says, which the scan keeps; the same files wherever it is built (the order of
    writes is fixed)."""
    layout = TierLayout(str(root))
    layout.prepare()
    for i in range(count):
        key, kind = f"titles/{i}/seg", i % 7
        if kind == 1:
            os.unlink(layout.meta_path(put(layout, key, b"x")))  # an object without its sidecar
        elif kind == 2:
            os.unlink(layout.object_path(put(layout, key, b"x")))  # a sidecar without its object
        elif kind == 3 and damaged:
            put(layout, key, b"abc", size=4)  # damaged after its write: kept, the sidecar's size trusted
        elif kind == 4:
            put(layout, key, b"x", meta_key=f"titles/{i - 1}/seg")  # a sidecar copied from another object
        elif kind == 5:
            h = put(layout, key, b"kept")
            Path(layout.fanout_dir(h), "notes.txt").write_bytes(b"x")  # a stray name beside a valid pair
        else:
            put(layout, key, key.encode())
    return layout


def scan_all(layout: TierLayout, threshold: int | None = None) -> tuple[list[RowValues], dict[str, str]]:
    errors: dict[str, str] = {}
    rows = sorted(r for batch in scan_tiers([("hdd", layout)], errors, threshold) for r in batch)
    return rows, errors


def files_in(layout: TierLayout) -> list[str]:
    return [os.path.relpath(f, layout.root) for f in tier_files(layout.root)]


def test_worker_processes_read_the_rows_and_delete_the_junk_that_threads_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    by_threads, by_processes = tier_with_junk(tmp_path / "threads", 3000), tier_with_junk(tmp_path / "processes", 3000)
    started: list[object] = []
    real_start = scan_module._start_processes

    def start() -> object:
        started.append(real_start())
        return started[-1]

    monkeypatch.setattr(scan_module, "_start_processes", start)
    with caplog.at_level(logging.WARNING, logger="oca.storage"):
        threaded, threaded_errors = scan_all(by_threads)
        assert started == []  # 3,000 objects are not worth a process at the default threshold
        processed, processed_errors = scan_all(by_processes, threshold=1)
    assert len(started) == 1 and caplog.records == []  # started, and read all it was given: no fallback
    valid = [f"titles/{i}/seg" for i in range(3000) if i % 7 in (0, 3, 5, 6)]
    assert [r[0] for r in threaded] == sorted(valid) and threaded_errors == {}
    assert processed == threaded and processed_errors == {}
    assert files_in(by_processes) == files_in(by_threads)
    assert len(files_in(by_threads)) == 2 * len(valid)


@pytest.mark.parametrize("failure", ["cannot start", "breaks"])
def test_worker_processes_that_fail_leave_the_rest_of_the_scan_to_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failure: str) -> None:
    expected, _ = scan_all(tier_with_junk(tmp_path / "threads", 700))
    layout = tier_with_junk(tmp_path / "processes", 700)

    def start() -> ProcessPoolExecutor:
        if failure == "cannot start":  # what creating the pool's semaphores raises without /dev/shm
            raise OSError(38, "Function not implemented")
        # workers that die as they start: every part sent to them is lost, and the pool breaks
        return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=os._exit, initargs=(3,))

    monkeypatch.setattr(scan_module, "_start_processes", start)
    with caplog.at_level(logging.WARNING, logger="oca.storage"):
        rows, errors = scan_all(layout, threshold=1)
    assert rows == expected and errors == {}  # no part lost, none read twice, the tier not failed
    assert files_in(layout) == files_in(TierLayout(str(tmp_path / "threads")))
    assert "worker processes unavailable" in caplog.text


def test_a_tier_a_worker_process_cannot_read_is_reported_as_the_threads_report_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = tier_with_junk(tmp_path / "hdd", 700)
    leaves = list(layout.scan_leaves())
    gone = next(f"{a:02x}/{b:02x}" for a in range(256) for b in range(256) if f"{a:02x}/{b:02x}" not in leaves)
    monkeypatch.setattr(TierLayout, "scan_leaves", lambda self: iter([*leaves, gone]))  # removed after the listing
    _, errors = scan_all(layout, threshold=1)
    assert errors == {"hdd": f"scan failed: No such file or directory ({layout.objects_dir}/{gone})"}


def test_a_store_rebuilt_by_worker_processes_is_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = storage_config(tmp_path, hdd=10**9)
    hdd = tier_with_junk(tmp_path / "hdd", 1400, damaged=False)
    monkeypatch.setattr(scan_module, "PROCESS_THRESHOLD", 1)
    with Store.open(config) as store:
        valid = [f"titles/{i}/seg" for i in range(1400) if i % 7 in (0, 3, 5, 6)]
        assert sorted(i.key for i in store.list()) == sorted(valid)
        assert_consistent(store)
    assert len(files_in(hdd)) == 2 * 800


def row(key: str, tier: str) -> tuple[str, str, int, str, float, float, int, int]:
    return Row(key, tier, 1, DIGEST, 1.0, 1.0, False, False).values()


def test_a_new_index_keeps_the_first_row_of_a_key_and_names_the_later_ones(tmp_path: Path) -> None:
    told: list[tuple[str, str]] = []
    batches = [[row("a", "ssd"), row("b", "ssd")], [row("c", "hdd"), row("a", "hdd")], [row("d", "hdd")]]
    index = Index.create(str(tmp_path / "index.sqlite"), batches, lambda key, tier: told.append((key, tier)))
    try:
        assert told == [("a", "hdd")]
        assert sorted((r[0], r[1]) for r in index.rows()) == [("a", "ssd"), ("b", "ssd"), ("c", "hdd"), ("d", "hdd")]
        assert index._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        index.close()
    assert sorted(os.listdir(tmp_path)) == ["index.sqlite"]  # no journal, no .new left beside it


CRASHING_CHILD = """
import os, sys
from oca.storage import scan, store
from oca.storage.layout import TierLayout
from tests.storage.proc_helper import config_from

batches = 0
real = store.scan_tiers
scan.PROCESS_THRESHOLD = int(sys.argv[2])

def scan_then_die(*args, **kwargs):
    global batches
    for batch in real(*args, **kwargs):
        yield batch
        batches += 1
        if batches == 3:  # three parts inserted, the rest not yet read
            os._exit(9)

store.scan_tiers = scan_then_die
store.Store.open(config_from(sys.argv[1]))
"""


@pytest.mark.parametrize("threshold", [scan_module.PROCESS_THRESHOLD, 1], ids=["threads", "processes"])
def test_a_crash_mid_rebuild_leaves_a_store_that_rebuilds_again(tmp_path: Path, threshold: int) -> None:
    config = storage_config(tmp_path, hdd=10**9)
    hdd = TierLayout(str(tmp_path / "hdd"))
    hdd.prepare()
    keys = [f"titles/{i}/seg" for i in range(2000)]
    for key in keys:
        put(hdd, key, key.encode())
    raw = json.dumps({"state_dir": config.state_dir, "policy": config.policy,
                      "tiers": [[t.name, t.path, t.capacity, t.admission] for t in config.tiers]})
    os.makedirs(config.state_dir)
    Path(config.state_dir, "index.sqlite").write_bytes(b"not an index")
    child = subprocess.run([sys.executable, "-c", CRASHING_CHILD, raw, str(threshold)], capture_output=True, text=True,
                           timeout=120, cwd=str(Path(__file__).parents[2]))
    assert child.returncode == 9, child.stderr
    assert os.path.exists(os.path.join(config.state_dir, "index.sqlite.new"))
    assert os.path.exists(os.path.join(config.state_dir, "index.sqlite.stage"))  # the rows staged so far
    assert not os.path.exists(os.path.join(config.state_dir, "index.sqlite"))
    with Store.open(config) as store:
        assert sorted(i.key for i in store.list()) == sorted(keys)
        assert_consistent(store)
    assert not os.path.exists(os.path.join(config.state_dir, "index.sqlite.new"))
    assert not os.path.exists(os.path.join(config.state_dir, "index.sqlite.stage"))
    assert len(tier_files(str(tmp_path / "hdd"))) == 2 * len(keys)


def test_a_new_index_is_written_in_key_order_whatever_order_its_rows_come_in(tmp_path: Path) -> None:
    # a scan yields rows in hash order; inserted so, each lands on a random page of the key B-tree (pages split
    # and re-read all over the file: a rebuild's rate fell with the object count). Written in key order, the
    # tree's leaves follow each other in the file as their keys do: read back by a walk of the tree (dbstat's
    # path), their page numbers only grow.
    keys = sorted((f"titles/{i // 50}/720p/seg_{i % 50:05d}.m4s" for i in range(5000)), key=key_hash)
    batches = [[row(key, "hdd") for key in keys[i:i + 500]] for i in range(0, len(keys), 500)]
    index = Index.create(str(tmp_path / "index.sqlite"), batches)
    try:
        leaves = [page for page, in index._conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'objects' AND pagetype = 'leaf' ORDER BY path")]
        assert len(leaves) > 50
        assert leaves == sorted(leaves)
        assert [r[0] for r in index._conn.execute("SELECT key FROM objects")] == sorted(keys)
    finally:
        index.close()


def test_a_sort_larger_than_the_page_cache_keeps_the_first_row_of_every_key(tmp_path: Path) -> None:
    # 200,000 rows of ~150 bytes are twice the bulk load's 16 MiB page cache: the sort spills runs that its
    # helper threads (PRAGMA threads) sort and merge; a key's first row must still win wherever its runs fell
    keys = sorted((f"titles/{i // 100}/1080p/segment_{i % 100:06d}.m4s" for i in range(100_000)), key=key_hash)
    told: list[tuple[str, str]] = []
    batches = [[row(key, "ssd") for key in keys[i:i + 5000]] for i in range(0, len(keys), 5000)]
    batches += [[row(key, "hdd") for key in keys[::-1][i:i + 5000]] for i in range(0, len(keys), 5000)]
    index = Index.create(str(tmp_path / "index.sqlite"), batches, lambda key, tier: told.append((key, tier)))
    try:
        assert [r[0] for r in index._conn.execute("SELECT key FROM objects")] == sorted(keys)
        assert {r[0] for r in index._conn.execute("SELECT tier FROM objects")} == {"ssd"}
        assert told == [(key, "hdd") for key in keys[::-1]]
    finally:
        index.close()
