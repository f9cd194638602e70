"""`GET /v1/fill-plans/<box>` and `GET /v1/fleet/titles` in process against fake boxes; "live" by objects and
bytes."""

from __future__ import annotations

from control.inventory import InventoryTracker, _BoxTitles
from control.status_client import StatusClient
from control.steering import rendezvous_order
from tests.control.test_api import BOX, OPERATOR, Lab, _json, lab  # noqa: F401 (lab is a fixture)

BIG = [{"name": "ssd", "state": "up", "capacity": 10**6, "used": 0},
       {"name": "hdd", "state": "up", "capacity": 10**7, "used": 0}]


async def test_plans_for_operator_and_box_credential_only(lab: Lab) -> None:  # noqa: F811
    for fake in lab.boxes.values():
        fake.tiers = BIG
    await lab.plane.poller.poll_once()
    plan = await _json(await lab.client.get("/v1/fill-plans/b1", headers=OPERATOR))
    assert plan["box"] == "b1" and plan["version"] == 1 and plan["window"] == "02:00-14:00"
    assert plan["settings"] == {"head_share": 0.5, "replication": 2, "headroom": 0.1, "pin": True}
    assert [t["budget"] for t in plan["tiers"]] == [900_000, 9_000_000]
    assert (await lab.client.get("/v1/fill-plans/b1", headers=BOX)).status == 200
    assert (await lab.client.get("/v1/fill-plans/b1")).status == 401
    assert (await lab.client.get("/v1/fleet/titles", headers=BOX)).status == 401  # operators only
    missing = await _json(await lab.client.get("/v1/fill-plans/nope", headers=OPERATOR), 404)
    assert missing["error"] == "unknown box 'nope'"
    # title 42, nobody watched it: on R=2 boxes, the first two in rendezvous order
    holders = []
    for box in ("b1", "b2", "b3"):
        p = await _json(await lab.client.get(f"/v1/fill-plans/{box}", headers=OPERATOR))
        if p["titles"]:
            holders.append(box)
            assert len(p["files"]) == 22 and p["bytes"] == (await lab.plane.catalog.require("42")).size
            # every file carries a score for the box's eviction (0: nobody started the title yet)
            assert all(f["score"] == 0 for f in p["files"])
    assert holders == sorted(rendezvous_order("42", ["b1", "b2", "b3"])[:2])
    # sessions started: the title's popularity spread over its files, the first positions scored highest
    site = lab.plane.config.fleet.boxes[holders[0]].site
    for _ in range(4):
        lab.plane.popularity.record(site, "42", lab.plane.clock())
    p = await _json(await lab.client.get(f"/v1/fill-plans/{holders[0]}", headers=OPERATOR))
    scores = {f["key"]: f["score"] for f in p["files"]}
    assert all(v > 0 for v in scores.values()) and sum(scores.values()) <= 4 + 1e-6
    for rendition in ("360p", "720p", "1080p", "audio"):
        mine = [scores[k] for k in sorted(scores) if k.startswith(f"titles/42/{rendition}/")]
        assert mine == sorted(mine, reverse=True) and mine[0] > mine[-1]  # playlist, init, then segments


async def test_a_box_without_known_capacity_gets_503(lab: Lab) -> None:  # noqa: F811
    lab.boxes["b2"].tiers = []
    await lab.plane.poller.poll_once()
    answer = await _json(await lab.client.get("/v1/fill-plans/b2", headers=BOX), 503)
    assert "b2" in answer["error"] and "budget is unknown" in answer["error"]


async def test_live_holders_are_sources_first_and_shown_live(lab: Lab) -> None:  # noqa: F811
    for fake in lab.boxes.values():
        fake.tiers = BIG
    lab.boxes["b3"].titles = {"42": 22}  # every file (FakeBox says 1000 bytes an object: more than the title)
    lab.boxes["b3"].inventory_sequence += 1
    lab.boxes["b2"].titles = {"42": 5}
    lab.boxes["b2"].inventory_sequence += 1
    await lab.plane.poller.poll_once()
    for box in ("b1", "b2"):
        plan = await _json(await lab.client.get(f"/v1/fill-plans/{box}", headers=OPERATOR))
        for f in plan["files"]:
            assert f["sources"][0] == "b3" and f["sources"][-1] == "origin"
            assert plan["sources"]["b3"]["kind"] == "peer"
    titles = await _json(await lab.client.get("/v1/fleet/titles", headers=OPERATOR))
    entry = next(t for t in titles["titles"] if t["id"] == "42")
    assert entry["live"] == ["b3"] and entry["boxes"]["b2"] == {"objects": 5, "bytes": 5000, "live": False}
    assert [b["id"] for b in titles["boxes"]] == ["b1", "b2", "b3"]


async def test_live_needs_every_object_and_every_byte() -> None:
    tracker = InventoryTracker(StatusClient(), lambda: {"t": 3}, title_sizes=lambda: {"t": 300})
    tracker._boxes = {"whole": _BoxTitles(1, {"t": 3}, {"t": 300}),
                      "slices": _BoxTitles(1, {"t": 5}, {"t": 200}),  # slices count as objects
                      "few": _BoxTitles(1, {"t": 2}, {"t": 400}),
                      "no-bytes": _BoxTitles(1, {"t": 3}, {})}  # an older box: the count decides
    inventory = tracker.snapshot()
    live = {box for box in tracker._boxes if inventory.live(box, "t")}
    assert live == {"whole", "no-bytes"}
    assert all(inventory.holds(box, "t") for box in tracker._boxes)


