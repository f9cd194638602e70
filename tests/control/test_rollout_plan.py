"""The roll-out plan and its state machine (control/rollout/plan.py): exact step sequences, batch limits,
resume after a crash at every step, rollback of the failing wave only, lost boxes, windows, validation."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.model import Box, BoxHealth
from control.rollout.plan import (
    ABORTED,
    BAKE,
    DONE,
    DRAIN,
    GATE,
    HALTED,
    REVERT,
    RUNNING,
    UNDRAIN,
    UPGRADE,
    UPLOAD,
    Abort,
    BoxLost,
    Decision,
    Event,
    GateThresholds,
    Progress,
    RolloutPlan,
    Step,
    StepDone,
    StepFailed,
    advance,
    check_gate,
    make_plan,
    order_boxes,
    parse_quota,
    parse_waves,
    wave_sizes,
    window_allows,
)
from oca.wire.window import Window

V = "2.0.0"


def fleet(count: int, sites: int = 1) -> list[Box]:
    return [Box(f"box{i:02d}", f"site{i % sites}", f"http://d{i}", f"http://a{i}", 10**9) for i in range(count)]


def plan_for(count: int, waves: str = "1,10%,50%,100%", max_unavailable: str = "10%", sites: int = 1,
             window: Window | None = None) -> RolloutPlan:
    return make_plan(fleet(count, sites), version=V, bundle="sha256:ab", waves=waves,
                     max_unavailable=max_unavailable, bake=60, from_versions={}, window=window)


def drive(plan: RolloutPlan, progress: Progress | None = None, *, fail: tuple[str, str] | None = None,
          lose: tuple[str, str] | None = None, max_steps: int = 100_000,
          first: Event | None = None) -> tuple[list[Step], Decision]:
    """A runner in memory: every step succeeds except (kind, box) `fail` (StepFailed) or `lose` (BoxLost)."""
    executed: list[Step] = []
    decision = advance(plan, progress or Progress(), first)
    while decision.step is not None and decision.index is not None and len(executed) < max_steps:
        step, index = decision.step, decision.index
        executed.append(step)
        running = decision.progress.state == RUNNING
        event: Event = StepDone(index)
        if running and (step.kind, step.box) == fail:
            event = StepFailed(index, "boom")
        elif running and (step.kind, step.box) == lose:
            event = BoxLost(index, "unreachable")
        decision = advance(plan, decision.progress, event)
    return executed, decision


def kinds(steps: Iterable[Step]) -> list[tuple[str, str | None]]:
    return [(s.kind, s.box) for s in steps]


# --- spec parsing and validation --------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ("", "expected a list"),
    ("1,,100%", "entry ''"),
    ("0,100%", "entry '0'"),
    ("-1,100%", "entry '-1'"),
    ("1,abc,100%", "entry 'abc'"),
    ("1,0%,100%", "entry '0%'"),
    ("1,150%", "entry '150%'"),
    ("1,50%,10%,100%", "percentages must increase"),
    ("5,2,100%", "counts must increase"),
    ("1,10%,50%", "the last wave must be 100%"),
    ("1,10", "the last wave must be 100%"),
])
def test_waves_spec_errors_name_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="waves") as raised:
        parse_waves(spec)
    assert message in str(raised.value)


@pytest.mark.parametrize(("spec", "total", "sizes"), [
    ("1,10%,50%,100%", 20, (1, 2, 10, 20)),
    ("1,10%,50%,100%", 5, (1, 3, 5)),  # 10% of 5 rounds up to 1: no wave of its own
    ("1,10%,50%,100%", 1, (1,)),
    ("100%", 7, (7,)),
    ("3,12.5%,100%", 40, (3, 5, 40)),
    ("50,100%", 20, (20,)),  # a count above the fleet is the whole fleet
])
def test_wave_sizes_are_cumulative(spec: str, total: int, sizes: tuple[int, ...]) -> None:
    assert wave_sizes(parse_waves(spec), total) == sizes


@pytest.mark.parametrize(("text", "total", "limit"), [("10%", 20, 2), ("10%", 5, 1), ("3", 20, 3), ("25%", 10, 2)])
def test_max_unavailable_rounds_down_to_at_least_one(text: str, total: int, limit: int) -> None:
    assert plan_for(total, max_unavailable=text).max_unavailable == limit
    assert max(1, parse_quota(text).resolve(total, round_up=False)) == limit


@pytest.mark.parametrize("bad", ["0", "0%", "x", "101%", ""])
def test_max_unavailable_errors(bad: str) -> None:
    with pytest.raises(ValueError, match=f"max_unavailable '{bad}'"):
        plan_for(10, max_unavailable=bad)


def test_empty_fleet_and_negative_bake_are_refused() -> None:
    with pytest.raises(ValueError, match="no boxes"):
        make_plan([], version=V, bundle="b", waves="100%", max_unavailable="1", bake=60)
    with pytest.raises(ValueError, match="bake -1"):
        make_plan(fleet(2), version=V, bundle="b", waves="100%", max_unavailable="1", bake=-1)


# --- ordering and exact sequences ---------------------------------------------------------------------------


def test_order_is_deterministic_and_canaries_spread_over_sites() -> None:
    boxes = fleet(12, sites=4)
    ordered = order_boxes(boxes, V)
    assert ordered == order_boxes(reversed(boxes), V)
    assert sorted(ordered) == sorted(b.id for b in boxes)
    site = {b.id: b.site for b in boxes}
    assert len({site[b] for b in ordered[:4]}) == 4
    assert order_boxes(boxes, "3.0.0") != ordered  # another version picks other canaries (same 12 boxes)


def test_twenty_boxes_canary_then_ten_percent_then_half_then_all() -> None:
    plan = plan_for(20)
    assert [[len(batch) for batch in wave] for wave in plan.waves] == [[1], [1], [2, 2, 2, 2], [2, 2, 2, 2, 2]]
    order = plan.boxes()
    assert sorted(order) == sorted(b.id for b in fleet(20))
    steps = plan.steps()
    canary, second = order[0], order[1]
    assert kinds(steps[:12]) == [
        (DRAIN, canary), (UPLOAD, canary), (UPGRADE, canary), (BAKE, None), (GATE, canary), (UNDRAIN, canary),
        (DRAIN, second), (UPLOAD, second), (UPGRADE, second), (BAKE, None), (GATE, second), (UNDRAIN, second),
    ]
    a, b = order[2], order[3]  # wave 3, batch 1: two boxes out at once
    assert [(s.kind, s.box, s.wave, s.batch) for s in steps[12:23]] == [
        (DRAIN, a, 3, 1), (UPLOAD, a, 3, 1), (UPGRADE, a, 3, 1), (DRAIN, b, 3, 1), (UPLOAD, b, 3, 1),
        (UPGRADE, b, 3, 1), (BAKE, None, 3, 1), (GATE, a, 3, 1), (GATE, b, 3, 1), (UNDRAIN, a, 3, 1),
        (UNDRAIN, b, 3, 1),
    ]
    assert steps[1].args == (("bundle", "sha256:ab"), ("version", V))
    assert steps[3].args == (("seconds", "60"),)
    assert steps[4].args == (("version", V),)
    for box in order:  # per box: drain -> upload -> upgrade -> gate -> undrain, once each
        assert [s.kind for s in steps if s.box == box] == [DRAIN, UPLOAD, UPGRADE, GATE, UNDRAIN]
    assert len(steps) == 20 * 5 + 11  # one bake per batch


@pytest.mark.parametrize(("count", "limit"), [(20, "10%"), (20, "3"), (7, "1"), (50, "20%"), (9, "100%")])
def test_no_more_than_max_unavailable_drained_at_once(count: int, limit: str) -> None:
    plan = plan_for(count, max_unavailable=limit)
    drained: set[str] = set()
    for step in plan.steps():
        if step.kind == DRAIN:
            drained.add(step.box or "")
        elif step.kind == UNDRAIN:
            drained.discard(step.box or "")
        assert len(drained) <= plan.max_unavailable
    assert all(len(batch) <= plan.max_unavailable for wave in plan.waves for batch in wave)


def test_happy_run_executes_the_plan_and_is_done() -> None:
    plan = plan_for(20)
    executed, decision = drive(plan)
    assert executed == list(plan.steps())
    assert decision.state == DONE and decision.step is None
    assert advance(plan, decision.progress).state == DONE  # asking again changes nothing


# --- resume after a crash -----------------------------------------------------------------------------------


def test_resume_after_a_crash_at_every_step_continues_exactly() -> None:
    plan = plan_for(12, waves="1,50%,100%", max_unavailable="3")
    steps = list(plan.steps())
    for k in range(len(steps) + 1):
        before, crashed = drive(plan, max_steps=k)  # step k may have started: it was never recorded done
        after, decision = drive(plan, crashed.progress)
        assert before + after == steps, k
        assert decision.state == DONE


def test_a_step_reported_twice_is_recorded_once() -> None:
    plan = plan_for(3, waves="100%", max_unavailable="1")
    once = advance(plan, Progress(), StepDone(0))
    assert advance(plan, once.progress, StepDone(0)) == once
    assert once.index == 1


def test_resume_during_a_rollback_continues_the_rollback_exactly() -> None:
    plan = plan_for(10, waves="1,50%,100%", max_unavailable="2")
    failing = plan.waves[1][1][0]
    full, final = drive(plan, fail=(GATE, failing))
    for k in range(len(full) + 1):
        before, crashed = drive(plan, fail=(GATE, failing), max_steps=k)
        after, decision = drive(plan, crashed.progress, fail=(GATE, failing))
        assert before + after == full, k
        assert decision.progress == final.progress


# --- failures ---------------------------------------------------------------------------------------------


def test_failed_gate_in_wave_two_rolls_back_wave_two_only_and_halts() -> None:
    plan = make_plan(fleet(20), version=V, bundle="b", waves="1,50%,100%", max_unavailable="2", bake=60,
                     from_versions={f"box{i:02d}": "1.9.0" for i in range(20)})
    wave2 = plan.waves[1]
    assert [len(b) for b in wave2] == [2, 2, 2, 2, 1]
    failing = wave2[2][0]  # the first box of wave 2's third batch
    executed, decision = drive(plan, fail=(GATE, failing))
    main = len([s for s in plan.steps() if (s.wave, s.batch) < (2, 3)]) + 8  # + batch 3 up to the failing gate
    assert executed[:main] == list(plan.steps()[:main])
    rollback = executed[main:]
    done_batches = [box for batch in wave2[:2] for box in batch]

    def revert(box: str, batch: int) -> list[tuple[str, str | None, int, int, tuple[tuple[str, str], ...]]]:
        return [(REVERT, box, 2, batch, (("version", "1.9.0"),))]

    expected = []
    for box in wave2[2]:  # still drained: no second drain
        expected += [*revert(box, 3), (UNDRAIN, box, 2, 3, ())]
    for box in done_batches:  # back in service: drained again first, one at a time
        batch = 1 if box in wave2[0] else 2
        expected += [(DRAIN, box, 2, batch, ()), *revert(box, batch), (UNDRAIN, box, 2, batch, ())]
    assert [(s.kind, s.box, s.wave, s.batch, s.args) for s in rollback] == expected
    assert all(s.wave == 2 for s in rollback)  # the canary (wave 1) is not touched
    assert decision.state == HALTED and decision.step is None
    assert f"gate failed on {failing} (wave 2): boom" in decision.note
    assert not any(s.wave == 3 for s in executed)
    assert advance(plan, decision.progress).step is None  # halted stays halted


def test_an_upgrade_the_box_refused_is_only_undrained() -> None:
    plan = plan_for(4, waves="1,100%", max_unavailable="2")
    first, second = plan.waves[1][0]
    executed, decision = drive(plan, fail=(UPGRADE, second))
    rollback = executed[6 + 6:]  # canary, then wave 2 up to the refused upgrade
    assert kinds(rollback) == [(REVERT, first), (UNDRAIN, first), (UNDRAIN, second)]
    assert decision.state == HALTED


def test_failed_canary_rolls_back_the_canary_and_touches_no_other_box() -> None:
    plan = plan_for(20)
    canary = plan.boxes()[0]
    executed, decision = drive(plan, fail=(GATE, canary))
    assert {s.box for s in executed} == {canary, None}
    assert kinds(executed[5:]) == [(REVERT, canary), (UNDRAIN, canary)]
    assert decision.state == HALTED


def test_a_lost_box_counts_against_max_unavailable_and_halts_when_over_it() -> None:
    plan = plan_for(8, waves="1,3,100%", max_unavailable="3")
    assert [[len(b) for b in w] for w in plan.waves] == [[1], [2], [3, 2]]
    canary = plan.boxes()[0]
    executed, decision = drive(plan, lose=(UPLOAD, canary))
    assert kinds(executed[:2]) == [(DRAIN, canary), (UPLOAD, canary)]
    assert kinds(executed[2:3]) == [(DRAIN, plan.boxes()[1])]  # no bake for a batch whose boxes are all lost
    assert [s.box for s in executed].count(canary) == 2  # no upgrade, gate or undrain for a lost box
    assert all(s.wave <= 2 for s in executed)  # wave 2 (1 lost + 2 <= 3) runs; wave 3 (1 + 3 > 3) does not
    assert decision.state == HALTED
    assert decision.progress.lost == (canary,)
    assert "1 lost box(es)" in decision.note and "max_unavailable 3" in decision.note


def test_a_box_lost_in_a_batch_that_still_fits_lets_the_roll_out_finish() -> None:
    plan = plan_for(6, waves="1,100%", max_unavailable="3")
    assert [[len(b) for b in w] for w in plan.waves] == [[1], [3, 2]]
    lost = plan.waves[1][1][0]  # in the last batch: nothing starts after it
    executed, decision = drive(plan, lose=(UPGRADE, lost))
    assert decision.state == DONE
    assert [s.kind for s in executed if s.box == lost] == [DRAIN, UPLOAD, UPGRADE]


def test_abort_undrains_the_drained_boxes_and_stops() -> None:
    plan = plan_for(6, waves="1,100%", max_unavailable="2")
    before, mid = drive(plan, max_steps=8)  # canary done, wave 2 batch 1: both drained, one upgraded
    drained = [s.box for s in before if s.kind == DRAIN][1:]
    after, decision = drive(plan, mid.progress, first=Abort())
    assert kinds(after) == [(UNDRAIN, box) for box in drained]
    assert decision.state == ABORTED and decision.note == "aborted: by operator"


# --- window and gate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "second", "allowed"), [
    (None, 0, True),
    ("02:00-14:00", 2 * 3600, True),
    ("02:00-14:00", 14 * 3600, False),
    ("02:00-14:00", 3600, False),
    ("22:00-06:00", 23 * 3600, True),
    ("22:00-06:00", 5 * 3600, True),
    ("22:00-06:00", 12 * 3600, False),
])
def test_window_allows(window: str | None, second: float, allowed: bool) -> None:
    assert window_allows(second, Window.parse(window) if window else None) is allowed


def test_batches_start_only_inside_the_window_and_a_started_batch_finishes() -> None:
    plan = plan_for(4, waves="1,100%", max_unavailable="1", window=Window.parse("02:00-06:00"))
    outside = advance(plan, Progress(), second_of_day=12 * 3600)
    assert outside.step is None and outside.wait == 14 * 3600 and "02:00-06:00" in outside.note
    inside = advance(plan, Progress(), second_of_day=3 * 3600)
    assert inside.step == plan.steps()[0]
    mid_batch = advance(plan, Progress(completed=frozenset({0})), second_of_day=12 * 3600)
    assert mid_batch.step == plan.steps()[1]


@pytest.mark.parametrize(("health", "error_rate", "restarts", "reason"), [
    (BoxHealth("b", True, version=V), 0.0, 0, None),
    (BoxHealth("b", True, version=V), 0.01, 0, None),
    (None, 0.0, 0, "not healthy"),
    (BoxHealth("b", False, version=V, error="timeout"), 0.0, 0, "timeout"),
    (BoxHealth("b", True, version="1.9.0"), 0.0, 0, "'1.9.0', expected '2.0.0'"),
    (BoxHealth("b", True, version=V), 0.05, 0, "error rate 0.0500"),
    (BoxHealth("b", True, version=V), 0.0, 2, "2 restarts"),
])
def test_gate(health: BoxHealth | None, error_rate: float, restarts: int, reason: str | None) -> None:
    got = check_gate(health, version=V, error_rate=error_rate, restarts=restarts, thresholds=GateThresholds())
    assert (got is None) if reason is None else (got is not None and reason in got)


# --- properties -----------------------------------------------------------------------------------------------


@st.composite
def wave_specs(draw: st.DrawFn) -> str:
    counts = sorted(set(draw(st.lists(st.integers(1, 60), max_size=3))))
    percents = sorted(set(draw(st.lists(st.integers(1, 99), max_size=3))))
    return ",".join([*map(str, counts), *(f"{p}%" for p in percents), "100%"])


@given(st.integers(1, 60), st.integers(1, 6), wave_specs(),
       st.one_of(st.integers(1, 10).map(str), st.integers(1, 100).map(lambda p: f"{p}%")))
def test_every_box_in_one_wave_waves_monotone_batches_bounded(count: int, sites: int, waves: str,
                                                               limit: str) -> None:
    plan = plan_for(count, waves=waves, max_unavailable=limit, sites=sites)
    members = [box for wave in plan.waves for batch in wave for box in batch]
    assert sorted(members) == sorted(b.id for b in fleet(count, sites))  # every box, exactly once
    sizes = [sum(len(b) for b in wave) for wave in plan.waves]
    assert all(size > 0 for size in sizes)
    cumulative = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert cumulative == sorted(set(cumulative)) and cumulative[-1] == count
    assert cumulative == list(wave_sizes(parse_waves(waves), count))
    assert all(0 < len(batch) <= plan.max_unavailable for wave in plan.waves for batch in wave)
