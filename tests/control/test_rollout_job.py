"""A roll-out's stored document (control/rollout/job.py) and its view (control/rollout/view.py): the document
survives a round trip at every point of a run, including mid-rollback; a damaged one is refused by name; the
view's box states follow the steps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control.model import Box
from control.rollout.job import Rollout, from_json, to_json
from control.rollout.plan import GATE, Progress, StepDone, StepFailed, advance, make_plan
from control.rollout.view import box_states, rollout_view
from oca.wire.window import Window


def rollout(progress: Progress | None = None, window: Window | None = None) -> Rollout:
    boxes = [Box(f"b{i}", f"s{i % 2}", f"http://d{i}", f"http://a{i}", 10**9) for i in range(5)]
    plan = make_plan(boxes, version="2.0", bundle="ab" * 32, waves="1,100%", max_unavailable="2", bake=1.5,
                     from_versions={f"b{i}": "1.0" for i in range(5)}, window=window)
    return Rollout("2.0-abc123", plan, progress or Progress(), "/b/x.tar", 1234, "alice", 1.0, 2.0,
                   operator_drained=frozenset({"b3"}), spec={"waves": "1,100%"})


def run_until(r: Rollout, stop: int, fail_at: tuple[str, str] | None = None) -> Rollout:
    """Drive the plan `stop` steps (every step succeeds, except `fail_at` = (kind, box))."""
    progress = r.progress
    event = None
    for _ in range(stop):
        decision = advance(r.plan, progress, event)
        progress = decision.progress
        if decision.step is None or decision.index is None:
            break
        failing = fail_at == (decision.step.kind, decision.step.box)
        event = StepFailed(decision.index, "boom") if failing else StepDone(decision.index)
    return replace(r, progress=advance(r.plan, progress, event).progress)


@pytest.mark.parametrize("steps", [0, 3, 9, 40])
def test_the_document_round_trips_at_any_point(steps: int) -> None:
    r = run_until(rollout(window=Window.parse("02:00-06:00")), steps)
    assert from_json(to_json(r)) == r


def test_the_document_round_trips_mid_rollback() -> None:
    canary = rollout().plan.boxes()[0]
    r = run_until(rollout(), 5, fail_at=(GATE, canary))
    assert r.progress.state == "rolling_back" and r.progress.rollback
    assert from_json(to_json(r)) == r


def test_a_damaged_document_is_refused_naming_the_roll_out() -> None:
    raw = to_json(rollout())
    del raw["plan"]["waves"]
    with pytest.raises(ValueError, match=r"roll-out 2\.0-abc123: stored document is malformed"):
        from_json(raw)
    raw = to_json(rollout())
    raw["progress"]["rollback"] = [["revert", "b1", 1]]
    with pytest.raises(ValueError, match="a step is malformed"):
        from_json(raw)


def test_box_states_follow_the_steps_and_the_rollback() -> None:
    r = rollout()
    canary = r.plan.boxes()[0]
    assert set(box_states(r).values()) == {"pending", "pending, drain under way"}
    assert box_states(run_until(r, 2))[canary] == "uploaded, upgrade under way"
    assert box_states(run_until(r, 6))[canary] == "done"
    failed = run_until(r, 20, fail_at=(GATE, canary))
    assert failed.progress.state == "halted"
    assert box_states(failed) == {canary: "rolled back", **{b: "pending" for b in r.plan.boxes()[1:]}}


def test_the_view_lists_waves_boxes_and_what_runs_now() -> None:
    r = run_until(rollout(), 3)
    view = rollout_view(r)
    assert view["current"] == {"kind": "bake", "box": None, "wave": 1, "batch": 1}
    assert view["steps_done"] == 3 and view["steps_total"] == 5 * 5 + 3
    assert [len(b) for w in view["waves"] for b in w["batches"]] == [1, 2, 2]
    assert [b["from_version"] for b in view["boxes"]] == ["1.0"] * 5
    assert "boxes" not in rollout_view(r, detail=False)
