"""bench_replicas' pure parts: HAProxy's retried requests from its log, failures split by phase, the verdict."""

from __future__ import annotations

from typing import Any

from loadtest.bench_replicas import failures, passed, redispatched, table

HEAD = "127.0.0.1:1 [03/Dec/2026:04:30:46.280] control_url control/r2 0/0/0/1/1 200 350 - - ----"
LOG = (f'{HEAD} 102/102/0/0/+1 0/0 "GET /v1/steer/x HTTP/1.1"\n'
       f'{HEAD} 102/102/0/0/0 0/0 "GET /v1/steer/y HTTP/1.1"\n'
       "[WARNING]  (1289) : Server control/r1 is DOWN, reason: Layer4 connection problem\n")


def test_retried_requests_are_the_log_lines_with_a_retry_count(tmp_path: Any) -> None:
    path = tmp_path / "haproxy.log"
    path.write_text(f'{HEAD} 1/1/0/0/+2 0/0 "GET / HTTP/1.1"\n' + LOG)
    assert redispatched(str(path), 0) == 2
    assert redispatched(str(path), len(path.read_text().splitlines()[0]) + 1) == 1


def test_failures_file_and_the_verdict(tmp_path: Any) -> None:
    path = tmp_path / "failures.txt"
    path.write_text("1700000000.500 steering HTTP 503\n")
    assert failures(str(path)) == [(1700000000.5, "steering HTTP 503")]
    assert failures(str(tmp_path / "missing")) == []
    result = {"devices": 100, "requests": 7000, "failed_total": 1, "failed_before_kill": 0, "failed_in_window": 1,
              "control_requests_in_window": 50, "failed_after_window_r1_down": 0, "retried_by_haproxy": 4,
              "failed_after_restart": 0, "down_after_s": 0.6, "up_after_s": 0.7, "check_interval_ms": 500,
              "fall": 2, "rise": 2,
              "player": {"fragments": 60, "fragments_after_kill": 30, "stalls_after_kill": 1,
                         "longest_stall_after_kill_ms": 400, "fatal_errors": []}}
    assert passed(result)  # a failure inside the check window is allowed
    assert "| failed in the check window (0-1.0s) | 1 (of 50 control-URL requests through HAProxy) |" in table(result)
    assert not passed({**result, "failed_after_restart": 1})
    assert not passed({**result, "player": {**result["player"], "longest_stall_after_kill_ms": 1500}})
    assert not passed({**result, "up_after_s": None})
