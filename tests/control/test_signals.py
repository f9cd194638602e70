"""control.signals: players' throughput reports -> slow boxes, with hysteresis (pure; no event loop)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.signals import PlayerSignals, Reports, Slow, SlowRule, judge, ratios

RULE = SlowRule()
SITES = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B"}


def test_a_box_needs_enough_recent_reports_for_a_figure() -> None:
    reports = Reports()
    for i in range(RULE.min_reports - 1):
        reports.add("a1", 1_000_000, float(i))
    assert reports.figures(RULE, 10.0) == {}
    reports.add("a1", 3_000_000, 10.0)
    assert reports.figures(RULE, 10.0) == {"a1": 1_000_000.0}
    assert reports.figures(RULE, RULE.window) == {"a1": 1_000_000.0}
    assert reports.figures(RULE, RULE.window + 0.5) == {}  # the oldest aged out: too few left


def test_peers_are_the_site_then_the_fleet() -> None:
    got = ratios({"a1": 1.0, "a2": 4.0, "a3": 4.0, "b1": 10.0}, SITES)
    assert got["a1"] == 0.25 and got["a2"] == pytest.approx(4 / 2.5)
    assert got["b1"] == 10 / 4.0  # no other box of site B has a figure: the fleet's
    assert ratios({"a1": 5.0}, SITES) == {}  # no peers, no evidence


@pytest.mark.parametrize(("ratio", "load", "slow"), [
    (0.5, 0.0, True), (0.51, 0.0, False), (0.8, 0.7, True), (0.8, 0.69, False), (0.81, 0.95, False),
    (1.0, 2.0, False),  # overloaded but players do not find it slow: the health poll's business
])
def test_entering_slow(ratio: float, load: float, slow: bool) -> None:
    assert ("a1" in judge({}, {"a1": ratio}, {"a1": load}, RULE, 0.0)) is slow


def test_leaving_slow_needs_the_dwell_and_a_clear_recovery() -> None:
    before = {"a1": Slow(100.0, 0.3)}
    early = 100.0 + RULE.min_dwell - 1
    assert "a1" in judge(before, {"a1": 1.0}, {}, RULE, early)
    later = 100.0 + RULE.min_dwell
    assert "a1" in judge(before, {"a1": 0.69}, {}, RULE, later)  # between the thresholds: stays
    assert "a1" in judge(before, {"a1": 0.9}, {"a1": 0.7}, RULE, later)  # recovered but busy: stays
    assert judge(before, {"a1": 0.7}, {"a1": 0.1}, RULE, later) == {}
    assert judge(before, {}, {}, RULE, later) == {}  # its reports aged out: no evidence left
    assert judge(before, {"a1": 0.9}, {}, RULE, later - 1)["a1"].since == 100.0


def test_the_rule_refuses_thresholds_that_could_flap() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        SlowRule(enter_ratio=0.7, leave_ratio=0.6)
    with pytest.raises(ValueError, match="hysteresis"):
        SlowRule(loaded_ratio=0.4)


def test_player_signals_from_reports_to_a_reason() -> None:
    signals = PlayerSignals(SlowRule(every=0.0))
    for t in range(6):
        signals.report("a1", 1_000_000, float(t))
        signals.report("a2", 8_000_000, float(t))
        signals.report("a3", 9_000_000, float(t))
        signals.report("a3", None, float(t))  # not measured: no report
    slow = signals.current(SITES, {}, 6.0)
    assert list(slow) == ["a1"]
    assert slow["a1"].reason() == "players report slow throughput (12% of its peers')"


ratio_values = st.one_of(st.none(), st.floats(min_value=0.0, max_value=5.0, allow_nan=False))
load_values = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
boxes = st.sampled_from(sorted(SITES))


@settings(max_examples=300, deadline=None)
@given(ratio_of=st.dictionaries(boxes, ratio_values), load_of=st.dictionaries(boxes, load_values),
       start=st.dictionaries(boxes, st.floats(min_value=-1000.0, max_value=0.0, allow_nan=False)),
       steps=st.lists(st.floats(min_value=0.0, max_value=120.0, allow_nan=False), min_size=1, max_size=40))
def test_constant_inputs_give_a_constant_answer(ratio_of: dict[str, float | None], load_of: dict[str, float],
                                                start: dict[str, float], steps: list[float]) -> None:
    """Never flap: with the same ratios and loads judged again and again as time passes, each box's answer is
    the same from the first judgement on when nothing was slow before, and changes at most once (a box slow
    from before may leave, once, after its dwell) whatever was slow before."""
    ratios_now = {box: r for box, r in ratio_of.items() if r is not None}
    for previous in ({}, {box: Slow(since, None) for box, since in start.items()}):
        state: dict[str, Slow] = dict(previous)
        now = 0.0
        answers = []
        for step in steps:
            now += step
            state = judge(state, ratios_now, load_of, RULE, now)
            answers.append(frozenset(state))
        for box in SITES:
            changes = sum((box in a) != (box in b) for a, b in itertools.pairwise(answers))
            assert changes <= (1 if previous else 0), (box, answers)
