"""CMCD-derived player statistics, pure: a worker's counts, and the master's sessions joined across workers."""

from __future__ import annotations

import pytest

from oca.admin.metrics import render_metrics
from oca.http.cmcd import parse_cmcd
from oca.serve.stats import SESSION_WINDOW, FleetStats, WorkerStats
from tests.observability.exposition import value


def cmcd(payload: str) -> dict[str, object]:
    return parse_cmcd(None, {"cmcd-request": payload})


def ship(fleet: FleetStats, worker: WorkerStats, pid: int = 1) -> None:
    fleet.add(pid, worker.take(0))


def test_plain_requests_leave_no_player_data_in_the_delta() -> None:
    worker = WorkerStats()
    worker.observe(200, "hit", "memory", 100, 0.001, "titles/1/a.m4s")
    delta = worker.take(3)
    assert delta.player is None
    assert delta.bytes_sent == [("memory", "hit", 100)]


def test_bytes_are_kept_by_tier_and_cache_result() -> None:
    worker, fleet = WorkerStats(), FleetStats()
    worker.observe(200, "hit", "memory", 100, 0.001, "k1")
    worker.observe(200, "miss", "upstream", 1000, 0.01, "k2")
    worker.observe(404, "miss", "", 20, 0.01, "k3")
    ship(fleet, worker)
    assert fleet.bytes_sent == {("memory", "hit"): 100, ("upstream", "miss"): 1000, ("none", "miss"): 20}
    assert fleet.summary()["bytes_by_tier"] == {"memory": 100, "upstream": 1000, "none": 20}
    text = render_metrics(fleet, {}, 2, False).decode()
    assert value(text, "oca_sent_bytes_total", cache="hit") == 100
    assert value(text, "oca_sent_bytes_total", cache="miss") == 1020
    assert value(text, "oca_requests_total", cache="miss") == 2


@pytest.mark.parametrize(("payload", "startup", "rebuffer"), [
    ("su,bs,sid=\"s\"", 1, 1),  # CMCD v1: bare keys are true
    ("su=?1,bs=?0,v=2,sid=\"s\"", 1, 0),  # CMCD v2 always sends them, as booleans
    ("su=?0,bs=?1,v=2,sid=\"s\"", 0, 1),
    ("sid=\"s\"", 0, 0),
])
def test_su_and_bs_count_only_when_true(payload: str, startup: int, rebuffer: int) -> None:
    worker, fleet = WorkerStats(), FleetStats()
    worker.observe_player(cmcd(payload + ",ot=v"), 100.0)
    ship(fleet, worker)
    assert fleet.player.startup.get("v", 0) == startup
    assert fleet.player.rebuffers.get("v", 0) == rebuffer
    assert fleet.player.requests == {"v": 1}


def test_histograms_take_cmcd_units_to_base_units() -> None:
    worker, fleet = WorkerStats(), FleetStats()
    worker.observe_player(cmcd("bl=1500,br=3200,d=4000,bsd=250,ot=v,v=2"), 100.0)
    worker.observe_player(cmcd("bl=45000,br=800,ot=zz"), 100.0)
    ship(fleet, worker)
    text = render_metrics(fleet, {}, 2, False, now=100.0).decode()
    assert value(text, "oca_player_buffer_length_seconds_bucket", le="2.0") == 1
    assert value(text, "oca_player_buffer_length_seconds_sum") == pytest.approx(46.5)
    assert value(text, "oca_player_bitrate_bytes_per_second_bucket", le="125000.0") == 1  # 1 Mbit/s
    assert value(text, "oca_player_bitrate_bytes_per_second_bucket", le="625000.0") == 2  # 5 Mbit/s
    assert value(text, "oca_player_bitrate_bytes_per_second_sum") == pytest.approx(4_000_000 / 8)
    assert value(text, "oca_player_media_seconds_total", ot="v") == pytest.approx(4.0)
    assert value(text, "oca_player_rebuffer_seconds_total") == pytest.approx(0.25)
    assert value(text, "oca_player_requests_total", ot="other") == 1  # an unknown ot is not a new label value


def test_startup_is_joined_across_workers() -> None:
    a, b, fleet = WorkerStats(), WorkerStats(), FleetStats()
    a.observe_player(cmcd('su,sid="s1",ot=m'), 10.0)
    a.observe_player(cmcd('su,sid="s1",ot=v'), 10.5)
    ship(fleet, a, 1)
    b.observe_player(cmcd('sid="s1",ot=v'), 12.25)  # the first request without su reached the other worker
    b.observe_player(cmcd('su,sid="s1",ot=v'), 30.0)  # a seek later on is not a second startup
    b.observe_player(cmcd('sid="s1",ot=v'), 31.0)
    ship(fleet, b, 2)
    player = fleet.player
    assert player.sessions_started == 1
    assert sum(player.startup_time) == 1 and player.startup_time_sum == pytest.approx(2.25)


def test_a_session_without_su_gives_no_startup_sample() -> None:
    worker, fleet = WorkerStats(), FleetStats()
    worker.observe_player(cmcd('sid="s2",ot=v'), 10.0)
    worker.observe_player(cmcd('su,sid="s2",ot=v'), 11.0)  # recovering from a stall: not a startup
    worker.observe_player(cmcd('sid="s2",ot=v'), 12.0)
    ship(fleet, worker)
    worker.observe_player(cmcd('sid="s2",ot=v'), 14.0)
    ship(fleet, worker)
    assert sum(fleet.player.startup_time) == 0 and fleet.player.sessions_started == 1


def test_concurrent_sessions_are_those_seen_within_the_window() -> None:
    worker, fleet = WorkerStats(), FleetStats()
    worker.observe_player(cmcd('sid="old"'), 100.0)
    worker.observe_player(cmcd('sid="new"'), 100.0 + SESSION_WINDOW)
    worker.observe_player(cmcd("br=100"), 100.0)  # no sid: counted, but not a session
    ship(fleet, worker)
    assert fleet.player.concurrent(100.0 + SESSION_WINDOW) == 2
    assert fleet.player.concurrent(100.0 + SESSION_WINDOW + 1) == 1
    text = render_metrics(fleet, {}, 2, False, now=100.0 + 2 * SESSION_WINDOW).decode()
    assert value(text, "oca_player_sessions") == 1
    assert value(text, "oca_player_sessions_started_total") == 2
