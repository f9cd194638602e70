"""oca.serve.stall with injected times: a worker is blamed only for silence while the master itself ran."""

from __future__ import annotations

import pytest

from oca.serve.stall import is_stalled, own_pause, stall_after, workers_report

TICK = 0.1


@pytest.mark.parametrize("previous, now, pause", [
    (100.0, 100.1, 0.0),  # on time
    (100.0, 100.18, 0.0),  # late by less than a tick: jitter
    (100.0, 122.1, 22.0),  # stopped for 22 s
    (100.0, 101.1, 1.0),  # a loop blocked for a second
])
def test_the_master_measures_its_own_pause_between_ticks(previous: float, now: float, pause: float) -> None:
    assert own_pause(previous, now, TICK) == pytest.approx(pause)


def test_a_box_stopped_whole_blames_no_worker() -> None:
    stall_after, heard = 2.0, 100.0
    previous, now = 100.05, 122.15  # the master's ticks around a 22 s SIGSTOP of the whole box
    assert is_stalled(now, heard, stall_after)  # what the master concluded before measuring its own pause
    assert not is_stalled(now, heard + own_pause(previous, now, TICK), stall_after)


def test_a_worker_silent_while_the_master_ran_is_stalled() -> None:
    heard, tick_times = 100.0, [100.0 + TICK * i for i in range(1, 30)]
    credited, previous = heard, 100.0
    for now in tick_times:
        credited += own_pause(previous, now, TICK)
        previous = now
    assert credited == heard  # the master ran on time: nothing is credited
    assert not is_stalled(100.0 + 2.0, credited, 2.0)
    assert is_stalled(tick_times[-1] + 0.05, credited, 2.0)  # 2.95 s of the master's running time


@pytest.mark.parametrize("report_interval, threshold", [
    (1.0, 10.0),  # the default flush interval: ten silent reports
    (0.5, 5.0),
    (0.2, 2.0),  # never under 2 s, however often workers report
    (0.05, 2.0),
    (3.0, 30.0),
])
def test_a_worker_is_stuck_after_ten_missed_reports_and_at_least_two_seconds(report_interval: float,
                                                                             threshold: float) -> None:
    assert stall_after(report_interval) == pytest.approx(threshold)


@pytest.mark.parametrize("heard, now, stall_after_s, stalled", [
    (100.0, 100.0, 2.0, False),  # just heard
    (100.0, 102.0, 2.0, False),  # exactly the threshold: not yet
    (100.0, 102.01, 2.0, True),
    (100.0, 109.0, 10.0, False),
    (100.0, 125.0, 10.0, True),
    (130.0, 125.0, 10.0, False),  # heard moved past now by a credited pause
])
def test_stall_detection(heard: float, now: float, stall_after_s: float, stalled: bool) -> None:
    assert is_stalled(now, heard, stall_after_s) is stalled


@pytest.mark.parametrize("now, heard, ping", [
    (100.0, [99.5], True),  # the one worker reported half a second ago
    (100.0, [97.0, 99.9], True),  # one of two stuck (the master kills and restarts it): still serving
    (100.0, [97.0, 97.4], False),  # every worker silent past stall_after: the box does not serve
    (100.0, [], False),  # no serving worker at all (each dies as it starts)
])
def test_the_watchdog_ping_says_a_worker_reports(now: float, heard: list[float], ping: bool) -> None:
    assert workers_report(now, heard, stall_after(0.25)) is ping


def test_stall_after_is_ten_reports_and_at_least_two_seconds() -> None:
    assert stall_after(0.25) == 2.5
    assert stall_after(0.05) == 2.0
    assert stall_after(1.0) == 10.0
