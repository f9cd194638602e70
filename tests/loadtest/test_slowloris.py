"""The slowloris scenario: its report arithmetic, and a small live run against a real box.

The live run asserts what the box promises (every slowloris connection closed at header_timeout, within
one sweep and a generous slack, and normal clients all served meanwhile), never a latency or a rate.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from loadtest.slowloris import (
    SWEEP,
    Settings,
    find_tools,
    histogram,
    parse_args,
    percentiles,
    render_tables,
    run,
    settings_from,
)
from tests.conftest import OCA


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentiles(values) == {"min": 1.0, "p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert percentiles([3.0]) == {"min": 3.0, "p50": 3.0, "p90": 3.0, "p99": 3.0, "max": 3.0}
    assert percentiles([]) == {}


def test_histogram_bins_are_relative_to_the_header_timeout() -> None:
    bins = dict(histogram([4.9, 5.0, 5.1, 5.9, 6.0, 6.2, 9.0], header_timeout=5.0))
    assert bins["< ht"] == 1
    assert bins["ht+0s .. ht+0.25s"] == 2
    assert bins["ht+0.75s .. ht+1s"] == 1
    assert bins["ht+1s .. ht+1.5s"] == 2
    assert bins[">= ht+3s"] == 1
    assert sum(bins.values()) == 7


def test_quick_settings_and_the_trickle_default() -> None:
    quick = settings_from(parse_args(["--quick"]))
    assert (quick.connections, quick.duration, quick.header_timeout) == (200, 5.0, 2.0)
    assert quick.trickle == pytest.approx(0.8)
    full = settings_from(parse_args([]))
    assert (full.connections, full.header_timeout, full.trickle, full.workers) == (2000, 5.0, 2.0, 2)
    with pytest.raises(SystemExit):
        parse_args(["--connections", "0"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make system-deps)")
def test_a_small_slowloris_run_is_closed_at_the_header_timeout_and_normal_clients_are_served(tmp_path: Any) -> None:
    tools = find_tools(OCA)
    assert isinstance(tools, dict), tools
    settings = Settings(connections=200, duration=3, header_timeout=1.0, trickle=0.3, wrk_connections=8)
    report = run(settings, tools, str(tmp_path), progress=lambda message: None)
    attack = report.attack
    table = render_tables(report)
    assert attack.opened >= settings.connections, table
    assert attack.connect_errors == 0, table
    assert not attack.still_open and len(attack.lifetimes) == attack.opened, table  # the box closed every one
    assert attack.overdue(settings.close_bound) == 0, table  # within header_timeout + one sweep + slack
    assert settings.close_bound == settings.header_timeout + SWEEP + settings.slack
    assert min(attack.lifetimes) > settings.header_timeout - 0.1, table  # and not before it
    assert attack.answered_408 == len(attack.lifetimes), table  # each one told why, before the close
    for load in (report.baseline, report.under_attack):
        assert load.requests > 0 and load.errors.total == 0, table
