"""bench_miss: the table from known timings; the code path it times, checked for what it does (the miss goes
upstream and the hit does not, whole objects both times), not for how fast. The timed run itself,
`python -m loadtest.bench_miss --quick`, is a benchmark (`pytest -m bench`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loadtest.bench_miss import Timing, measure, parse_args, rows


def test_rows_compare_the_miss_with_the_origin() -> None:
    direct = [Timing(0.010, 0.100, 8 << 20)] * 3
    miss = [Timing(0.012, 0.200, 8 << 20)] * 3
    hit = [Timing(0.001, 0.010, 8 << 20)] * 3
    table = {row.case: row for row in rows(direct, miss, hit, 8 << 20)}
    assert table["first byte, through the box (cold miss)"].verdict == "+2.00 ms"
    assert table["throughput, through the box (cold miss)"].verdict == "0.50x origin"
    assert table["throughput, through the box (hit)"].figure == "800 MiB/s"


def test_the_measured_path_fetches_each_object_upstream_once_and_serves_it_whole(tmp_path: Path) -> None:
    args = parse_args(["--objects", "2", "--size", "256KiB"])
    direct, miss, hit = measure(args, str(tmp_path))
    assert [t.size for t in direct + miss + hit] == [256 << 10] * 6
    assert all(0 < t.first_byte <= t.total for t in direct + miss + hit)
    keys = [f"titles/9000/1080p/seg_{i:05d}.m4s" for i in range(2)]
    # the origin saw each object twice: the direct GET and the box's one fill (the second box GET stayed local)
    origin_gets = Counter(re.findall(r'"GET /(\S+) HTTP', (tmp_path / "origin.log").read_text()))
    assert {key: n for key, n in origin_gets.items() if key != "healthz"} == dict.fromkeys(keys, 2)
    records = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    served = Counter(r["key"] for r in records if r["status"] == 200 and r["key"].startswith("titles/"))
    assert served == dict.fromkeys(keys, 2)
    assert {r["key"] for r in records if r["cache"] == "miss" and r["source"] == "origin"} == set(keys)


@pytest.mark.bench
def test_quick_run_prints_the_table() -> None:
    done = subprocess.run([sys.executable, "-m", "loadtest.bench_miss", "--quick"], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "| first byte, through the box (cold miss) |" in done.stdout
    assert "| throughput, through the box (hit) |" in done.stdout
