"""`python -m loadtest.bench`'s cases and its Markdown table: medians, p99s and both ratios (no servers)."""

from __future__ import annotations

import pytest

from loadtest.bench import DEFAULT_CASES, OBJECT_SETS, VIDEO, Row, parse_cases, render_table
from loadtest.wrk import WrkErrors, WrkResult


def result(rps: float, p99: float | None, mib: float = 0.0) -> WrkResult:
    return WrkResult(requests=int(rps * 3), seconds=3.0, requests_per_sec=rps, transfer_bytes_per_sec=mib * (1 << 20),
                     p50_ms=None, p99_ms=p99, errors=WrkErrors())


def test_the_default_run_has_every_size_at_64_and_256_connections_and_the_video_mix() -> None:
    cases = parse_cases(DEFAULT_CASES)
    assert {(c.set_name, c.connections) for c in cases} == {
        (name, conns) for name in ("8KiB", "64KiB", "512KiB", "2MiB", VIDEO) for conns in (64, 256)}
    assert {c.set_name: c.metric for c in cases} == {
        "8KiB": "req/s", "64KiB": "req/s", "512KiB": "req/s", "2MiB": "MiB/s", VIDEO: "req/s"}
    assert (OBJECT_SETS["64KiB"].size, OBJECT_SETS["512KiB"].size) == (64 << 10, 512 << 10)


def test_object_sets_use_disjoint_titles() -> None:
    titles = [{key.split("/")[1] for key in keys} for keys in (s.keys() for s in OBJECT_SETS.values())]
    assert sum(len(t) for t in titles) == len(set().union(*titles))


def test_a_bad_case_names_the_sets_that_exist() -> None:
    with pytest.raises(ValueError, match=r"8KiB, video"):
        parse_cases("1KiB@64")
    with pytest.raises(ValueError, match="video@0"):
        parse_cases("video@0")


def test_p99_is_the_median_over_rounds_and_its_ratio_is_oca_over_nginx() -> None:
    row = Row(parse_cases("8KiB@64")[0])
    row.runs["oca"] += [result(900, 9.0), result(1000, 5.0), result(1100, 6.0)]
    row.runs["nginx"] += [result(2000, 4.0), result(2000, 3.0), result(2000, None)]
    assert row.ratio() == pytest.approx(0.5)
    assert (row.p99("oca"), row.p99("nginx")) == (6.0, 3.5)  # a run without a p99 line is left out
    assert row.p99_ratio() == pytest.approx(6.0 / 3.5)
    assert row.as_json()["p99_ratio"] == pytest.approx(1.7143)


def test_p99_ratio_is_unknown_when_a_server_has_no_p99() -> None:
    row = Row(parse_cases("2MiB@64")[0])
    row.runs["oca"].append(result(100, 4.0, mib=200))
    row.runs["nginx"].append(result(100, None, mib=400))
    assert row.ratio() == pytest.approx(0.5)  # MiB/s for large objects
    assert row.p99_ratio() is None


def test_the_table_is_markdown_with_both_ratios_side_by_side() -> None:
    rows = []
    for case, oca, nginx in (("8KiB@256", (30_000, 15.7), (60_000, 7.85)), ("video@64", (5000, 2.0), (4000, 2.5))):
        row = Row(parse_cases(case)[0])
        row.runs["oca"].append(result(*oca))
        row.runs["nginx"].append(result(*nginx))
        rows.append(row)
    lines = render_table(rows).splitlines()
    assert lines[0] == ("| case | metric | oca | nginx | ratio (oca/nginx) | oca p99 | nginx p99 "
                        "| p99 ratio (oca/nginx) | errors |")
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|---:|---|"
    assert lines[2] == "| 8KiB@256 | req/s | 30,000 | 60,000 | 0.50 | 15.70 ms | 7.85 ms | 2.00 | 0 |"
    assert lines[3] == "| video@64 | req/s | 5,000.0 | 4,000.0 | 1.25 | 2.00 ms | 2.50 ms | 0.80 | 0 |"
    assert all(line.count("|") == 10 for line in lines)
