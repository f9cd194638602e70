"""A background load streams the index in chunks (Store._load): whatever runs between two chunks (imports,
replacements, purges, pins, capacity evictions, hit reports) ends in the state a whole load followed by the same
calls leaves, and a call waits for one chunk at most. Real index files and tiers; chunks of a few rows."""

from __future__ import annotations

import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oca.config.model import StorageConfig
from oca.errors import InsufficientStorage, NotFound, OcaError
from oca.storage import Store
from oca.storage import index as index_module
from oca.storage.index import Index, index_path
from oca.storage.policy import LRUPolicy
from tests.clock import FakeClock

from .conftest import assert_consistent, blob, storage_config, tier_files

CHUNK = 3
HELD = 16  # objects in the store before the load: 6 chunks of 3 (and one of 1)
SSD, HDD = 1_200, 4_000


def _config(root: Path) -> StorageConfig:
    # promotions need more hits than a test makes: a promotion earned during a load happens at its end (see
    # Store._load), after calls that a whole load would have seen after it
    return storage_config(root, ssd=SSD, hdd=HDD, hits=1_000)


def _key(i: int) -> str:
    return f"titles/{i % 3}/seg{i:02d}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of HELD objects over two tiers with distinct last access times, some pinned, the HDD nearly full."""
    root = tmp_path_factory.mktemp("template")
    clock = FakeClock()
    src = root / "src"
    src.mkdir()
    with Store.open(_config(root), clock) as s:
        for i in range(HELD):
            path = src / f"{i}"
            path.write_bytes(blob(150 + 13 * i, i))
            clock.advance(1)
            s.put_file(str(path), _key(i), hot=i % 4 == 0, pin=i % 5 == 0)
        for i in range(HELD - 1, -1, -3):  # last access out of the order of storing
            clock.advance(1)
            s.record_hits({_key(i): 1})
    shutil.rmtree(src)
    return root


@dataclass(frozen=True)
class Op:
    kind: str  # put, batch, purge, purge_prefix, pin, hits, lookup, list
    key: str = ""
    size: int = 0
    flag: bool = False
    keys: tuple[str, ...] = ()


_keys = st.one_of(st.integers(0, HELD - 1).map(_key), st.integers(0, 5).map(lambda i: f"titles/new/{i}"))
_ops = st.one_of(
    st.builds(Op, st.just("put"), _keys, st.integers(40, 900), st.booleans()),
    st.builds(Op, st.just("batch"), keys=st.lists(_keys, min_size=1, max_size=4).map(tuple)),
    st.builds(Op, st.just("purge"), _keys),
    st.builds(Op, st.just("purge_prefix"), st.sampled_from(["titles/1/", "titles/new/", "titles/2/seg1"])),
    st.builds(Op, st.just("pin"), _keys, flag=st.booleans()),
    st.builds(Op, st.just("hits"), keys=st.lists(_keys, min_size=1, max_size=3).map(tuple)),
    st.builds(Op, st.just("lookup"), keys=st.lists(_keys, min_size=1, max_size=3).map(tuple)),
    st.builds(Op, st.just("list"), st.sampled_from(["", "titles/0/", "titles/new/"])),
)
# (the chunk boundary to run at, the call); run in list order, each no earlier than its boundary
_schedules = st.lists(st.tuples(st.integers(0, HELD // CHUNK + 1), _ops), min_size=1, max_size=8)


def _run(store: Store, op: Op, n: int, clock: FakeClock, src: Path) -> object:
    """One call; what it answered (or the error's type), for comparing the two runs."""
    clock.advance(1)

    def source(key: str, size: int) -> str:
        path = src / f"{n}-{len(key)}-{size}-{key.replace('/', '_')}"
        path.write_bytes(blob(size, f"{key}{size}"))
        return str(path)

    try:
        if op.kind == "put":
            return store.put_file(source(op.key, op.size), op.key, hot=op.flag)
        if op.kind == "batch":
            items = [(source(k, 60 + 7 * j), k) for j, k in enumerate(op.keys)]
            return [r if not isinstance(r, OcaError) else type(r).__name__ for r in store.put_files(items)]
        if op.kind == "purge":
            return store.evict(op.key)
        if op.kind == "purge_prefix":
            return store.evict_prefix(op.key)
        if op.kind == "pin":
            return store.set_pinned(op.key, op.flag)
        if op.kind == "hits":
            store.record_hits(dict.fromkeys(op.keys, 1))
            return None
        if op.kind == "lookup":
            return store.lookup(op.keys)
        return store.list(op.key)
    except (NotFound, InsufficientStorage) as e:
        return type(e).__name__


def _state(store: Store) -> dict[str, Any]:
    """Everything the load and the calls decide: records, tier counts, the pinned set, the LRU orders."""
    cat = store._cat
    records = {k: (e.tier, e.size, e.digest, e.stored_at, e.last_access, e.hot, e.pinned)
               for k, e in sorted(cat.entries.items())}
    tiers = [(t.name, t.used, t.objects, t.pinned, t.evictions) for t in cat.tiers]
    orders = [list(t.policy._sizes.items()) for t in cat.tiers if isinstance(t.policy, LRUPolicy)]
    titles = {title: cat.titles._counts[title] for title in sorted(cat.titles._counts)}
    return {"records": records, "tiers": tiers, "pinned": sorted(cat.pinned_keys), "orders": orders,
            "titles": titles, "status": {k: v for k, v in store.status().items() if k != "generation"}}


def _on_disk(root: Path) -> dict[str, Any]:
    index = Index.open(index_path(str(root / "state")))
    try:
        rows = sorted(index.get(k) or () for k in _all_keys(index))
    finally:
        index.close()
    files = {tier: [Path(f).name for f in tier_files(str(root / tier))] for tier in ("ssd", "hdd")}
    return {"rows": rows, "files": files}


def _all_keys(index: Index) -> list[str]:
    return [row[0] for row in index.starting_with("")]


def _copy(template: Path, to: Path) -> Path:
    shutil.copytree(template, to)
    (to / "src").mkdir()
    return to


LATER = 2e9  # the calls' clock starts after the template's: a hit comes after the object it is for was stored


def _reference(root: Path, schedule: list[tuple[int, Op]]) -> tuple[list[str], dict[str, Any]]:
    """The calls after a whole load (a foreground open)."""
    clock = FakeClock(LATER)
    with Store.open(_config(root), clock) as store:
        answers = [_run(store, op, n, clock, root / "src") for n, (_, op) in enumerate(schedule)]
        assert_consistent(store)
        state = _state(store)
    return _plain(answers, root), {**_plain_state(state, root), **_on_disk(root)}


def _interleaved(root: Path, schedule: list[tuple[int, Op]],
                 monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict[str, Any], list[int]]:
    """The calls run between the chunks of a background load: call i no earlier than its boundary (the number of
    chunks attached) nor before call i-1, on a thread of their own (a call may wait for the load)."""
    clock = FakeClock(LATER)
    answers: list[object] = []
    work: queue.Queue[tuple[int, Op, threading.Event] | None] = queue.Queue()
    started: list[int] = []  # the boundary at which each call was handed over
    over: list[object] = []  # a tier over its capacity after a call: the load's byte totals count from the start

    def runner() -> None:
        while (item := work.get()) is not None:
            n, op, done = item
            answers.append(_run(store, op, n, clock, root / "src"))
            over.extend(t for t in store.status()["tiers"] if t["used"] > t["capacity"])  # type: ignore[attr-defined]
            done.set()

    todo = list(enumerate(schedule))
    original = index_module.Snapshot.rows

    def release(boundary: int, wait: bool) -> None:
        while todo and todo[0][1][0] <= boundary:
            n, (_, op) = todo.pop(0)
            done = threading.Event()
            started.append(boundary)
            work.put((n, op, done))
            if wait and not done.wait(0.5):  # waiting for the load (room, counts): the load goes on
                return

    def rows(snapshot: index_module.Snapshot) -> Iterator[index_module.RowValues]:
        for n, row in enumerate(original(snapshot)):
            if n % CHUNK == 0:
                release(n // CHUNK, True)
            yield row
        release(1 << 30, False)

    monkeypatch.setattr(index_module.Snapshot, "rows", rows)
    store = Store.open(_config(root), clock, background=True, load_chunk=CHUNK)
    thread = threading.Thread(target=runner)
    thread.start()
    try:
        while store.status()["loading"]:
            threading.Event().wait(0.01)
        release(1 << 30, False)  # a load that ended before a boundary came (fewer rows than expected)
        work.put(None)
        thread.join(30)
        assert not thread.is_alive()
        assert over == []
        assert_consistent(store)
        state = _state(store)
    finally:
        work.put(None)
        store.close()
    return _plain(answers, root), {**_plain_state(state, root), **_on_disk(root)}, started


def _plain(answers: list[object], root: Path) -> list[str]:
    return [repr(a).replace(str(root), "ROOT") for a in answers]


def _plain_state(state: dict[str, Any], root: Path) -> dict[str, Any]:
    return {k: repr(v).replace(str(root), "ROOT") for k, v in state.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=_schedules)
def test_calls_between_chunks_end_as_after_a_whole_load(template: Path, tmp_path_factory: pytest.TempPathFactory,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        schedule: list[tuple[int, Op]]) -> None:
    work = tmp_path_factory.mktemp("example")
    expected_answers, expected = _reference(_copy(template, work / "whole"), schedule)
    answers, got, _ = _interleaved(_copy(template, work / "streamed"), schedule, monkeypatch)
    assert answers == expected_answers
    assert got == expected
    shutil.rmtree(work)


def test_a_put_purge_and_replace_in_the_middle_of_the_load(template: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases by name: a purge of a row not loaded yet, a replacement of one (on another tier), an import
    that needs evictions while most of the catalog is not loaded, a pin of a row not loaded yet."""
    late = _key(HELD - 2)  # last accessed early on, so its chunk comes late? it was read again: see template
    schedule = [(1, Op("purge", _key(3))), (1, Op("put", _key(7), 500, True)), (2, Op("put", "titles/new/1", 900)),
                (2, Op("pin", late, True)), (3, Op("hits", keys=(_key(1), "titles/new/1"))),
                (3, Op("purge_prefix", "titles/2/"))]
    expected_answers, expected = _reference(_copy(template, tmp_path / "whole"), schedule)
    answers, got, started = _interleaved(_copy(template, tmp_path / "streamed"), schedule, monkeypatch)
    assert started[0] < HELD // CHUNK, "the calls ran after the load, not during it"
    assert answers == expected_answers
    assert got == expected


class _GatedLRU(LRUPolicy):
    """LRU whose add of `key` waits for `gate`: holds the load inside one chunk, under the lock."""

    def __init__(self, key: str, gate: threading.Event, inside: threading.Event) -> None:
        super().__init__()
        self.key, self.gate, self.inside = key, gate, inside

    def add(self, key: str, size: int) -> None:
        if key == self.key:
            self.inside.set()
            assert self.gate.wait(10)
        super().add(key, size)


def test_a_call_during_the_load_waits_for_the_chunk_being_attached_and_no_more(
        template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted in chunks, not time: a put, a purge, a pin, a lookup and a listing that arrive while the second
    chunk is being attached (the lock held) all finish once it is, while the load is held before the third;
    and calls that arrive between two chunks finish without any chunk more."""
    root = _copy(template, tmp_path / "store")
    config = _config(root)
    index = Index.open(index_path(str(root / "state")))
    snapshot = index.snapshot()
    order = [row[0] for row in snapshot.rows()]  # the load's order: least recently accessed first
    snapshot.close()
    index.close(clean=True)
    gate, inside, between, go_on = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    original = index_module.Snapshot.rows

    def rows(snapshot: index_module.Snapshot) -> Iterator[index_module.RowValues]:
        for n, row in enumerate(original(snapshot)):
            if n == 2 * CHUNK:  # the second chunk attached: hold the load here
                between.set()
                assert go_on.wait(10)
            yield row

    monkeypatch.setattr(index_module.Snapshot, "rows", rows)
    policies: list[_GatedLRU] = []

    def policy() -> _GatedLRU:
        policies.append(_GatedLRU(order[CHUNK], gate, inside))  # the first row of the second chunk
        return policies[-1]

    clock = FakeClock(LATER)
    source = root / "src" / "new"
    source.write_bytes(blob(100, "new"))
    store = Store.open(config, clock, policy=policy, background=True, load_chunk=CHUNK)
    try:
        assert inside.wait(10)
        results: list[object] = []
        calls: list[Callable[[], object]] = [
            lambda: store.put_file(str(source), "titles/new/a"), lambda: store.evict(order[-1]),
            lambda: store.set_pinned(order[-2], True), lambda: store.lookup([order[-3]]),
            lambda: store.list("titles/1/")]
        threads = [threading.Thread(target=lambda c=c: results.append(c())) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(0.2)
            assert t.is_alive(), "a call ran while the lock was held for a chunk"
        gate.set()
        assert between.wait(10)
        for t in threads:
            t.join(10)
            assert not t.is_alive(), "a call waited for more than the chunk being attached"
        assert store.status()["objects"] == 2 * CHUNK + 2  # two chunks, the put, the pinned one taken out of turn
        assert len(results) == len(calls)
        # between two chunks: nothing waits
        assert store.evict("titles/new/a") and store.get(order[-4]) is not None
        assert store.status()["loading"] is True
        go_on.set()
        while store.status()["loading"]:
            threading.Event().wait(0.01)
        assert_consistent(store)
        assert store.get(order[-1]) is None and store.get(order[-2]).pinned  # type: ignore[union-attr]
    finally:
        gate.set()
        go_on.set()
        store.close()
