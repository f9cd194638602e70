"""The nightly fill with real processes: `oca control serve`, `oca serve` boxes, `oca fill run`, an origin.

Done-when items of issue 6 shown here: with 3 boxes in 2 sites and 20 titles, after `oca fill run` on each box
every planned byte is there with the catalog's digest, and the second box of a site took its bytes from its
peer (counted at the origin and in the box's own bytes by source); steering then ranks live holders first and
`oca fleet status --titles` shows where each title is live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fill.world import World
from tests.upstream.origin import Origin

TITLES = 20
SEGMENT = 24_000  # 12 segments per title: about 300 KB a title, 6 MB in all


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    with Origin() as origin:
        made = World(str(tmp_path), origin)
        made.make_titles(TITLES, SEGMENT)
        try:
            yield made
        finally:
            made.stop()


def check_present(world: World, box: str, plan: dict[str, Any]) -> None:
    """Every planned file is on the box with the catalog's size and digest."""
    catalog = world.catalog()
    held = world.inventory(box)
    for f in plan["files"]:
        assert f["key"] in held, f"{box} lacks {f['key']}"
        assert (held[f["key"]]["size"], held[f["key"]]["digest"]) == catalog[f["key"]], f["key"]


@pytest.mark.slow
def test_three_boxes_two_sites_fill_from_parent_and_peer(world: World) -> None:
    # site-b is site-a's parent: b1 fills from the origin, a-boxes from b1 (parent) and from each other (peer)
    world.plan_boxes({"site-a": ["a1", "a2"], "site-b": ["b1"]})
    control = world.start_control(parents={"site-a": "site-b"})
    for box in ("a1", "a2", "b1"):
        world.start_box(box)
    catalog_bytes = sum(size for size, _ in world.catalog().values())
    plans = {box: world.wait_for_plan(box) for box in ("b1", "a1", "a2")}
    assert all(len(p["titles"]) == TITLES for p in plans.values())  # room for everything: every box has all

    # the operator's view of a plan, and a dry run that changes nothing
    shown = control.cli("fill", "plan", "a2")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"box a2 (site site-a): {TITLES} titles") and "first from" in shown.stdout
    code, dry, _ = world.fill("b1", "--dry-run")
    assert code == 0 and dry["commands"][0]["command"] == "fetch" and dry["job"] is None
    assert world.inventory("b1") == {} and world.origin.count() == 0

    world.origin.reset_counters()
    by_box: dict[str, dict[str, Any]] = {}
    for box in ("b1", "a1", "a2"):
        before = world.origin.bytes_sent()
        code, summary, stderr = world.fill(box)
        assert code == 0, (summary, stderr)
        assert summary["present_bytes"] == summary["plan_bytes"] == plans[box]["bytes"]
        by_box[box] = {**summary, "origin_bytes": world.origin.bytes_sent() - before}
        check_present(world, box, plans[box])
        world.wait_live(box, list(world.titles))
        assert '"event":"progress"' in stderr  # structured log lines when stderr is not a terminal

    # every file left the origin exactly once, for b1; a1 filled from its parent, a2 from its peer
    assert world.origin.bytes_sent() == catalog_bytes
    assert all(world.origin.count(key) == 1 for key in world.catalog())
    a2 = by_box["a2"]
    assert a2["origin_bytes"] == 0
    assert a2["bytes_by_source"].get("a1", 0) >= 0.8 * a2["plan_bytes"], a2["bytes_by_source"]
    assert by_box["a1"]["bytes_by_source"].get("b1", 0) >= 0.8 * by_box["a1"]["plan_bytes"]
    status = world.boxes["a2"].admin("/status")
    assert status["fetch"]["bytes_by_source"].get("a1", 0) >= 0.8 * a2["plan_bytes"]
    print(f"a2: {a2['bytes_by_source']} of {a2['plan_bytes']} planned bytes; origin sent {a2['origin_bytes']}")

    # a second run finds everything there: nothing fetched, nothing asked of the origin
    requests = world.origin.count()
    code, again, _ = world.fill("a2")
    assert code == 0 and again["fetch_files"] == 0 and again["job"] is None
    assert world.origin.count() == requests

    # the control plane marks the titles live; steering offers live holders; the CLI table shows it
    some = sorted(world.titles)[0]
    explain = control.get(f"/v1/steering/explain?ip=127.0.0.1&title={some}")
    assert any("live" in c["reason"] for c in explain["candidates"])
    table = control.cli("fleet", "status", "--titles")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TITLE", "FILES", "SIZE", "a1", "a2", "b1"]
    assert len(rows) == TITLES and all(row.split()[-3:] == ["live", "live", "live"] for row in rows)  # SIZE: 2 words
