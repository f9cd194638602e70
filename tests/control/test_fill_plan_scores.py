"""The fill plan's per-file prediction (issue 19, "fill-aware"): the watch model learned from a day's
requests, each file's expected requests, and placement file by file in score order with the score carried."""

from __future__ import annotations

import pytest

from control.fill_plan import (
    PRIOR_WATCH,
    TierCapacity,
    WatchModel,
    file_scores,
    learn_watch,
    plan_fleet,
    prior_watch,
)
from control.model import Box, CatalogFile, Fleet, Site, Title
from oca.wire.fill import FillSettings

# t1: rendition r1 has 3 segments, r2 has 2; t2: one rendition of 1 segment
T1 = Title("t1", (), tuple(CatalogFile(f"titles/t1/{r}/s{i}", 10, f"d{r}{i}")
                           for r, n in (("r1", 3), ("r2", 2)) for i in range(n)))
T2 = Title("t2", (), (CatalogFile("titles/t2/r1/s0", 10, "x"),))
DAY = {"titles/t1/r1/s0": 10, "titles/t1/r1/s1": 5, "titles/t1/r1/s2": 2,
       "titles/t1/r2/s0": 10, "titles/t1/r2/s1": 5, "titles/other": 99}


def test_the_watch_model_is_depth_by_position_over_renditions_that_reach_it_and_rendition_shares() -> None:
    model = learn_watch([T1], DAY)
    # position 0: 20 of 20; position 1: 10 of 20 starts; position 2: only r1 reaches it: 2 of r1's 10 starts
    assert model.depth == pytest.approx((1.0, 0.5, 0.2))
    assert model.renditions == pytest.approx({"r1": 17 / 32, "r2": 15 / 32})
    assert model.at(7) == pytest.approx(0.2)  # past the curve: its last value


def test_a_title_shorter_than_others_does_not_pull_the_tail_down() -> None:
    model = learn_watch([T1, T2], {**DAY, "titles/t2/r1/s0": 40})
    assert model.depth == pytest.approx((1.0, 10 / 20, 2 / 10))  # t2 (one position) counts at position 0 only


def test_file_scores_spread_the_titles_popularity_by_rendition_share_and_depth() -> None:
    model = learn_watch([T1], DAY)
    # the learned model gives back the day's counts exactly for the title it learned from
    assert file_scores(T1, 32.0, model) == pytest.approx(
        {"titles/t1/r1/s0": 10, "titles/t1/r1/s1": 5, "titles/t1/r1/s2": 2, "titles/t1/r2/s0": 10,
         "titles/t1/r2/s1": 5})
    # a rendition the model never saw shares what the seen ones leave: half here, everything for an empty model
    assert file_scores(T2, 8.0, WatchModel((1.0, 0.5), {"r9": 0.5})) == {"titles/t2/r1/s0": 4.0}
    assert file_scores(T2, 8.0, WatchModel((), {})) == {"titles/t2/r1/s0": 8.0}


FLEET = Fleet({"s": Site("s", 0.0, 0.0, "NL")}, {"b": Box("b", "s", "http://b.test", "http://b.test:1", 10**9)},
              (), "http://origin.test")


def test_files_are_placed_by_score_each_carrying_it_and_titles_are_partly_placed() -> None:
    model = learn_watch([T1], DAY)
    titles = [T1, T2]
    popularity = {"s": {"t1": 32.0, "t2": 6.0}}
    # head_share 0: nothing hot; 50 bytes budget on the last tier = 5 files of 10 bytes
    plan = plan_fleet(FLEET, titles, popularity, {"b": [TierCapacity("hdd", 50)]},
                      settings=FillSettings(head_share=0.0, headroom=0.0), watch=model).boxes["b"]
    assert [f.key for f in plan.files] == ["titles/t1/r1/s0", "titles/t1/r2/s0", "titles/t1/r1/s1",
                                           "titles/t1/r2/s1", "titles/t2/r1/s0"]
    # t2 is all in r1: r1's share of its popularity
    assert [f.score for f in plan.files] == pytest.approx([10.0, 10.0, 5.0, 5.0, 6 * 17 / 32])
    # t1's last segment (2 expected requests) lost to t2's first (3.19): the minutes watched most win
    assert [t.id for t in plan.titles] == ["t1", "t2"] and all(f.pin and f.tier == "hdd" for f in plan.files)
    # without a model the same budget holds titles whole: t1 (5 files) and nothing of t2
    whole = plan_fleet(FLEET, titles, popularity, {"b": [TierCapacity("hdd", 50)]},
                       settings=FillSettings(head_share=0.0, headroom=0.0)).boxes["b"]
    assert [f.key for f in whole.files] == sorted(f.path for f in T1.files)
    assert all(f.score is None for f in whole.files)


def test_head_files_go_hot_on_the_first_tier_while_it_has_room_and_unwatched_titles_are_not_placed() -> None:
    model = learn_watch([T1], DAY)
    plan = plan_fleet(FLEET, [T1, T2], {"s": {"t1": 32.0}}, {"b": [TierCapacity("ssd", 20), TierCapacity("hdd", 100)]},
                      settings=FillSettings(head_share=0.5, headroom=0.0), watch=model).boxes["b"]
    assert [(f.key, f.tier, f.hot) for f in plan.files] == [
        ("titles/t1/r1/s0", "ssd", True), ("titles/t1/r2/s0", "ssd", True), ("titles/t1/r1/s1", "hdd", False),
        ("titles/t1/r2/s1", "hdd", False), ("titles/t1/r1/s2", "hdd", False)]


def test_score_with_places_titles_whole_and_scores_every_file_by_the_model() -> None:
    model = learn_watch([T1], DAY)
    popularity = {"s": {"t1": 32.0, "t2": 6.0}}
    plan = plan_fleet(FLEET, [T1, T2], popularity, {"b": [TierCapacity("hdd", 50)]},
                      settings=FillSettings(head_share=0.0, headroom=0.0), score_with=model).boxes["b"]
    # the same files as the whole-title plan (t1 whole, nothing of t2), each with its prediction
    assert [f.key for f in plan.files] == sorted(f.path for f in T1.files)
    assert {f.key: f.score for f in plan.files} == pytest.approx(file_scores(T1, 32.0, model))


def test_the_prior_watch_curve_halves_at_its_half_life_and_shares_renditions_equally() -> None:
    prior = prior_watch(half_life=10, positions=40)
    assert prior.at(0) == 1.0 and prior.at(10) == pytest.approx(0.5) and prior.at(20) == pytest.approx(0.25)
    scores = file_scores(T1, 10.0, prior)
    # two renditions, equal shares: each rendition's files add up to half the title's popularity
    assert sum(v for k, v in scores.items() if "/r1/" in k) == pytest.approx(5.0)
    assert sum(v for k, v in scores.items() if "/r2/" in k) == pytest.approx(5.0)
    assert scores["titles/t1/r1/s0"] > scores["titles/t1/r1/s1"] > scores["titles/t1/r1/s2"]
    assert PRIOR_WATCH.at(300) == pytest.approx(0.5)


def _two_segments(title_id: str) -> Title:
    return Title(title_id, (), tuple(CatalogFile(f"titles/{title_id}/r1/s{i}", 10, "") for i in range(2)))


def test_each_title_gets_its_own_depth_curve_shrunk_toward_the_pooled_one_by_its_starts() -> None:
    # "all" is watched to the end by its 1,000 starts, "quit" by none of its 1,000; "few" had one start
    titles = [_two_segments("all"), _two_segments("quit"), _two_segments("few")]
    day = {"titles/all/r1/s0": 1000, "titles/all/r1/s1": 1000, "titles/quit/r1/s0": 1000,
           "titles/few/r1/s0": 1, "titles/few/r1/s1": 1}
    model = learn_watch(titles, day, prior_starts=10.0)
    pooled = 1001 / 2001
    assert model.depth == pytest.approx((1.0, pooled))
    own = 1000 / 1010  # weight of a title's own curve: starts / (starts + prior_starts)
    assert model.at(1, "all") == pytest.approx(own * 1.0 + (1 - own) * pooled)
    assert model.at(1, "quit") == pytest.approx(own * 0.0 + (1 - own) * pooled)
    assert model.at(1, "few") == pytest.approx(1 / 11 * 1.0 + 10 / 11 * pooled)  # one start: mostly pooled
    assert model.at(1, "unknown") == pytest.approx(pooled)  # a title the day never saw: the pooled curve
    # the scores follow each title's own viewers: "all" splits evenly, "quit" keeps nearly all at position 0
    scores = file_scores(titles[1], 100.0, model)
    assert scores["titles/quit/r1/s0"] > 99 * scores["titles/quit/r1/s1"]
    assert file_scores(titles[0], 100.0, model)["titles/all/r1/s1"] == pytest.approx(100 / (1 + model.at(1, "all"))
                                                                                    * model.at(1, "all"))
    # no prior: every title that had a start is predicted by its own day alone
    assert learn_watch(titles, day, prior_starts=0.0).at(1, "quit") == 0.0
