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

from loadtest.bench_miss import Measured, Timing, batch_throughput, measure, parse_args, rows

MIB = 1 << 20


def test_rows_compare_the_miss_with_the_origin_one_at_a_time_and_at_once() -> None:
    direct = [Timing(0.010, 0.100, 8 * MIB)] * 3
    miss = [Timing(0.012, 0.200, 8 * MIB)] * 3
    hit = [Timing(0.001, 0.010, 8 * MIB)] * 3
    # two at once, started 0.1 s apart: 16 MiB from the first request to the last byte, 0.2 s or 0.4 s
    at_once_direct = [[Timing(0.002, 0.1, 8 * MIB, 5.0), Timing(0.004, 0.1, 8 * MIB, 5.1)]]
    at_once_miss = [[Timing(0.003, 0.3, 8 * MIB, 9.0), Timing(0.005, 0.3, 8 * MIB, 9.1)]]
    table = {row.case: row for row in rows(Measured(direct, miss, hit, at_once_direct, at_once_miss), 8 * MIB)}
    assert table["1 object: first byte, through the box (cold miss)"].verdict == "+2.00 ms"
    assert table["1 object: throughput, through the box (cold miss)"].verdict == "0.50x origin"
    assert table["1 object: throughput, through the box (hit)"].figure == "800 MiB/s"
    assert table["2 at once: first byte (median), through the box (cold misses)"].verdict == "+1.00 ms"
    assert table["2 at once: throughput of all 2, origin direct"].figure == "80 MiB/s"
    assert table["2 at once: throughput of all 2, through the box (cold misses)"].verdict == "0.50x origin"


def test_rows_compare_the_cpu_a_miss_costs_with_a_direct_get() -> None:
    timings = [Timing(0.010, 0.100, 8 * MIB)]
    measured = Measured(timings, timings, timings, [], [], {"origin": 0.002, "client": 0.003},
                        {"origin": 0.002, "client": 0.003, "workers": 0.005, "master": 0.010})
    table = {row.case: row for row in rows(measured, 8 * MIB)}
    assert table["1 object: CPU per GET, origin direct (origin + client)"].figure == "5.0 ms (origin 2.0, client 3.0)"
    miss = table["1 object: CPU per cold miss (origin + box + client)"]
    assert miss.figure == "20.0 ms (origin 2.0, master 10.0, workers 5.0, client 3.0)"
    assert miss.verdict == "4.0x origin direct"
    measured.cpu_miss["master_loop"] = 0.004  # a part of the master's, not added again
    miss = {row.case: row for row in rows(measured, 8 * MIB)}["1 object: CPU per cold miss (origin + box + client)"]
    assert miss.figure == ("20.0 ms (origin 2.0, master 10.0, workers 5.0, client 3.0; "
                           "of the master's, its event loop 4.0)")


def test_a_batch_is_timed_from_its_first_request_to_its_last_byte() -> None:
    batch = [Timing(0.001, 0.5, MIB, 10.0), Timing(0.001, 0.25, MIB, 10.5), Timing(0.001, 0.1, 2 * MIB, 10.2)]
    assert batch_throughput(batch) == 4 * MIB / 0.75


def test_the_measured_path_fetches_each_object_upstream_once_and_serves_it_whole(tmp_path: Path) -> None:
    args = parse_args(["--objects", "2", "--size", "256KiB", "--concurrent", "3", "--rounds", "1"])
    m = measure(args, str(tmp_path))
    at_once = [t for batch in m.batches_direct + m.batches_miss for t in batch]
    assert [len(b) for b in m.batches_direct + m.batches_miss] == [3, 3]
    assert [t.size for t in m.direct + m.miss + m.hit + at_once] == [256 << 10] * 12
    assert all(0 < t.first_byte <= t.total for t in m.direct + m.miss + m.hit + at_once)
    assert set(m.cpu_direct) == {"origin", "client"} and set(m.cpu_miss) == {"origin", "client", "workers", "master",
                                                                      "master_loop"}
    assert all(v >= 0 for v in [*m.cpu_direct.values(), *m.cpu_miss.values()])
    keys = [f"titles/9000/1080p/seg_{i:05d}.m4s" for i in range(2)]
    batch = [f"titles/9500/1080p/seg_{i:05d}.m4s" for i in range(3)]
    # the origin saw each object twice: the direct GET and the box's one fill (the second box GET stayed local)
    origin_gets = Counter(re.findall(r'"GET /(\S+) HTTP', (tmp_path / "origin.log").read_text()))
    assert {key: n for key, n in origin_gets.items() if key != "healthz"} == dict.fromkeys(keys + batch, 2)
    records = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    served = Counter(r["key"] for r in records if r["status"] == 200 and r["key"].startswith("titles/"))
    assert served == {**dict.fromkeys(keys, 2), **dict.fromkeys(batch, 1)}
    assert {r["key"] for r in records if r["cache"] == "miss" and r["source"] == "origin"} == set(keys + batch)


@pytest.mark.bench
def test_quick_run_prints_the_table() -> None:
    done = subprocess.run([sys.executable, "-m", "loadtest.bench_miss", "--quick"], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "| 1 object: first byte, through the box (cold miss) |" in done.stdout
    assert "| 4 at once: throughput of all 4, through the box (cold misses) |" in done.stdout
