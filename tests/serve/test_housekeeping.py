"""oca.serve.housekeeping with a stand-in store and clock: the egress rate and when the title inventory is read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oca.config import StorageConfig
from oca.serve.housekeeping import Housekeeping
from oca.storage import Store
from oca.storage.titles import TitleCounts
from tests.clock import FakeClock


class Sent:  # the part of FleetStats housekeeping reads
    def __init__(self) -> None:
        self.bytes_out = 0

    def summary(self) -> dict[str, Any]:
        return {"bytes_out": self.bytes_out}


class StandInStore:
    """Per-title counts as the Store keeps them; any call that would list the objects fails the test."""

    def __init__(self) -> None:
        self.counts = TitleCounts(1)
        self.peeks = 0

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise AssertionError(f"housekeeping called {fn} on a storage thread")

    def peek(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert fn is Store.title_changes, fn
        self.peeks += 1
        return self.counts.take([True])


async def _no_flush() -> None:
    return None


def _housekeeping(store: StandInStore, sent: Sent, clock: FakeClock) -> Housekeeping:
    return Housekeeping(StorageConfig(), store, sent, _no_flush, clock=clock)  # type: ignore[arg-type]


def test_egress_is_measured_over_two_seconds_at_least() -> None:
    sent, clock = Sent(), FakeClock()
    housekeeping = _housekeeping(StandInStore(), sent, clock)
    seen = []
    for step, more in ((1.0, 1_000_000), (1.0, 1_000_000), (1.0, 0), (1.0, 0), (4.0, 500_000)):
        clock.advance(step)
        sent.bytes_out += more
        housekeeping._sample_egress()
        seen.append(housekeeping.egress_bps)
    # 2 MB in the first 2 s: 8 Mb/s; nothing in the next 2 s; 0.5 MB over 4 s: 1 Mb/s
    assert seen == [0, 8_000_000, 8_000_000, 0, 1_000_000]


async def test_the_inventory_reads_only_the_titles_that_changed_never_a_listing() -> None:
    store = StandInStore()
    housekeeping = _housekeeping(store, Sent(), FakeClock())
    start = housekeeping.title_inventory.sequence
    store.counts.add("titles/7/720p/seg_1.m4s", 0, 100)
    await housekeeping._refresh_inventory()
    await housekeeping._refresh_inventory()  # nothing changed: same sequence
    assert housekeeping.title_inventory.sequence == start + 1
    store.counts.remove("titles/7/720p/seg_1.m4s", 0, 100)  # a purge and a fill of the same size
    store.counts.add("titles/7/720p/seg_1.m4s", 0, 100)
    await housekeeping._refresh_inventory()
    assert housekeeping.title_inventory.sequence == start + 1  # same holdings: same sequence
    store.counts.add("titles/8/720p/seg_1.m4s", 0, 50)
    await housekeeping._refresh_inventory()
    assert housekeeping.title_inventory.sequence == start + 2
    assert store.peeks == 4
