"""bench_miss: the table's shape from known timings, and one real quick run (shape only, no timing asserts)."""

from __future__ import annotations

import subprocess
import sys

from loadtest.bench_miss import Timing, rows


def test_rows_compare_the_miss_with_the_origin() -> None:
    direct = [Timing(0.010, 0.100, 8 << 20)] * 3
    miss = [Timing(0.012, 0.200, 8 << 20)] * 3
    hit = [Timing(0.001, 0.010, 8 << 20)] * 3
    table = {row.case: row for row in rows(direct, miss, hit, 8 << 20)}
    assert table["first byte, through the box (cold miss)"].verdict == "+2.00 ms"
    assert table["throughput, through the box (cold miss)"].verdict == "0.50x origin"
    assert table["throughput, through the box (hit)"].figure == "800 MiB/s"


def test_quick_run_prints_the_table() -> None:
    done = subprocess.run([sys.executable, "-m", "loadtest.bench_miss", "--quick"], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "| first byte, through the box (cold miss) |" in done.stdout
    assert "| throughput, through the box (hit) |" in done.stdout
