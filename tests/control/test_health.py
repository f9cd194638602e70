"""Health polling: concurrency with timeouts, hysteresis k down / m up, load, draining, junk answers."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

from control.health import HealthPoller
from control.model import Box, Fleet, Site
from control.status_client import StatusClient
from tests.clock import FakeClock
from tests.control.fixtures import FakeBox
from tests.control.test_status_client import Server, ok


async def _fleet(aiohttp_server: Any, *fakes: FakeBox) -> Fleet:
    boxes = {}
    for fake in fakes:
        server = await aiohttp_server(fake.app())
        url = f"http://127.0.0.1:{server.port}"
        boxes[fake.box_id] = Box(fake.box_id, "lab", url, url, egress_capacity=1_000_000)
    return Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin")


async def test_hysteresis_k_down_m_up(aiohttp_server: Any) -> None:
    fake = FakeBox("b1")
    fleet = await _fleet(aiohttp_server, fake)
    clock = FakeClock(1000.0)
    poller = HealthPoller(fleet, clock, timeout=1.0, down_after=3, up_after=2)
    assert not poller.health()["b1"].healthy  # not polled yet
    await poller.poll_once()
    assert poller.health()["b1"].healthy  # the first poll decides directly
    assert not gc.is_tracked(poller.health()["b1"])  # made at every poll: out of the collector's sight
    assert poller.health()["b1"].last_healthy_poll == 1000.0
    fake.mode = "error"
    for expected in (True, True, False):  # k = 3 failures
        clock.now += 1
        await poller.poll_once()
        assert poller.health()["b1"].healthy is expected
    assert "500" in (poller.health()["b1"].error or "")
    fake.mode = "ok"
    clock.now += 1
    await poller.poll_once()
    assert not poller.health()["b1"].healthy  # m = 2 successes
    assert poller.health()["b1"].last_healthy_poll == clock.now  # yet the poll itself was good
    clock.now += 1
    await poller.poll_once()
    assert poller.health()["b1"].healthy


async def test_every_bad_poll_is_counted_even_one_that_does_not_mark_the_box_down(aiohttp_server: Any) -> None:
    fake, other = FakeBox("b1"), FakeBox("b2")
    fleet = await _fleet(aiohttp_server, fake, other)
    poller = HealthPoller(fleet, FakeClock(1000.0), timeout=1.0, down_after=2, up_after=1)
    await poller.poll_once()
    fake.mode = "error"
    await poller.poll_once()  # one miss in down_after = 2: still healthy, and nothing else would remember it
    fake.mode = "ok"
    await poller.poll_once()
    assert poller.health()["b1"].healthy and poller.health()["b1"].error is None
    assert poller.poll_counts("b1") == (3, 1) and poller.poll_counts("b2") == (3, 0)
    fake.mode = "hang"
    poller.timeout = 0.2
    for _ in range(2):
        await poller.poll_once()
    assert not poller.health()["b1"].healthy
    assert poller.poll_counts("b1") == (5, 3) and poller.failed_polls == 3 and poller.polls == 10
    assert poller.poll_counts("unknown") == (0, 0)


async def test_junk_wrong_box_and_hang_are_failures_and_do_not_slow_the_others(aiohttp_server: Any) -> None:
    fakes = [FakeBox("good"), FakeBox("junk", mode="junk"), FakeBox("hang", mode="hang"),
             FakeBox("wrong", mode="wrong-box"), FakeBox("error", mode="error")]
    fleet = await _fleet(aiohttp_server, *fakes)
    poller = HealthPoller(fleet, time.time, timeout=0.3, down_after=1, up_after=1)
    started = time.monotonic()
    await poller.poll_once()
    elapsed = time.monotonic() - started
    health = poller.health()
    assert elapsed < 0.3 + 0.5, elapsed  # one timeout, not one per box
    assert health["good"].healthy and health["good"].version == "9.9"
    for box_id in ("junk", "hang", "wrong", "error"):
        assert not health[box_id].healthy, box_id
    assert "not JSON" in (health["junk"].error or "")
    assert "no answer within" in (health["hang"].error or "")
    assert "someone-else" in (health["wrong"].error or "")


async def test_background_polls_of_a_hanging_box_do_not_delay_the_others(aiohttp_server: Any) -> None:
    good, hang = FakeBox("good"), FakeBox("hang", mode="hang")
    fleet = await _fleet(aiohttp_server, good, hang)
    poller = HealthPoller(fleet, time.time, interval=0.1, timeout=1.0, down_after=1, up_after=1)
    poller.start()
    try:
        await asyncio.sleep(0.65)
    finally:
        await poller.stop()
    assert good.status_calls >= 5  # every 100 ms although its neighbour hangs for a whole second each time
    assert hang.status_calls <= 2


async def test_load_draining_failed_tiers_and_operator_drain(aiohttp_server: Any) -> None:
    fake = FakeBox("b1", egress_bps=450_000, draining=True,
                   tiers=[{"name": "ssd", "state": "failed"}, {"name": "hdd", "state": "up"}])
    fleet = await _fleet(aiohttp_server, fake)
    poller = HealthPoller(fleet, time.time, timeout=1.0)
    await poller.poll_once()
    h = poller.health()["b1"]
    assert h.healthy and h.draining and h.load == 0.45 and h.failed_tiers == ("ssd",)
    fake.draining = False
    await poller.poll_once()
    assert not poller.health()["b1"].draining
    poller.set_drained(frozenset({"b1"}))
    assert poller.health()["b1"].draining
    fake.tiers = [{"name": "ssd", "state": "failed"}]
    poller.down_after = 1
    await poller.poll_once()
    assert not poller.health()["b1"].healthy
    assert poller.health()["b1"].error == "every tier has failed"


async def test_a_recovering_box_must_have_applied_the_invalidation_log(aiohttp_server: Any) -> None:
    fake = FakeBox("b1", mode="error", invalidation_seq=3)
    fleet = await _fleet(aiohttp_server, fake)
    poller = HealthPoller(fleet, time.time, timeout=1.0, down_after=1, up_after=1,
                          required_seq=lambda: 5)
    await poller.poll_once()
    assert not poller.health()["b1"].healthy
    fake.mode = "ok"
    await poller.poll_once()
    assert not poller.health()["b1"].healthy
    assert "invalidations not applied" in (poller.health()["b1"].error or "")
    fake.invalidation_seq = 5
    await poller.poll_once()
    assert poller.health()["b1"].healthy


async def test_a_drain_the_box_acknowledged_counts_before_the_next_poll(aiohttp_server: Any) -> None:
    fake = FakeBox("b1", draining=True)
    fleet = await _fleet(aiohttp_server, fake)
    poller = HealthPoller(fleet, FakeClock(1000.0))
    await poller.poll_once()
    assert poller.health()["b1"].draining
    poller.box_draining("b1", False)  # the box answered 200 to /undrain
    assert not poller.health()["b1"].draining
    poller.set_drained(frozenset({"b1"}))  # an operator drain held by the control plane still counts
    assert poller.health()["b1"].draining


async def test_stop_ends_a_task_whose_poll_ends_as_it_is_cancelled(monkeypatch: Any) -> None:
    """On Python 3.11 `asyncio.wait_for` returns the result when the awaited call ends just as the cancel
    arrives: the box's task then went on to its next sleep (an hour here) and stop() never returned. Each
    round ends the fetch a different number of loop turns before the cancel, to land on that moment."""
    box = Box("b1", "lab", "http://127.0.0.1:9", "http://127.0.0.1:9", egress_capacity=1_000_000)
    fleet = Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, {"b1": box}, (), "http://origin")
    for turns in range(5):
        poller = HealthPoller(fleet, FakeClock(1000.0), interval=3600.0, timeout=30.0)
        fetching, answer = asyncio.Event(), asyncio.Event()

        async def fetch(box: Box, fetching: asyncio.Event = fetching, answer: asyncio.Event = answer) -> Any:
            fetching.set()
            await answer.wait()
            raise OSError("connection refused")

        monkeypatch.setattr(poller, "_fetch", fetch)
        poller.start()
        await fetching.wait()
        answer.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(poller.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)  # a hang guard, not a measurement
        assert stopping in done, f"stop() did not return ({turns} loop turns between the answer and the cancel)"


async def test_health_view_is_live_and_read_only(aiohttp_server: Any) -> None:
    fake = FakeBox("b1")
    fleet = await _fleet(aiohttp_server, fake)
    poller = HealthPoller(fleet, FakeClock(1000.0), timeout=1.0, down_after=1, up_after=1)
    view = poller.health_view()
    copy = poller.health()
    assert not view["b1"].healthy
    await poller.poll_once()
    assert view["b1"].healthy and not copy["b1"].healthy  # the view follows, the copy does not
    assert view == poller.health()
    with pytest.raises(TypeError):
        view["b1"] = copy["b1"]  # type: ignore[index]


def _many(n: int) -> Fleet:
    boxes = {f"b{i}": Box(f"b{i}", "lab", "http://127.0.0.1:9", "http://127.0.0.1:9", egress_capacity=1_000_000)
             for i in range(n)}
    return Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin")


def test_a_round_starts_its_polls_spread_over_interval_minus_timeout() -> None:
    poller = HealthPoller(_many(4), FakeClock(1000.0), interval=2.0, timeout=1.0)
    assert poller.offsets() == [0.0, 0.25, 0.5, 0.75]  # the last poll's timeout still ends by 1.75 s < 2 s
    assert HealthPoller(_many(3), FakeClock(1000.0), interval=1.0, timeout=1.0).offsets() == [0.0, 0.0, 0.0]


async def test_polls_in_flight_are_bounded_and_rounds_are_counted(monkeypatch: Any) -> None:
    poller = HealthPoller(_many(10), FakeClock(1000.0), interval=3600.0, timeout=5.0, concurrency=3)
    inflight, most = 0, 0

    async def fetch(box: Box) -> Any:
        nonlocal inflight, most
        inflight += 1
        most = max(most, inflight)
        await asyncio.sleep(0.01)
        inflight -= 1
        raise OSError("refused")

    monkeypatch.setattr(poller, "_fetch", fetch)
    assert (poller.rounds, poller.unpolled, poller.last_round) == (0, 10, None)
    await poller.poll_once()
    assert most == 3
    assert poller.rounds == 1 and poller.unpolled == 0 and poller.last_round is not None
    assert all(poller.last_poll(f"b{i}") is not None for i in range(10))


async def test_scheduled_polls_keep_their_places_in_the_interval(monkeypatch: Any) -> None:
    """Lower bounds only (a loaded machine may start a poll late, never early)."""
    poller = HealthPoller(_many(4), FakeClock(1000.0), interval=0.8, timeout=0.4, concurrency=2)
    starts: dict[str, list[float]] = {}
    loop = asyncio.get_running_loop()

    async def fetch(box: Box) -> Any:
        starts.setdefault(box.id, []).append(loop.time())
        raise OSError("refused")

    monkeypatch.setattr(poller, "_fetch", fetch)
    begun = loop.time()
    poller.start()
    try:
        await asyncio.sleep(1.4)
    finally:
        await poller.stop()
    assert [len(starts[f"b{i}"]) for i in range(4)] == [2, 2, 2, 2]  # rounds at 0 and 0.8 s, the next at 1.6 s
    for i in range(4):
        assert starts[f"b{i}"][0] - begun >= 0.1 * i - 0.001  # box i at i/4 of the 0.4 s span
        assert starts[f"b{i}"][1] - begun >= 0.8 + 0.1 * i - 0.001
    assert poller.rounds >= 1 and poller.skipped == 0


async def test_every_connection_is_open_before_the_first_scheduled_poll() -> None:
    """The first round asks over kept connections only: the schedule opens them all first (no box had been
    polled before, as for the boxes a first poll at start did not reach)."""
    events: list[tuple[str, int]] = []
    servers = []
    for i in range(6):
        srv = Server(lambda head, i=i: events.append(("ask", i)) or ok(f'{{"box": "b{i}"}}'.encode()))
        servers.append(srv)
    boxes = {}
    for i, srv in enumerate(servers):
        url = await srv.start()
        boxes[f"b{i}"] = Box(f"b{i}", "lab", url, url, egress_capacity=1_000_000)
        srv.on_connect = lambda i=i: events.append(("open", i))
    poller = HealthPoller(Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin"), FakeClock(1000.0),
                          interval=0.4, timeout=0.2, concurrency=2)
    poller.start()
    try:
        while poller.rounds < 1:
            await asyncio.sleep(0.01)
    finally:
        await poller.stop()
        for srv in servers:
            await srv.stop()
    opened = [i for kind, i in events if kind == "open"]
    assert sorted(opened) == list(range(6))  # one connection a box, kept from one poll to the next
    assert [kind for kind, _ in events[:6]] == ["open"] * 6  # every one opened before the first ask


async def test_warm_opens_what_the_client_has_room_for_and_skips_a_box_it_cannot_reach() -> None:
    servers = [Server(lambda head: ok()) for _ in range(3)]
    urls = ["http://127.0.0.1:9"] + [await srv.start() for srv in servers]  # nothing listens on port 9
    boxes = {f"b{i}": Box(f"b{i}", "lab", url, url, egress_capacity=1_000_000) for i, url in enumerate(urls)}
    poller = HealthPoller(Fleet({"lab": Site("lab", 0.0, 0.0, "NL")}, boxes, (), "http://origin"), FakeClock(1000.0),
                          timeout=1.0, client=StatusClient(max_idle=2))
    assert await poller.warm() == 2 and poller.client.idle == 2
    assert await poller.warm() == 0  # kept already, and no room
    assert servers[0].connections == servers[1].connections == 1
    await poller.stop()
    for srv in servers:
        await srv.stop()
