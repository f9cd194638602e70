"""Popularity counters: decay by half-life on an injected clock, ranking, snapshots."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from control.popularity import Popularity, Score

HOUR = 3600.0


def test_one_start_halves_every_half_life() -> None:
    pop = Popularity(half_life=HOUR)
    pop.record("ams", "t1", now=0.0)
    assert [pop.score("ams", "t1", now=t * HOUR) for t in (0, 1, 2, 3)] == pytest.approx([1, 0.5, 0.25, 0.125])
    assert pop.score("ams", "missing", now=0.0) == 0.0
    assert pop.score("nowhere", "t1", now=0.0) == 0.0


def test_starts_add_up_after_decay() -> None:
    pop = Popularity(half_life=HOUR)
    pop.record("ams", "t1", now=0.0)
    pop.record("ams", "t1", now=HOUR)
    assert pop.score("ams", "t1", now=HOUR) == pytest.approx(1.5)
    pop.record("ams", "t1", now=HOUR, weight=2.0)
    assert pop.score("ams", "t1", now=2 * HOUR) == pytest.approx(1.75)


def test_a_start_dated_in_the_past_never_inflates_a_counter() -> None:
    pop = Popularity(half_life=HOUR)
    pop.record("ams", "t1", now=2 * HOUR)
    pop.record("ams", "t1", now=HOUR)  # clock stepped back an hour
    assert pop.score("ams", "t1", now=2 * HOUR) == pytest.approx(1.5)
    assert pop.score("ams", "t1", now=HOUR) == pytest.approx(1.5)  # reading in the past: no growth either


def test_scores_rank_by_score_then_title_per_site_and_overall() -> None:
    pop = Popularity(half_life=HOUR)
    for site, title, n in [("ams", "b", 3), ("ams", "a", 3), ("ams", "c", 1), ("lon", "c", 5), ("lon", "a", 1)]:
        for _ in range(n):
            pop.record(site, title, now=0.0)
    assert pop.scores(now=0.0, site="ams") == [Score("a", 3.0, "ams"), Score("b", 3.0, "ams"), Score("c", 1.0, "ams")]
    assert pop.scores(now=0.0) == [Score("c", 6.0), Score("a", 4.0), Score("b", 3.0)]
    assert pop.scores(now=0.0, limit=1) == [Score("c", 6.0)]
    assert pop.scores(now=0.0, site="nowhere") == []
    assert pop.sites() == ["ams", "lon"]


def test_decay_reorders_old_and_new_favourites() -> None:
    pop = Popularity(half_life=HOUR)
    for _ in range(4):
        pop.record("ams", "old", now=0.0)
    pop.record("ams", "new", now=3 * HOUR)
    assert [s.title for s in pop.scores(now=3 * HOUR, site="ams")] == ["new", "old"]  # 1 > 4/8


def test_prune_drops_decayed_counters() -> None:
    pop = Popularity(half_life=HOUR)
    pop.record("ams", "old", now=0.0)
    pop.record("lon", "new", now=20 * HOUR)
    assert pop.prune(now=20 * HOUR, floor=1e-3) == 1
    assert pop.sites() == ["lon"]


def test_snapshot_round_trips_through_json() -> None:
    pop = Popularity(half_life=HOUR)
    pop.record("ams", "t1", now=10.0)
    pop.record("lon", "t2", now=20.0, weight=3.0)
    snapshot = json.loads(json.dumps(pop.snapshot()))
    restored = Popularity.restore(snapshot)
    assert restored.half_life == HOUR
    assert restored.scores(now=5 * HOUR) == pop.scores(now=5 * HOUR)
    assert restored.snapshot() == pop.snapshot()
    faster = Popularity.restore(snapshot, half_life=60.0)
    assert faster.half_life == 60.0
    assert faster.score("ams", "t1", now=70.0) == pytest.approx(0.5)


def test_the_same_calls_give_the_same_answer() -> None:
    def run() -> list[Score]:
        pop = Popularity(half_life=600.0)
        for i in range(500):
            pop.record(f"s{i % 7}", f"t{(i * 31) % 23}", now=float(i))
        return pop.scores(now=1000.0)
    assert run() == run()


@pytest.mark.parametrize("half_life", [0, -1, math.inf, math.nan, "1h", True, None])
def test_a_bad_half_life_is_refused(half_life: Any) -> None:
    with pytest.raises(ValueError, match="half_life"):
        Popularity(half_life=half_life)


@pytest.mark.parametrize("snapshot", [
    None, {}, {"version": 2, "half_life": 1.0, "counters": {}},
    {"version": 1, "half_life": 1.0, "counters": []},
    {"version": 1, "half_life": 1.0, "counters": {"ams": []}},
    {"version": 1, "half_life": 1.0, "counters": {"ams": {"t": [1.0]}}},
    {"version": 1, "half_life": 1.0, "counters": {"ams": {"t": [-1.0, 0.0]}}},
    {"version": 1, "half_life": 1.0, "counters": {"ams": {"t": ["1", 0.0]}}},
    {"version": 1, "half_life": 1.0, "counters": {"ams": {"t": [math.nan, 0.0]}}},
    {"version": 1, "half_life": 0, "counters": {}},
])
def test_a_malformed_snapshot_is_refused(snapshot: Any) -> None:
    with pytest.raises(ValueError, match=r"popularity snapshot|half_life"):
        Popularity.restore(snapshot)
