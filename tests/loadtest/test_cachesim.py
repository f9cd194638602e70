"""loadtest.cachesim: the trace is deterministic and round-trips through CSV, the reference policies are sane,
the replay drives the box's own Store, and the CLI writes the JSON rows it promises."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from loadtest.cachesim import reference, trace
from loadtest.cachesim.__main__ import main
from loadtest.cachesim.replay import replay
from oca.config.model import StorageConfig, TierConfig

SMALL = trace.TraceSpec(requests=20_000, titles=200, seed=3)


def test_the_trace_is_deterministic_time_ordered_and_keys_keep_their_size() -> None:
    first = list(trace.generate(SMALL))
    assert first == list(trace.generate(SMALL)) and len(first) == SMALL.requests
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(first))
    sizes: dict[str, int] = {}
    for _, key, size in first:
        assert sizes.setdefault(key, size) == size and key.startswith("titles/")


def test_csv_round_trip_and_bad_rows_name_the_line(tmp_path: Path) -> None:
    path = str(tmp_path / "t.csv")
    rows = list(trace.generate(trace.TraceSpec(requests=500, titles=20)))
    assert trace.write_csv(path, rows) == 500
    assert [(round(t, 3), k, s) for t, k, s in rows] == list(trace.read_csv(path))
    (tmp_path / "bad.csv").write_text("time,key,size\n1.0,a,10\n2.0,b,zero\n")
    with pytest.raises(trace.TraceError, match="line 3"):
        list(trace.read_csv(str(tmp_path / "bad.csv")))


def test_access_log_lines_become_whole_object_requests() -> None:
    lines = ['{"ts":1.5,"key":"titles/a/1.m4s","status":200,"bytes":900}',
             '{"ts":2.0,"key":"titles/a/1.m4s","status":206,"bytes":100}', "not json"]
    assert list(trace.from_access_log(lines)) == [(1.5, "titles/a/1.m4s", 900)]


def test_reference_policies_are_ordered_as_expected() -> None:
    loaded = reference.Trace.load(trace.generate(SMALL))
    capacity = loaded.unique_bytes() // 20
    ratios = {name: fn(loaded, capacity, 0)[0] for name, fn in reference.POLICIES.items()}
    assert ratios["belady"] >= max(ratios["lru"], ratios["s3fifo"], ratios["sieve"])
    assert ratios["s3fifo"] > ratios["lru"]
    whole = reference.lru(loaded, loaded.unique_bytes(), 0)[1]
    assert whole == len(loaded) - len(loaded.keys)  # a cache that holds everything misses each key once


def test_the_replay_drives_the_store_within_its_tiers() -> None:
    loaded = reference.Trace.load(trace.generate(SMALL))
    config = StorageConfig(state_dir="/nonexistent", tiers=(TierConfig("ssd", "/nonexistent/s", 1),
                                                            TierConfig("hdd", "/nonexistent/h", 9)))
    total = loaded.unique_bytes() // 20
    (hit_bytes, hits), store = replay(loaded, config, total)
    assert 0 < hits < len(loaded) and hit_bytes > 0
    tiers = store.status()["tiers"]
    assert isinstance(tiers, list) and sum(t["capacity"] for t in tiers) <= total
    assert all(t["used"] <= t["capacity"] for t in tiers) and tiers[0]["used"] > 0


def test_the_cli_writes_one_json_row_per_policy_and_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.json"
    assert main(["--requests", "3000", "--titles", "50", "--sizes", "5%,0.1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["policy"], r["size"]) for r in rows] == [
        (p, s) for s in (0.05, 0.1) for p in ("oca", "lru", "s3fifo", "sieve", "belady")]
    assert all(r["fill"] is False and 0 <= r["byte_hit_ratio"] <= 1 and 0 <= r["object_hit_ratio"] <= 1
               for r in rows)
    assert "belady" in capsys.readouterr().out


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "oca.yaml"
    bad.write_text("storage:\n  policy: mru\n  tiers:\n    - {name: ssd, path: s, capacity: 1GiB}\n")
    assert main(["--requests", "100", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "storage.policy" in err and str(bad) in err
