"""oca.serve.housekeeping with a stand-in store and clock: the egress rate and when the title inventory is read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oca.config import StorageConfig
from oca.serve.housekeeping import Housekeeping
from oca.storage import ObjectInfo, Store
from tests.clock import FakeClock


class Sent:  # the part of FleetStats housekeeping reads
    def __init__(self) -> None:
        self.bytes_out = 0

    def summary(self) -> dict[str, Any]:
        return {"bytes_out": self.bytes_out}


class StandInStore:
    def __init__(self) -> None:
        self.objects: list[ObjectInfo] = []
        self.generation = 1
        self.listings = 0

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn is Store.status:
            return {"objects": len(self.objects), "generation": self.generation,
                    "tiers": [{"used": sum(o.size for o in self.objects)}]}
        assert fn is Store.list and args == ("titles/",), (fn, args)
        self.listings += 1
        return list(self.objects)


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


def _object(key: str, size: int) -> ObjectInfo:
    return ObjectInfo(key=key, tier="ssd", path="/nowhere", size=size, digest="", stored_at=0.0, hot=False,
                      pinned=False)


async def test_the_inventory_is_listed_only_when_the_store_moved() -> None:
    store = StandInStore()
    housekeeping = _housekeeping(store, Sent(), FakeClock())
    start = housekeeping.title_inventory.sequence
    store.objects = [_object("titles/7/720p/seg_1.m4s", 100)]
    await housekeeping._refresh_inventory()
    await housekeeping._refresh_inventory()  # nothing moved: not listed again
    assert (store.listings, housekeeping.title_inventory.sequence) == (1, start + 1)
    store.generation += 1  # e.g. a purge and a fill of the same size
    await housekeeping._refresh_inventory()
    assert (store.listings, housekeeping.title_inventory.sequence) == (2, start + 1)  # same holdings: same sequence
    store.objects.append(_object("titles/8/720p/seg_1.m4s", 50))
    await housekeeping._refresh_inventory()
    assert (store.listings, housekeeping.title_inventory.sequence) == (3, start + 2)
