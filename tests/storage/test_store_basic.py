"""Store basics on real files: put, get, list, evict, prefix evict, pin, replace, verification."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from oca.config.model import StorageConfig, TierConfig
from oca.errors import BadRequest, ConfigError, Conflict, InsufficientStorage, NotFound, StorageError
from oca.storage import ObjectInfo, Store, TierState
from oca.storage.layout import key_hash
from tests.clock import FakeClock

from .conftest import assert_consistent, blob, digest_of, tier_files
from .locking import store_lock_held

Src = Callable[..., str]


def test_put_lands_on_the_last_tier_and_get_returns_it(store: Store, src: Src, clock: FakeClock,
                                                        tmp_path: Path) -> None:
    data = blob(1234, "a")
    info = store.put_file(src(data), "titles/t1/720p/seg1.ts")
    h = key_hash("titles/t1/720p/seg1.ts")
    assert info == ObjectInfo("titles/t1/720p/seg1.ts", "hdd", str(tmp_path / "hdd/objects" / h[:2] / h[2:4] / h),
                              1234, digest_of(data), clock.now, False, False)
    assert info.etag == f'"{digest_of(data)}"'
    assert Path(info.path).read_bytes() == data
    assert store.get("titles/t1/720p/seg1.ts") == info
    assert store.get("titles/t1/720p/other.ts") is None
    assert_consistent(store)


def test_get_now_answers_without_waiting_for_the_lock(store: Store, src: Src) -> None:
    """The master's event loop asks with get_now: the answer of `get` when the lock is free, "unknown" when
    another thread holds it (an install's fsyncs), never a wait."""
    info = store.put_file(src(), "titles/t1/720p/seg1.ts")
    assert store.get_now("titles/t1/720p/seg1.ts") == (True, info)
    assert store.get_now("titles/t1/720p/other.ts") == (True, None)
    with store_lock_held(store):
        assert store.get_now("titles/t1/720p/seg1.ts") == (False, None)
    assert store.get_now("titles/t1/720p/seg1.ts") == (True, info)


def test_hot_lands_on_the_first_tier(store: Store, src: Src) -> None:
    info = store.put_file(src(), "k", hot=True)
    assert (info.tier, info.hot) == ("ssd", True)


def test_file_names_come_from_the_key_hash_only(store: Store, src: Src, tmp_path: Path) -> None:
    info = store.put_file(src(), "../../etc/passwd")
    assert os.path.commonpath([info.path, str(tmp_path / "hdd/objects")]) == str(tmp_path / "hdd/objects")
    assert os.path.basename(info.path) == key_hash("../../etc/passwd")


def test_sidecar_describes_the_object(store: Store, src: Src) -> None:
    info = store.put_file(src(size=10), "k", pin=True)
    meta = Path(info.path + ".meta").read_text()
    for text in ('"key":"k"', '"size":10', f'"digest":"{info.digest}"', '"pinned":true', '"hot":false'):
        assert text in meta


def test_list_is_sorted_and_filtered_by_prefix(store: Store, src: Src) -> None:
    for key in ("b/2", "a/1", "b/1", "c"):
        store.put_file(src(size=10), key)
    assert [i.key for i in store.list()] == ["a/1", "b/1", "b/2", "c"]
    assert [i.key for i in store.list("b/")] == ["b/1", "b/2"]
    assert store.list("zzz") == []


def test_evict_removes_files_and_entry(store: Store, src: Src) -> None:
    info = store.put_file(src(), "k")
    assert store.evict("k") is True
    assert store.get("k") is None
    assert not os.path.exists(info.path) and not os.path.exists(info.path + ".meta")
    assert store.evict("k") is False


def test_evict_prefix(store: Store, src: Src) -> None:
    for key in ("titles/a/1", "titles/a/2", "titles/ab/1", "titles/b/1"):
        store.put_file(src(size=10), key, hot=key.endswith("2"))
    assert store.evict_prefix("titles/a/") == 2
    assert [i.key for i in store.list()] == ["titles/ab/1", "titles/b/1"]
    assert store.evict_prefix("nothing/") == 0
    assert_consistent(store)


def test_evict_bumps_the_generation_but_a_new_put_does_not(store: Store, src: Src) -> None:
    g0 = store.generation
    store.put_file(src(), "k")
    assert store.generation == g0
    store.evict("k")
    assert store.generation > g0


def test_replace_changes_content_and_bumps_generation(store: Store, src: Src) -> None:
    store.put_file(src(size=500, seed=1), "k")
    g0 = store.generation
    new = blob(700, 2)
    info = store.put_file(src(new), "k", hot=True)
    assert (info.size, info.digest, info.tier) == (700, digest_of(new), "ssd")
    assert Path(info.path).read_bytes() == new
    assert store.generation > g0
    assert len(store.list()) == 1
    assert_consistent(store)


def test_replace_on_the_same_tier(store: Store, src: Src) -> None:
    store.put_file(src(size=500, seed=1), "k")
    new = blob(500, 2)
    info = store.put_file(src(new), "k")
    assert Path(info.path).read_bytes() == new and info.digest == digest_of(new)
    assert_consistent(store)


def test_matching_digest_is_accepted_in_any_case(store: Store, src: Src) -> None:
    data = blob(100)
    assert store.put_file(src(data), "k", digest=digest_of(data).upper()).digest == digest_of(data)


def test_digest_mismatch_fails_and_leaves_nothing(store: Store, src: Src, tmp_path: Path) -> None:
    store.put_file(src(size=100, seed=1), "k")
    with pytest.raises(StorageError, match="digest"):
        store.put_file(src(size=100, seed=2), "k", digest="0" * 32)
    assert store.get("k") is not None  # the old copy is untouched
    assert tier_files(str(tmp_path / "hdd"), "tmp") == []
    assert tier_files(str(tmp_path / "ssd"), "tmp") == []


def test_missing_source_is_a_storage_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        store.put_file(str(tmp_path / "nope"), "k")


def test_bad_keys_are_refused(store: Store, src: Src) -> None:
    with pytest.raises(BadRequest):
        store.put_file(src(), "")
    with pytest.raises(BadRequest):
        store.put_file(src(), "\udcff")


def test_zero_byte_object(store: Store, src: Src) -> None:
    info = store.put_file(src(b""), "empty")
    assert info.size == 0 and os.path.getsize(info.path) == 0


def test_pin_and_unpin(store: Store, src: Src) -> None:
    store.put_file(src(), "k")
    assert store.set_pinned("k", True).pinned is True
    assert store.get("k") is not None and store.get("k").pinned  # type: ignore[union-attr]
    assert '"pinned":true' in Path(store.get("k").path + ".meta").read_text()  # type: ignore[union-attr]
    assert store.set_pinned("k", False).pinned is False
    with pytest.raises(NotFound):
        store.set_pinned("nope", True)


def test_lookup_answers_for_the_keys_asked_and_pinned_lists_only_the_pinned(store: Store, src: Src) -> None:
    for key in ("titles/1/a", "titles/1/b", "titles/2/a", "other/a"):
        store.put_file(src(size=10), key, pin=key != "titles/1/b")
    assert [i.key for i in store.lookup(["titles/2/a", "nope", "titles/1/b"])] == ["titles/2/a", "titles/1/b"]
    assert store.lookup([]) == []
    assert [i.key for i in store.pinned("titles/")] == ["titles/1/a", "titles/2/a"]
    assert [i.key for i in store.pinned()] == ["other/a", "titles/1/a", "titles/2/a"]
    # the pinned set follows every way a pin changes: unpin, pin, evict, replace unpinned
    store.set_pinned("titles/1/a", False)
    store.set_pinned("titles/1/b", True)
    store.evict("titles/2/a")
    store.put_file(src(size=12), "other/a")
    assert [i.key for i in store.pinned()] == ["titles/1/b"]
    assert all(i.pinned for i in store.pinned())


def test_larger_than_every_tier(store: Store, src: Src) -> None:
    with pytest.raises(InsufficientStorage):
        store.put_file(src(size=20_001), "big")


def test_status_shape(store: Store, src: Src, tmp_path: Path) -> None:
    store.put_file(src(size=100), "a")
    store.put_file(src(size=50), "b", hot=True)
    status = store.status()
    assert status["objects"] == 2
    assert status["generation"] == store.generation
    assert status["tiers"] == [
        {"name": "ssd", "path": str(tmp_path / "ssd"), "capacity": 10_000, "used": 50, "objects": 1,
         "state": "up", "error": ""},
        {"name": "hdd", "path": str(tmp_path / "hdd"), "capacity": 20_000, "used": 100, "objects": 1,
         "state": "up", "error": ""},
    ]
    assert (status["promotions"], status["demotions"], status["evictions"]) == (0, 0, {"ssd": 0, "hdd": 0})


def test_second_owner_is_refused_with_the_holder_pid(config: StorageConfig, store: Store) -> None:
    with pytest.raises(Conflict, match=rf"owned by another process \(pid {os.getpid()}\)"):
        Store.open(config)


def test_owner_lock_is_released_on_close(config: StorageConfig) -> None:
    Store.open(config).close()
    Store.open(config).close()


def test_closed_store_refuses_writes(config: StorageConfig, src: Src) -> None:
    s = Store.open(config)
    s.close()
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.put_file(src(), "k")


def test_tier_states_start_up(store: Store) -> None:
    tiers = store.status()["tiers"]
    assert isinstance(tiers, list)
    assert [t["state"] for t in tiers] == [TierState.UP, TierState.UP]


@pytest.mark.parametrize(("tiers", "problem"), [
    ((), "at least one tier"),
    ((TierConfig("a", "/tmp/x", 10), TierConfig("a", "/tmp/y", 10)), "used twice"),
    ((TierConfig("a", "/tmp/x", 10), TierConfig("b", "/tmp/x", 10)), "used twice"),
    ((TierConfig("", "/tmp/x", 10),), "needs a name"),
])
def test_bad_tier_config(tmp_path: Path, tiers: tuple[TierConfig, ...], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Store.open(StorageConfig(state_dir=str(tmp_path / "state"), tiers=tiers))
