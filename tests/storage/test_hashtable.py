"""The master's compact tables (issue 20): hashtable.OpenTable, slots.KeySlots and the S3-FIFO ghost, each checked
against a plain dict/OrderedDict model through random operations, with clusters, wrap-around, deletion and
growth forced; and growth that never moves more than hashtable.STEP buckets in one insert."""

from __future__ import annotations

import random
from array import array
from collections import OrderedDict

import pytest

from oca.storage.hashtable import STEP, OpenTable
from oca.storage.s3fifo import Ghost
from oca.storage.slots import KeySlots


class Ints(OpenTable):
    """A set of the ints 0..n-1 under a deliberately bad hash (few distinct values: long clusters, wrap-around)."""

    def __init__(self, spread: int, n: int) -> None:
        super().__init__("q", array("q", [(v * 2654435761) % spread - spread // 2 for v in range(n)]))

    def h(self, value: int) -> int:
        return self._hashes[value]  # negative hashes too

    def is_it(self, value: int, key: object) -> bool:
        return value == key

    def has(self, value: int) -> bool:
        return self.find(value, self.h(value)) == value


@pytest.mark.parametrize(("spread", "values"), [(1, 150), (7, 600), (1 << 40, 3000)])
def test_the_table_answers_as_a_set_through_growth_and_deletion(spread: int, values: int) -> None:
    """spread 1: one cluster holding everything; 7: a few long ones wrapping around the end."""
    rng = random.Random(spread)
    table, model = Ints(spread, values), set[int]()
    for step in range(2 * values):
        value = rng.randrange(values // 8 if step < values else values)
        r = rng.random()
        if value in model and r < 0.25:
            table.delete(value, table.h(value))
            model.discard(value)
        elif r < 0.5:  # find and delete in one probe
            assert table.pop(value, table.h(value)) == (value if value in model else -1)
            model.discard(value)
        elif r < 0.75:  # find and insert in one probe (the same value again: stored once)
            assert table.put(value, value, table.h(value)) == (value if value in model else -1)
            model.add(value)
        elif value not in model:
            table.insert(value, table.h(value))
            model.add(value)
        if step % 37 == 0:  # the whole table, now and then: every value held is found, none other is
            assert all(table.has(v) == (v in model) for v in range(values)), step
        assert len(table) == len(model)
    with pytest.raises(KeyError):
        table.delete(-5, table.h(-5))


def test_one_insert_moves_at_most_step_buckets_and_never_more_than_two_tables_exist() -> None:
    """Incremental rehashing: no insert pays for the table's size. 200,000 inserts cross 14 doublings."""
    table = Ints(1 << 62, 200_000)
    worst = 0
    for value in range(200_000):
        before = table.moved
        table.insert(value, table.h(value))
        worst = max(worst, table.moved - before)
        # most right after a doubling: the old table (S buckets, 0.6 S entries) and the new one (2 S)
        assert table.buckets() <= 5 * len(table) + 48
    assert worst == STEP
    assert table.moved >= 200_000 - 16  # every entry but the last table's first was moved at least once
    for value in range(0, 200_000, 1000):
        assert table.has(value)


class Colliding(str):
    """A key whose hash is fixed: KeySlots must tell keys with equal hashes apart by the key itself."""

    def __hash__(self) -> int:
        return 42


def test_keyslots_answer_as_a_dict_and_reuse_the_last_freed_slot() -> None:
    rng = random.Random(7)
    names = [f"titles/t{i % 50}/720p/seg_{i:05d}.m4s" for i in range(600)]
    names += ["", "k", "titres/été/ü.m4s", "titles/\udcff/odd", "x" * 300, "日本/語"]
    names += [Colliding(f"same/{i}") for i in range(20)]
    slots, model = KeySlots(), dict[str, int]()
    freed: list[int] = []
    for _ in range(8000):
        key = rng.choice(names)
        if key in model and rng.random() < 0.6:
            slot = slots.remove(key)
            assert slot == model.pop(key)
            freed.append(slot)
        elif key not in model:
            slot = slots.add(key)
            assert slot == (freed.pop() if freed else len(model) + len(freed))  # the last freed first
            model[key] = slot
        probe = rng.choice(names)
        assert slots.get(probe) == model.get(probe) and (probe in slots) == (probe in model)
        assert len(slots) == len(model)
    assert slots.items() == sorted(((str(k), s) for k, s in model.items()), key=lambda item: item[1])
    assert sorted(slots) == sorted(map(str, model))
    for key, slot in model.items():
        assert slots.key(slot) == key and slots[key] == slot and type(slots.key(slot)) is str
    with pytest.raises(KeyError):
        slots.remove("never added")
    assert 5 not in slots  # not a key: held by nobody


def test_a_freed_place_is_reused_by_the_next_key_of_its_length() -> None:
    slots = KeySlots()
    for i in range(1000):
        slots.add(f"a/{i:06d}")
    for i in range(1000):
        slots.remove(f"a/{i:06d}")
        slots.add(f"b/{i:06d}")
    assert slots._arena.keys() == {8} and len(slots._arena[8]) == 8 * 1000


def test_the_ghost_answers_as_an_ordered_dict_of_keys_trimmed_oldest_first() -> None:
    """The ghost's table replaces a dict from hash to place: membership, count and which keys are trimmed must
    be what an OrderedDict of the keys gives (the keys' hashes are distinct here)."""
    rng = random.Random(3)
    limit = 5000
    ghost, model = Ghost(limit), OrderedDict[str, int]()
    keys = [f"titles/{i}/seg.m4s" for i in range(3000)]
    for step in range(40_000):
        key = rng.choice(keys)
        r = rng.random()
        if r < 0.55:
            size = rng.randrange(1, 40)
            ghost.remember(key, size)
            model.pop(key, None)
            model[key] = size
        elif r < 0.9:
            assert ghost.take(key) == (model.pop(key, None) is not None)
        else:
            ghost.trim(0)
            while sum(model.values()) > limit:
                model.popitem(last=False)
        assert len(ghost) == len(model), step
        probe = rng.choice(keys)
        assert (probe in ghost) == (probe in model)
    assert all(k in ghost for k in model)
