"""The benchmark reads wrk's report correctly (the numbers in the README table come from here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest.wrk import WrkError, parse_output, run_wrk

REPORT = """\
Running 3s test @ http://127.0.0.1:40123/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    1.10ms  31.07ms   91.20%
    Req/Sec    21.02k     2.01k   24.90k    70.00%
  Latency Distribution
     50%    1.29ms
     75%    1.71ms
     90%    2.37ms
     99%    5.60ms
  125437 requests in 3.00s, 1.00GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  41810.84
Transfer/sec:    341.25MB
"""


def test_report_numbers_are_read_with_their_units() -> None:
    result = parse_output(REPORT)
    assert result.requests == 125437
    assert result.seconds == pytest.approx(3.0)
    assert result.requests_per_sec == pytest.approx(41810.84)
    assert result.mib_per_sec == pytest.approx(341.25)
    assert result.p50_ms == pytest.approx(1.29)
    assert result.p99_ms == pytest.approx(5.60)
    assert (result.errors.non_2xx, result.errors.read, result.errors.timeout, result.errors.total) == (4, 2, 1, 7)


def test_latency_in_seconds_and_microseconds_converts_to_ms() -> None:
    assert parse_output(REPORT.replace("     99%    5.60ms", "     99%    1.20s")).p99_ms == pytest.approx(1200)
    assert parse_output(REPORT.replace("     99%    5.60ms", "     99%  850.00us")).p99_ms == pytest.approx(0.85)


def test_p50_is_read_with_its_unit_and_may_be_missing() -> None:
    assert parse_output(REPORT.replace("     50%    1.29ms", "     50%  640.00us")).p50_ms == pytest.approx(0.64)
    assert parse_output(REPORT.replace("     50%    1.29ms", "     50%    1.50s")).p50_ms == pytest.approx(1500)
    assert parse_output(REPORT.replace("     50%    1.29ms\n", "")).p50_ms is None


def test_a_report_without_rates_is_an_error() -> None:
    with pytest.raises(WrkError):
        parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_is_allowed_its_start_up_besides_the_run_and_stopped_past_both(tmp_path: Path) -> None:
    """wrk formats every path before its run starts (minutes for 10^6 paths on a busy machine): a wrk that takes
    2 s more than its 1 s run is waited for when `startup_s` allows it, and given up on when it does not."""
    report = tmp_path / "report.txt"
    report.write_text(REPORT)
    fake = tmp_path / "wrk"
    fake.write_text(f"#!/bin/sh\nsleep 3\ncat {report}\n")
    os.chmod(fake, 0o755)
    assert run_wrk(str(fake), "http://127.0.0.1:1/", "paths", connections=1, seconds=1, timeout_s=0.1,
                   startup_s=10).requests == 125437
    with pytest.raises(WrkError, match="did not stop within 2s"):
        run_wrk(str(fake), "http://127.0.0.1:1/", "paths", connections=1, seconds=1, timeout_s=0.1, startup_s=0.5)
