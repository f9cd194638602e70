"""The catalog's packed records: what an entry reads back, which copy is current, and the bytes per object."""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from collections.abc import Callable

import pytest

from oca.config.model import TierConfig
from oca.storage.catalog import Catalog, CatalogEntry
from oca.storage.layout import key_hash
from oca.storage.policy import LRUPolicy, Place
from oca.storage.slots import KeySlots


class _NoPolicy(LRUPolicy):
    """Holds nothing, so a measurement sees the catalog's own bytes only."""

    def add(self, key: str, size: int) -> None:
        pass


def _catalog(policy: Callable[[], LRUPolicy] = LRUPolicy) -> Catalog:
    return Catalog([TierConfig("ssd", "/nonexistent/ssd", 1 << 40), TierConfig("hdd", "/nonexistent/hdd", 1 << 40)],
                   policy)


def _entry(key: str, tier: int = 1, size: int = 4096, digest: str = "0123456789abcdef" * 2,
           pinned: bool = False) -> CatalogEntry:
    return CatalogEntry(key, key_hash(key), tier, size, digest, 1.7e9, 1.7e9 + 5, hot=True, pinned=pinned)


def test_an_entry_reads_back_every_field_it_was_attached_with() -> None:
    cat = _catalog()
    cat.attach(_entry("titles/1/a.m4s", pinned=True))
    cat.attach(CatalogEntry("odd", "", 0, 7, "not-a-hex-digest", 1.0, 2.0, hot=False, pinned=False))
    got = cat.entries.get("titles/1/a.m4s")
    assert got is not None
    assert (got.key, got.hash, got.tier, got.size, got.digest, got.stored_at, got.last_access, got.hot,
            got.pinned) == ("titles/1/a.m4s", key_hash("titles/1/a.m4s"), 1, 4096, "0123456789abcdef" * 2, 1.7e9,
                            1.7e9 + 5, True, True)
    odd = cat.entries["odd"]
    assert (odd.hash, odd.tier, odd.digest, odd.hot, odd.pinned) == (key_hash("odd"), 0, "not-a-hex-digest", False,
                                                                     False)
    assert cat.entries.get("missing") is None and "odd" in cat.entries and len(cat.entries) == 2
    assert sorted(cat.entries) == ["odd", "titles/1/a.m4s"]
    assert [(t.objects, t.used, t.pinned) for t in cat.tiers] == [(1, 7, 0), (1, 4096, 4096)]


def test_a_copy_of_a_replaced_object_is_not_current_even_in_a_reused_record() -> None:
    cat = _catalog()
    old = _entry("k")
    cat.attach(old)
    assert cat.current(old)
    assert cat.detach(old)
    new = _entry("k", digest="f" * 32)
    cat.attach(new)  # takes the record `old` had
    assert not cat.current(old) and cat.current(new)
    assert not cat.detach(old), "a stale copy must not remove its replacement"
    assert cat.entries["k"].digest == "f" * 32
    cat.set_pinned(old, True)  # a stale copy changes nothing stored
    assert not cat.entries["k"].pinned and cat.tiers[1].pinned == 0


def test_pins_and_access_times_are_written_to_the_record() -> None:
    cat = _catalog()
    entry = _entry("k")
    cat.attach(entry)
    cat.set_pinned(entry, True)
    cat.set_accessed(entry, 1.8e9)
    got = cat.entries["k"]
    assert got.pinned and got.last_access == 1.8e9 and cat.tiers[1].pinned == 4096
    cat.set_pinned(got, False)
    assert not cat.entries["k"].pinned and cat.tiers[1].pinned == 0


def test_a_copy_taken_before_a_pin_changed_keeps_the_pinned_bytes_right() -> None:
    # copies are planned with and carried out later: the record, not the copy, says whether it is pinned
    cat = _catalog()
    cat.attach(_entry("k"))
    stale = cat.entries["k"]
    cat.set_pinned(cat.entries["k"], True)
    cat.set_pinned(stale, True)  # already pinned: counted once
    assert cat.tiers[1].pinned == 4096
    assert cat.detach(stale)
    assert cat.tiers[1].pinned == 0 and "k" not in cat.pinned_keys
    cat.attach(_entry("k", pinned=True))
    stale = cat.entries["k"]
    cat.set_pinned(cat.entries["k"], False)
    cat.set_pinned(stale, False)  # already unpinned: not taken off twice
    assert cat.tiers[1].pinned == 0


def test_prefix_and_tier_listings_see_only_what_matches() -> None:
    cat = _catalog()
    for i in range(6):
        cat.attach(_entry(f"titles/{i % 2}/s{i}", tier=i % 2))
    assert sorted(e.key for e in cat.matching("titles/1/")) == ["titles/1/s1", "titles/1/s3", "titles/1/s5"]
    assert sorted(e.key for e in cat.on(cat.tiers[0])) == ["titles/0/s0", "titles/0/s2", "titles/0/s4"]


def test_the_catalog_keeps_no_python_object_per_stored_object() -> None:
    """The bytes the catalog adds per object, beyond the key string (shared with the policy): a dict slot, a
    record number and the packed record -- about 110 bytes. A dataclass per object with its own hash and
    digest strings (what it held before) cost over 300."""
    n = 20_000
    keys = [f"titles/{i // 500}/720p/seg_{i % 500:05d}.m4s" for i in range(n)]
    digests = [f"{i:032x}" for i in range(n)]
    cat = _catalog(_NoPolicy)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, digest in zip(keys, digests, strict=True):
            cat.attach(CatalogEntry(key, "", 1, 4096 + len(key), digest, 1.7e9, 1.7e9, hot=False, pinned=False))
        gc.collect()
        per_object = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_object < 160, per_object


def test_a_plan_checks_pins_without_looking_up_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan asks whether each victim it looks at is pinned: the pinned set answers (what a pin changes
    keeps it and the records' flags in step), so the only record looked up by key is each victim's size;
    a look-up of the record per pin check cost ~30 bytecodes a victim. The answers are the flags'."""
    cat = Catalog.with_policy([TierConfig("ssd", "/nonexistent/ssd", 4 * 100),
                               TierConfig("hdd", "/nonexistent/hdd", 6 * 100)], "s3fifo")
    for i in range(10):
        cat.attach(_entry(f"k{i}", tier=0 if i < 4 else 1, size=100, pinned=i in (0, 4, 5)))
    cat.set_pinned(cat.entries["k5"], False)
    cat.set_pinned(cat.entries["k6"], True)
    for key in ("k1", "k2", "k3"):  # read: worth keeping, so the SSD's victims move down and the HDD makes room
        cat.tiers[0].policy.touch(key)
    assert cat.pinned_keys == {k for k in cat.entries if cat.entries[k].pinned} == {"k0", "k4", "k6"}
    looked_up = Counter[str]()
    real = KeySlots.__getitem__

    def counted(self: KeySlots, key: str) -> int:
        looked_up[key] += 1
        return real(self, key)

    monkeypatch.setattr(KeySlots, "__getitem__", counted)
    moves = cat.plan(cat.tiers[0], 200, "new")
    victims = [m.key for m in moves if not isinstance(m, Place)]
    assert [type(m).__name__ for m in moves] == ["Delete", "Demote", "Delete", "Demote", "Place"], moves
    assert not {"k0", "k4", "k6"} & set(victims)
    assert looked_up == Counter(victims)  # each victim's size, once
    cat.detach(cat.entries["k4"])
    assert cat.pinned_keys == {"k0", "k6"}
