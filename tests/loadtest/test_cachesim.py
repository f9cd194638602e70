"""loadtest.cachesim: the trace is deterministic and round-trips through CSV, the reference policies are sane,
the replay drives the box's own Store, and the CLI writes the JSON rows it promises."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from control.fill_plan import TierCapacity
from loadtest.cachesim import fill, reference, trace
from loadtest.cachesim.__main__ import main
from loadtest.cachesim.replay import FAKE_FILE, replay, scaled
from oca.config.model import StorageConfig, TierConfig
from oca.storage.store import Store
from oca.wire.fill import FillSettings

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


TWO_DAYS = trace.TraceSpec(requests=20_000, titles=10, days=2, seed=3)  # dense: day 2 rewatches day 1


def test_the_fill_mode_is_deterministic_and_reports_day_2_with_and_without_the_fill(tmp_path: Path) -> None:
    argv = ["--fill", "--requests", "20000", "--titles", "10", "--seed", "3", "--sizes", "5%"]
    main([*argv, "--json", str(tmp_path / "a.json")])
    main([*argv, "--json", str(tmp_path / "b.json")])
    rows = json.loads((tmp_path / "a.json").read_text())
    assert rows == json.loads((tmp_path / "b.json").read_text())
    assert [(r["policy"], r["fill"], r["size"]) for r in rows] == [
        ("oca", False, 0.05), ("s3fifo", False, 0.05), ("belady", False, 0.05), ("oca", True, 0.05),
        ("static", True, 0.05), ("model", True, 0.05)]
    ratio = {(r["policy"], r["fill"]): r["byte_hit_ratio"] for r in rows}
    assert all(0 <= r["byte_hit_ratio"] <= 1 and 0 <= r["object_hit_ratio"] <= 1 for r in rows)
    assert ratio[("oca", True)] != ratio[("oca", False)]  # the plan placed before day 2 changed day 2
    assert ratio[("static", True)] > ratio[("s3fifo", False)]


def test_the_plan_from_day_1_is_placed_pinned_and_scored_before_day_2() -> None:
    loaded = reference.Trace.load(trace.generate(TWO_DAYS))
    start = loaded.first_at(trace.DAY)
    counts = fill.day_counts(loaded, 0, start)
    assert sum(counts.values()) == start < len(loaded)  # day 1's requests, and there is a day 2
    sizes = {loaded.keys[n]: loaded.sizes[n] for n in range(len(loaded.keys))}
    config = StorageConfig(state_dir="/nonexistent", tiers=(TierConfig("ssd", "/nonexistent/s", 1),
                                                            TierConfig("hdd", "/nonexistent/h", 9)))
    capacity = loaded.unique_bytes(start) // 20
    tiers = [TierCapacity(t.name, t.capacity) for t in scaled(config, capacity).tiers]
    box_plan, watch = fill.plan(fill.catalog((k, sizes[k]) for k in counts), counts, tiers, FillSettings())
    assert watch is not None and watch.depth[0] == 1.0 and box_plan.files
    scores = [f.score for f in box_plan.files]
    assert all(s is not None and s > 0 for s in scores)
    seen: list[str] = []

    def check(store: Store) -> None:
        placed = fill.place(store, box_plan, FAKE_FILE)
        assert placed == box_plan.bytes <= 0.9 * capacity + 1
        infos = [store.get(f.key) for f in box_plan.files]
        assert all(i is not None and i.pinned for i in infos)
        seen.append("placed")

    replay(loaded, config, capacity, start, check)
    assert seen == ["placed"]


def test_the_model_fill_ranks_by_expected_requests_and_never_names_a_new_release() -> None:
    spec = trace.TraceSpec(requests=20_000, titles=10, days=2, seed=3, churn=0.2)
    expected = fill.expected_day2(spec, sessions=200)
    day1, day2 = trace.rankings(spec)[:2]
    assert {trace.title_number(k) for k in expected} == set(day1) & set(day2)  # new releases are unknowable
    top = day2[0] if day2[0] in day1 else next(n for n in day2 if n in day1)
    # within a title and rendition, the first segment is read by more sessions than the last
    first, last = trace.segment_key(top, 3, 0), trace.segment_key(top, 3, trace.title(3, top).segments - 1)
    assert expected[first] > expected.get(last, 0.0)
    loaded = reference.Trace.load([(0.0, "a", 10), (1.0, "b", 5), (2.0, "a", 10), (3.0, "c", 5)])
    # ranked by the expectation, not by what happened: b (expected most) then c; a does not fit beside them
    assert fill.model_fill(loaded, 12, 0, {"b": 3.0, "c": 2.0, "a": 1.0, "never": 9.0}) == (5 + 5, 2)


def test_the_clairvoyant_static_fill_holds_the_most_requested_keys_that_fit() -> None:
    loaded = reference.Trace.load([(0.0, "a", 10), (1.0, "b", 5), (2.0, "a", 10), (3.0, "c", 5), (4.0, "b", 5)])
    assert fill.static_fill(loaded, 15, 0) == (2 * 10 + 2 * 5, 4)  # a and b (twice each) fill 15 bytes
    assert fill.static_fill(loaded, 15, 2) == (10 + 5, 2)  # from request 2: once each; a and b (by key order)
