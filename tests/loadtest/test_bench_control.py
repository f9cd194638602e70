"""`python -m loadtest.bench_control --quick` runs and reports every case in the documented shape: the
in-process cases and a real `oca control serve` started on the 1k fleet written as config files.

Only the shape is checked: timings depend on the machine, so no test asserts one. The timed run is a
benchmark (`pytest -m bench`, `make bench`), out of `make test`. The 10k size (a million prefixes) is not run
here; `--sizes` parsing is.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest

from loadtest import bench_control

CASES = ["index build", "steering decision", "HLS master playlist, render only",
         "HLS master playlist, decision + render (precomputed token)",
         "HLS master playlist, decision + per-session token",
         "DASH MPD, decision + render (precomputed token)",
         "steering manifest JSON, query + decision + render",
         "start-up of `oca control serve`, exec to first answer",
         "resident memory (VmRSS) once ready",
         "config + prefixes loaded and every box polled once, from exec",
         "health poll round of every box (fake boxes on loopback)",
         "resident memory after the poll rounds",
         "HTTP master playlists (wrk)"]


@pytest.mark.bench
def test_quick_run_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert bench_control.main(["--quick", "--samples", "300", "--seconds", "0.05", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    assert lines[0].startswith("machine: ")
    assert lines[2] == "| case | goal | 1,000 boxes, 100,000 prefixes |"
    rows = [line for line in lines[4:] if line.startswith("| ")]
    assert len(rows) == len(CASES)
    for row, case in zip(rows, CASES, strict=True):
        assert row.startswith(f"| {case}")
        assert row.count(" | ") == 2
    assert re.search(r"p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms; CPU time p99 [\d.]+ ms .* — (meets|misses) \|$",
                     rows[1])
    assert re.search(r"\| ≤ 30 s \| [\d.]+ s, [\d.]+ s of CPU \(\d+ MiB of fleet files, files\) — (meets|misses) \|$",
                     rows[7])
    assert re.search(r"\| [\d,]+ MiB \|$", rows[8])
    assert re.search(r"\| ≤ 30 s \| [\d.]+ s, [\d.]+ s of CPU — (meets|misses) \|$", rows[9])
    # 1,000 fake boxes polled every 2 s for --quick's 3 s: at least one round is timed, and the verdict counts
    # every round since start
    assert re.search(r"\| ≤ 2 s \(health.interval\) \| median [\d.]+ s, max [\d.]+ s over \d+ rounds, [\d,]+ polls "
                     r"skipped, the process at \d+% of a core, \d+ µs of CPU a poll; every round since start: "
                     r"max [\d.]+ s over \d+ \([\d,]+ of 1,000 boxes keep "
                     r"their connection \(open-file limit [\d,]+\); the fake boxes in 1 process of their own, at "
                     r"most 8,000 boxes each, on the same \d+ cores\) — (meets|misses) \|$", rows[10])
    assert re.search(r"\| [\d,]+ MiB \|$", rows[11])
    assert "not asked for" in rows[12]  # --quick runs no wrk
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "p99_goal_ms", "playlists_goal", "startup_goal_s", "sizes"}
    [size] = report["sizes"]
    assert (size["size"], size["boxes"], size["prefixes"]) == ("1k", 1000, 100_000)
    assert [r["case"].split(" (oca.tokens")[0].split(" (EdDSA")[0] for r in size["rows"]] == CASES
    for r in size["rows"]:
        assert set(r) == {"case", "figure", "goal", "verdict", "value", "unit"}
        assert r["value"] is None or r["value"] >= 0


def test_sizes_by_counts() -> None:
    sizes = bench_control.parse_args(["--boxes", "1000,20000", "--prefixes", "100000,2_000_000"]).sizes
    assert [(s.name, s.boxes, s.announced, s.coverage) for s in sizes] == [
        ("1k/100k", 1000, 50_000, 50_000), ("20k/2M", 20_000, 1_000_000, 1_000_000)]
    big = bench_control.SIZES["20k"]
    assert (big.boxes, big.announced + big.coverage) == (20_000, 2_000_000)


def test_sizes_are_chosen_by_name() -> None:
    assert [s.name for s in bench_control.parse_args(["--sizes", "10k,1k"]).sizes] == ["10k", "1k"]
    assert [s.name for s in bench_control.parse_args([]).sizes] == ["1k", "10k"]
    assert [s.name for s in bench_control.parse_args(["--quick"]).sizes] == ["1k"]
    big = bench_control.SIZES["10k"]
    assert (big.boxes, big.announced + big.coverage) == (10_000, 1_000_000)


@pytest.mark.parametrize(("argv", "message"), [
    (["--samples", "0"], "--samples 0"),
    (["--sizes", "5k"], "--sizes 5k: expected a comma-separated list of 1k, 10k, 20k"),
    (["--boxes", "1000,2000", "--prefixes", "5000"], "as many counts in each"),
    (["--boxes", "1000"], "--prefixes is needed with --boxes"),
    (["--boxes", "1001", "--prefixes", "5000"], "--boxes 1001: expected a multiple of 5"),
    (["--boxes", "1000", "--prefixes", "5000", "--sizes", "1k"], "--sizes or --boxes/--prefixes, not both"),
    (["--poll-seconds", "-1"], "--poll-seconds -1"),
    (["--http-seconds", "-1"], "--http-seconds -1"),
])
def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        bench_control.main(argv)
    assert message in capsys.readouterr().err


def test_announced_prefixes_stay_valid_past_65536_ipv6_ones() -> None:
    """The 10k size announces 100,000 IPv6 /48s: the generator must not write `2001:db8:10000::/48`."""
    big = bench_control.SIZES["10k"]
    v4 = big.announced * 4 // 5
    picks = (0, v4 - 1, v4, v4 + 65_535, v4 + 65_536, big.announced - 1)
    networks = {ipaddress.ip_network(bench_control.announced_prefix(i, v4), strict=True) for i in picks}
    assert len(networks) == len(picks)
    assert bench_control.announced_prefix(v4 + 65_536, v4) == "2001:db9:0::/48"


def test_the_coverage_covers_every_announced_ipv4_prefix() -> None:
    """Clients of announced IPv4 prefixes get a coverage country: one /16 per 256 announced /24s, past the
    first few /16s (the world once had one /16 per 65,536 of them)."""
    world = bench_control.build_world(1, sites=20, boxes_per_site=5, announced=5000, coverage=5000, titles=3,
                                      clients=10)
    index = bench_control.SteeringIndex.build(world.fleet)
    v4 = 5000 * 4 // 5
    for i in (0, 255, 256, v4 - 1):
        address = bench_control.announced_prefix(i, v4).replace(".0/24", ".1")
        assert index.announced.lookup(address) is not None and index.coverage.lookup(address) is not None, address


def test_a_control_plane_that_does_not_start_is_a_row_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise bench_control.ProcessError("oca control serve exited with 2: bad config")

    monkeypatch.setattr(bench_control, "measure_process", refuse)
    world = bench_control.build_world(3, sites=20, boxes_per_site=3, announced=200, coverage=200, titles=6,
                                      clients=300)
    rows = bench_control.measure_serving(world, shape="files", http_seconds=0, poll_seconds=3,
                                         progress=lambda message: None)
    assert [r.case for r in rows] == CASES[7:]
    assert rows[0].verdict == "failed: oca control serve exited with 2: bad config"
    assert all(r.value is None for r in rows)


def test_the_poll_round_says_where_the_fake_boxes_run() -> None:
    world = bench_control.build_world(1, sites=20, boxes_per_site=5, announced=100, coverage=100, titles=3, clients=10)
    where = bench_control.fake_boxes_where(world)
    assert where.startswith("the fake boxes in 1 process of their own, at most 8,000 boxes each, on the same ")
