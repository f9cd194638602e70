"""What `oca firmware status` and GET /v1/rollouts show: a roll-out's waves, its boxes and their states,
derived from the plan and the progress alone (pure), so a view after a restart is the view before it."""

from __future__ import annotations

from typing import Any

from control.rollout.job import Rollout
from control.rollout.plan import DRAIN, FINAL, REVERT, ROLLING_BACK, UNDRAIN, advance

_AFTER = {"drain": "drained", "upload": "uploaded", "upgrade": "upgraded", "gate": "gate passed", "undrain": "done"}


def box_states(rollout: Rollout) -> dict[str, str]:
    """Box id -> pending | drained | uploaded | upgraded | gate passed | done | lost | reverted | rolled back |
    undrained (rolled back before its upgrade) | rollback failed, then the step under way, if any."""
    plan, progress = rollout.plan, rollout.progress
    states = dict.fromkeys(plan.boxes(), "pending")
    steps = plan.steps()
    for index in sorted(progress.completed):
        step = steps[index]
        if step.box is not None:
            states[step.box] = _AFTER[step.kind]
    for box in progress.lost:
        states[box] = "lost"
    reverted: set[str] = set()
    for index in sorted(progress.rollback_completed):
        step = progress.rollback[index]
        if step.box is None:
            continue
        if step.kind == REVERT:
            reverted.add(step.box)
            states[step.box] = "reverted"
        elif step.kind == UNDRAIN:
            states[step.box] = "rolled back" if step.box in reverted else "undrained"
        elif step.kind == DRAIN:
            states[step.box] = "drained for rollback"
    for box in progress.rollback_failed:
        states[box] = "rollback failed"
    if progress.state not in FINAL:
        current = advance(plan, progress).step
        if current is not None and current.box is not None:
            states[current.box] += f", {current.kind} under way"
    return states


def rollout_view(rollout: Rollout, *, detail: bool = True, second_of_day: float | None = None) -> dict[str, Any]:
    """`second_of_day` (local time now): say whether the roll-out waits for its window."""
    plan, progress = rollout.plan, rollout.progress
    total = len(plan.steps())
    view: dict[str, Any] = {
        "id": rollout.id, "version": plan.version, "state": progress.state, "reason": progress.reason,
        "operator": rollout.operator, "created": rollout.created, "updated": rollout.updated,
        "spec": dict(rollout.spec), "steps_done": len(progress.completed), "steps_total": total,
        "lost": list(progress.lost), "bundle": {"sha256": plan.bundle, "size": rollout.bundle_size},
    }
    if progress.state == ROLLING_BACK or progress.rollback:
        view["rollback"] = {"steps_done": len(progress.rollback_completed), "steps_total": len(progress.rollback),
                            "failed": list(progress.rollback_failed)}
    if progress.state not in FINAL:
        decision = advance(plan, progress, second_of_day=second_of_day)
        step = decision.step
        view["current"] = None if step is None else {"kind": step.kind, "box": step.box, "wave": step.wave,
                                                     "batch": step.batch}
        if decision.wait:
            view["waiting"] = {"seconds": decision.wait, "why": decision.note}
    if detail:
        states = box_states(rollout)
        view["waves"] = [{"wave": w, "batches": [list(batch) for batch in batches]}
                         for w, batches in enumerate(plan.waves, 1)]
        view["boxes"] = [{"box": box, "wave": w, "batch": b, "state": states[box],
                          "from_version": plan.from_versions.get(box)}
                         for w, batches in enumerate(plan.waves, 1)
                         for b, batch in enumerate(batches, 1) for box in batch]
    return view
