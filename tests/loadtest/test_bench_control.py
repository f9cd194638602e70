"""`python -m loadtest.bench_control --quick` runs and reports every case in the documented shape.

Only the shape is checked: timings depend on the machine, so no test asserts one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loadtest import bench_control

CASES = ["index build", "steering decision", "HLS master playlist, render only",
         "HLS master playlist, decision + render (precomputed token)",
         "HLS master playlist, decision + per-session token",
         "DASH MPD, decision + render (precomputed token)",
         "steering manifest JSON, query + decision + render"]


def test_quick_run_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert bench_control.main(["--quick", "--samples", "300", "--seconds", "0.05", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    assert lines[0].startswith("machine: ")
    assert lines[2] == "| case | figure | goal | verdict |"
    rows = [line for line in lines[4:] if line.startswith("| ")]
    assert len(rows) == len(CASES)
    for row, case in zip(rows, CASES, strict=True):
        assert row.startswith(f"| {case}")
        assert row.count(" | ") == 3
    decision_row = rows[1]
    assert re.search(r"p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms", decision_row)
    assert re.search(r"\| (meets|misses) \|$", decision_row)
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "p99_goal_ms", "playlists_goal", "rows"}
    assert [r["case"].split(" (oca.tokens")[0].split(" (EdDSA")[0] for r in report["rows"]] == CASES
    for r in report["rows"]:
        assert set(r) == {"case", "figure", "goal", "verdict", "value", "unit"}
        assert r["value"] is None or r["value"] >= 0


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_control.main(["--samples", "0"])
    assert "--samples 0" in capsys.readouterr().err
