"""control.inventory against boxes on real loopback sockets: the `since=N` feed (deltas, removed titles,
`full` after a reboot), the old object listing, failures that keep what we knew, and the refreshes kept off
the health rounds' path (a slow `/inventory` never lengthens a round; at most `concurrency` at once; over the
poll's kept connection)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from control.health import HealthPoller
from control.inventory import InventoryTracker
from control.model import Box, Fleet, Site


@dataclass
class InventoryBox:
    """A box's admin port: /status with `sequence`, /inventory/titles answering `answers` in turn (the last
    one again once they run out), and what it was asked."""

    box_id: str
    sequence: int = 1
    answers: list[dict[str, Any]] = field(default_factory=list)
    titles_route: bool = True  # False: an older box, /inventory/titles is 404 and /inventory lists objects
    objects: list[dict[str, Any]] = field(default_factory=list)
    inventory_delay: float = 0.0
    inventory_code: int = 200
    since: list[str] = field(default_factory=list)  # the `since` of every /inventory/titles asked
    auth: list[str | None] = field(default_factory=list)
    peers: set[object] = field(default_factory=set)  # the client ends of the connections the box saw
    status_calls: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/status", self.status), web.get("/inventory/titles", self.titles),
                        web.get("/inventory", self.listing)])
        return app

    async def status(self, request: web.Request) -> web.Response:
        self.status_calls += 1
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"box": self.box_id, "draining": False, "inventory_sequence": self.sequence,
                                  "tiers": [{"name": "ssd", "state": "up", "capacity": 100, "used": 10}]})

    async def titles(self, request: web.Request) -> web.Response:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        self.since.append(request.query.get("since", ""))
        self.auth.append(request.headers.get("Authorization"))
        if not self.titles_route:
            return web.json_response({"error": "not found"}, status=404)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.inventory_delay)
        finally:
            self.in_flight -= 1
        if self.inventory_code != 200:
            return web.Response(status=self.inventory_code, text="broken")
        return web.json_response(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])

    async def listing(self, request: web.Request) -> web.Response:
        return web.json_response({"objects": self.objects, "sequence": self.sequence})


async def _poller(aiohttp_server: Any, *fakes: InventoryBox, concurrency: int = 32, token: str | None = None,
                  **timing: float) -> tuple[HealthPoller, InventoryTracker]:
    """A poller and a tracker over the fake boxes, wired as control.plane wires them."""
    boxes = {}
    for fake in fakes:
        url = f"http://127.0.0.1:{(await aiohttp_server(fake.app())).port}"
        boxes[fake.box_id] = Box(fake.box_id, "lab", url, url, egress_capacity=1_000_000)
    fleet = Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin")
    poller = HealthPoller(fleet, time.time, token=token, **timing)
    tracker = InventoryTracker(poller.client, lambda: {}, token=token, concurrency=concurrency)
    poller.listeners.append(tracker.on_status)
    poller.followups.append(tracker.settled)
    return poller, tracker


def full(sequence: int, **titles: int) -> dict[str, Any]:
    return {"sequence": sequence, "full": True, "removed": [],
            "titles": {t: {"objects": n, "bytes": n * 10} for t, n in titles.items()}}


async def test_deltas_removed_titles_and_a_full_listing_after_a_reboot(aiohttp_server: Any) -> None:
    box = InventoryBox("b1", sequence=3, answers=[full(3, a=2, b=1)])
    poller, tracker = await _poller(aiohttp_server, box, token="box-secret")
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"a": 2, "b": 1} and tracker.bytes_of("b1") == {"a": 20, "b": 10}
    await poller.poll_once()  # the same sequence: nothing asked
    assert box.since == ["0"]
    box.sequence, box.answers = 5, [{"sequence": 5, "full": False, "titles": {"c": {"objects": 4, "bytes": 40},
                                                                               "a": {"objects": 3, "bytes": 30}},
                                     "removed": ["b"]}]
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"a": 3, "c": 4} and tracker.bytes_of("b1") == {"a": 30, "c": 40}
    box.sequence, box.answers = 1, [full(1, z=1)]  # rebooted: its sequence restarted, it says full
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"z": 1}
    assert box.since == ["0", "3", "5"] and box.auth == ["Bearer box-secret"] * 3
    assert tracker.snapshot().holds("b1", "z") and not tracker.snapshot().holds("b1", "a")
    await tracker.stop()
    poller.client.close()


async def test_an_older_box_is_read_from_its_object_listing(aiohttp_server: Any) -> None:
    objects = [{"key": "titles/7/720p/seg_1.m4s", "size": 100}, {"key": "titles/7/720p/seg_2.m4s", "size": 50},
               {"key": "titles/8/aac/seg_1.m4s", "size": 5}, {"key": "misc/robots.txt", "size": 1}]
    box = InventoryBox("b1", sequence=9, titles_route=False, objects=objects)
    poller, tracker = await _poller(aiohttp_server, box)
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"7": 2, "8": 1} and tracker.bytes_of("b1") == {"7": 150, "8": 5}
    await poller.poll_once()  # its sequence came with the listing: not asked again
    assert box.since == ["0"]
    await tracker.stop()
    poller.client.close()


async def test_a_failed_refresh_keeps_what_we_knew_and_is_retried_at_the_next_poll(aiohttp_server: Any) -> None:
    box = InventoryBox("b1", sequence=2, answers=[full(2, a=1)])
    poller, tracker = await _poller(aiohttp_server, box)
    await poller.poll_once()
    box.sequence, box.inventory_code = 3, 500
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"a": 1}
    box.inventory_code, box.answers = 200, ["not an inventory"]  # type: ignore[list-item]  # junk on purpose
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"a": 1}
    box.answers = [full(3, b=1)]
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"b": 1} and box.since == ["0", "2", "2", "2"]
    assert poller.health()["b1"].healthy  # a box's inventory is no part of its health
    await tracker.stop()
    poller.client.close()


async def test_a_slow_inventory_never_lengthens_a_poll_round(aiohttp_server: Any) -> None:
    slow = InventoryBox("slow", answers=[full(1, a=1)], inventory_delay=2.0)
    quick = InventoryBox("quick", answers=[full(1, b=1)])
    poller, tracker = await _poller(aiohttp_server, slow, quick, interval=0.5, timeout=0.25)
    poller.start()
    try:
        await asyncio.sleep(1.6)
        # rounds at 0, 0.5, 1.0 s: each ends with its polls, while slow's inventory is still being read
        assert poller.rounds >= 2 and max(poller.recent_rounds) < 0.5, list(poller.recent_rounds)
        assert slow.status_calls >= 3 and poller.skipped == 0 and poller.health()["slow"].healthy
        assert tracker.titles_of("quick") == {"b": 1} and tracker.titles_of("slow") == {}
        assert slow.since == ["0"]  # one refresh at a time per box, not one per poll
        await asyncio.wait_for(tracker.settled(), 2.0)
        assert tracker.titles_of("slow") == {"a": 1}
    finally:
        await poller.stop()
        await tracker.stop()


async def test_poll_once_waits_for_the_inventories_but_its_round_does_not(aiohttp_server: Any) -> None:
    box = InventoryBox("b1", answers=[full(1, a=1)], inventory_delay=0.5)
    poller, tracker = await _poller(aiohttp_server, box, timeout=0.25)
    started = time.monotonic()
    await poller.poll_once()
    assert time.monotonic() - started >= 0.5 and tracker.titles_of("b1") == {"a": 1}
    assert poller.last_round is not None and poller.last_round < 0.5
    await tracker.stop()
    poller.client.close()


async def test_inventories_go_over_the_polls_kept_connection(aiohttp_server: Any) -> None:
    box = InventoryBox("b1", sequence=1, answers=[full(1, a=1), full(2, a=2)])
    poller, tracker = await _poller(aiohttp_server, box)
    await poller.poll_once()
    box.sequence = 2
    await poller.poll_once()
    assert tracker.titles_of("b1") == {"a": 2} and box.since == ["0", "1"]
    assert len(box.peers) == 1 and box.status_calls == 2  # two polls and two inventories, one connection
    await tracker.stop()
    poller.client.close()


async def test_at_most_concurrency_refreshes_at_once(aiohttp_server: Any) -> None:
    reading = 0
    most = 0

    async def titles(request: web.Request) -> web.Response:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        await asyncio.sleep(0.05)
        reading -= 1
        return web.json_response(full(1, a=1))

    fakes = [InventoryBox(f"b{i}") for i in range(7)]
    servers = []
    for fake in fakes:
        app = web.Application()
        app.add_routes([web.get("/status", fake.status), web.get("/inventory/titles", titles)])
        servers.append(await aiohttp_server(app))
    boxes = {f.box_id: Box(f.box_id, "lab", f"http://127.0.0.1:{s.port}", f"http://127.0.0.1:{s.port}", 1_000_000)
             for f, s in zip(fakes, servers, strict=True)}
    poller = HealthPoller(Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin"), time.time)
    tracker = InventoryTracker(poller.client, lambda: {}, concurrency=3)
    poller.listeners.append(tracker.on_status)
    poller.followups.append(tracker.settled)
    await poller.poll_once()
    assert most == 3 and all(tracker.titles_of(f.box_id) == {"a": 1} for f in fakes)
    await tracker.stop()
    poller.client.close()


async def test_stop_cancels_the_refreshes_keeps_what_we_knew_and_queues_no_more(aiohttp_server: Any) -> None:
    box = InventoryBox("b1", sequence=1, answers=[full(1, a=1)])
    poller, tracker = await _poller(aiohttp_server, box)
    await poller.poll_once()
    box.sequence, box.answers, box.inventory_delay = 2, [full(2, b=1)], 60.0
    poll = asyncio.ensure_future(poller.poll_once())
    while tracker.pending == 0 or box.in_flight == 0:
        await asyncio.sleep(0.01)
    await tracker.stop()
    await asyncio.wait_for(poll, 1.0)  # it was waiting for the refresh: stop() ends that wait too
    assert tracker.pending == 0 and tracker.titles_of("b1") == {"a": 1}
    box.inventory_delay = 0.0
    await poller.poll_once()  # a poll ending after the stop queues nothing
    assert tracker.pending == 0 and box.since == ["0", "1"]
    poller.client.close()
