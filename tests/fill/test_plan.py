"""The runner's pure part: the diff of a plan and an inventory as exact commands, coverage, the window."""

from __future__ import annotations

import pytest

from control.fill_plan import BoxPlan, FillSettings, PlannedFile, Source, TierCapacity, plan_fleet
from control.model import Box, CatalogFile, Fleet, Site, Title
from fill.plan import Fetch, SetPin, coverage, diff, failure_reasons, prefetch_items, summarize
from oca.wire.inventory import InventoryObject
from oca.wire.window import Window

ORIGIN = Source("origin", "http://origin.test", "origin")
PEER = Source("b2", "http://b2.test:8080", "peer")


def planned(key: str, size: int = 10, digest: str = "d", pin: bool = True) -> PlannedFile:
    return PlannedFile(key, key.split("/")[1], size, digest + key, "hdd", False, pin, ("b2", "origin"))


PLAN = BoxPlan("b1", "s", (), (), (planned("titles/1/a"), planned("titles/1/b"), planned("titles/2/a", pin=False)),
               (), {"origin": ORIGIN, "b2": PEER})


def held(key: str, size: int = 10, digest: str | None = None, pinned: bool = True) -> InventoryObject:
    return InventoryObject(key, size, digest if digest is not None else "d" + key, pinned)


def test_an_empty_box_fetches_everything_in_plan_order() -> None:
    changes = diff(PLAN, [])
    assert changes.commands() == [Fetch(PLAN.files)]
    assert changes.fetch_bytes == 30 and changes.keep == ()


def test_present_files_are_kept_pinned_and_dropped_ones_unpinned_first() -> None:
    inventory = [held("titles/1/a", pinned=False), held("titles/2/a", pinned=False),
                 held("titles/9/old"), held("titles/9/big@slice000001"), held("titles/9/unpinned", pinned=False),
                 held("other/pinned")]
    changes = diff(PLAN, inventory)
    assert changes.commands() == [
        SetPin("titles/9/big@slice000001", False), SetPin("titles/9/old", False),  # dropped: unpinned first
        SetPin("titles/1/a", True),  # present, planned pinned; titles/2/a is planned unpinned: left alone
        Fetch((PLAN.files[1],)),
    ]
    assert [f.key for f in changes.keep] == ["titles/1/a", "titles/2/a"]


def test_a_copy_with_another_digest_or_size_is_fetched_again() -> None:
    changes = diff(PLAN, [held("titles/1/a", digest="stale"), held("titles/1/b", size=11), held("titles/2/a")])
    assert changes.commands() == [Fetch(PLAN.files[:2])]
    # a box that does not know the digest of its copy: size decides
    assert diff(PLAN, [InventoryObject("titles/1/a", 10, None, True)]).keep == (PLAN.files[0],)


def test_coverage_and_failure_reasons() -> None:
    there = coverage(PLAN, [held("titles/1/a"), held("titles/1/b", digest="bad")])
    assert (there.files, there.present_files, there.present_bytes) == (3, 1, 10)
    assert there.missing == ("titles/1/b", "titles/2/a") and not there.complete
    reasons = failure_reasons({"k1": "fail: origin: timeout after 5s", "k2": "fail: origin: timeout after 7s",
                               "k3": "absent"})
    assert reasons == {"origin: timeout after N": 2, "absent": 1}


def test_prefetch_items_carry_the_source_order() -> None:
    items = prefetch_items(PLAN, PLAN.files[:1])
    assert [item.to_json() for item in items] == [
        {"key": "titles/1/a", "size": 10, "digest": "dtitles/1/a", "hot": False, "pin": True,
         "sources": [{"name": "b2", "url": "http://b2.test:8080", "kind": "peer"},
                     {"name": "origin", "url": "http://origin.test", "kind": "origin"}]}]


def test_summary_by_tier_and_first_source() -> None:
    fleet = Fleet({"s": Site("s", 0, 0, "NL")},
                  {b: Box(b, "s", f"http://{b}:8080", f"http://{b}:8081", 10**9) for b in ("b1", "b2")}, (),
                  "http://origin.test")
    titles = [Title(t, (), (CatalogFile(f"titles/{t}/f", 100, "d"),)) for t in ("1", "2", "3")]
    tiers = {b: [TierCapacity("ssd", 1000), TierCapacity("hdd", 10_000)] for b in ("b1", "b2")}
    plan = plan_fleet(fleet, titles, {"s": {"1": 10.0}}, tiers, settings=FillSettings(replication=2))
    summary = summarize(plan.boxes["b1"])
    assert summary["files"] == 3 and summary["bytes"] == 300 and summary["head_titles"] == 1
    assert summary["by_tier"] == {"ssd (hot)": {"files": 1, "bytes": 100}, "hdd": {"files": 2, "bytes": 200}}
    assert sum(v["files"] for v in summary["by_first_source"].values()) == 3


@pytest.mark.parametrize(("text", "second", "remaining"), [
    ("02:00-14:00", 1 * 3600, 0.0),
    ("02:00-14:00", 2 * 3600, 12 * 3600.0),
    ("02:00-14:00", 13 * 3600 + 1800, 1800.0),
    ("02:00-14:00", 14 * 3600, 0.0),
    ("22:00-06:00", 23 * 3600, 7 * 3600.0),
    ("22:00-06:00", 1 * 3600, 5 * 3600.0),
    ("22:00-06:00", 12 * 3600, 0.0),
    ("00:00-24:00", 5.5, 86400 - 5.5),
    ("10:00:00-10:00:30", 36010, 20.0),
])
def test_window_remaining(text: str, second: float, remaining: float) -> None:
    window = Window.parse(text)
    assert window is not None and window.remaining(second) == pytest.approx(remaining)


@pytest.mark.parametrize("text", ["", "2-14", "02:00", "02:00-02:00", "25:00-02:00", "02:60-03:00", "24:00-01:00",
                                  "x-y"])
def test_bad_windows_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        Window.parse(text)


def test_always_means_no_window() -> None:
    assert Window.parse("always") is None
    assert str(Window.parse("02:00-14:00")) == "02:00-14:00"
