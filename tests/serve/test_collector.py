"""The master's start-up objects are frozen out of the garbage collector (issue 20: `/status` during an import).

A full collection walks every container object the process holds while the thread that runs it holds the
GIL: in the master, a storage thread's collection stopped the event loop (and /status) 34-140 ms a time,
every few seconds of an import. These tests check the mechanism, not a timing."""

from __future__ import annotations

import gc
import re
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from oca.serve import collector


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's objects back under the collector, as the other tests expect


def test_settle_freezes_what_lives_and_leaves_no_garbage_frozen(unfrozen: None) -> None:
    class Cycle:
        me: Any = None

    alive = Cycle()
    dead = Cycle()
    dead.me = dead  # garbage only a collection frees: settle collects it before freezing
    gone = weakref.ref(dead)
    del dead
    frozen = collector.settle()
    assert frozen == gc.get_freeze_count() > 1000  # this process's modules, at least
    assert gone() is None  # collected, not frozen for ever
    assert not any(o is alive for o in gc.get_objects())  # frozen: no collection walks it
    made_after = Cycle()
    assert any(o is made_after for o in gc.get_objects())  # what comes later is collected as before


def test_a_full_collection_after_settle_walks_only_what_came_after(unfrozen: None) -> None:
    collector.settle()
    assert len(gc.get_objects()) < 1000  # what the collector still walks: what pytest made since


def test_the_master_freezes_its_start_up(box_factory: Any) -> None:
    box = box_factory(log={"level": "debug"})
    deadline = time.monotonic() + 10  # the box serves before the master logs that it has started
    while not (found := re.search(r"(\d+) objects of the start-up frozen out of the garbage collector", box.log())):
        assert time.monotonic() < deadline, box.log()
        time.sleep(0.05)
    assert int(found.group(1)) > 10_000  # the master's modules and parts: tens of thousands
