"""A roll-out as the control plane keeps it: the frozen plan, the progress, and what the runner needs to carry
the steps out (the bundle, the gate's thresholds, the boxes an operator had drained). One JSON document in
the StateStore, rewritten after every step, so a restarted control plane resumes where it stopped.

Rules kept here:
- The plan is stored whole (waves, box order, versions to roll back to) and never recomputed: a fleet change
  after the submit does not move a box to another wave mid-roll-out.
- Decoding checks the shape and raises ValueError naming the field: a damaged document is reported, not
  resumed half-understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.rollout.plan import GateThresholds, Progress, RolloutPlan, Step
from oca.wire.window import Window


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    plan: RolloutPlan
    progress: Progress
    bundle_path: str  # the bundle file the runner uploads (kept under rollout.bundles_dir)
    bundle_size: int
    operator: str
    created: float
    updated: float
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    operator_drained: frozenset[str] = frozenset()  # drained before the roll-out: left drained after it
    spec: Mapping[str, str] = field(default_factory=dict)  # what the operator asked for (waves, max_unavailable, ...)


def _step(step: Step) -> list[Any]:
    return [step.kind, step.box, step.wave, step.batch, dict(step.args)]


def _step_of(raw: Any) -> Step:
    if not (isinstance(raw, list) and len(raw) == 5 and isinstance(raw[0], str) and isinstance(raw[2], int)
            and isinstance(raw[3], int) and isinstance(raw[4], dict) and (raw[1] is None or isinstance(raw[1], str))):
        raise ValueError(f"a step is malformed: {str(raw)[:120]}")
    return Step(raw[0], raw[1], raw[2], raw[3], tuple((str(k), str(v)) for k, v in raw[4].items()))


def to_json(rollout: Rollout) -> dict[str, Any]:
    plan, progress = rollout.plan, rollout.progress
    return {
        "id": rollout.id, "operator": rollout.operator, "created": rollout.created, "updated": rollout.updated,
        "bundle": {"path": rollout.bundle_path, "size": rollout.bundle_size, "sha256": plan.bundle},
        "spec": dict(rollout.spec),
        "thresholds": {"max_error_rate": rollout.thresholds.max_error_rate,
                       "max_restarts": rollout.thresholds.max_restarts},
        "operator_drained": sorted(rollout.operator_drained),
        "plan": {"version": plan.version, "waves": [[list(batch) for batch in wave] for wave in plan.waves],
                 "max_unavailable": plan.max_unavailable, "bake": plan.bake,
                 "from_versions": dict(plan.from_versions), "window": str(plan.window) if plan.window else None},
        "progress": {"completed": sorted(progress.completed), "lost": list(progress.lost), "state": progress.state,
                     "reason": progress.reason, "rollback": [_step(s) for s in progress.rollback],
                     "rollback_completed": sorted(progress.rollback_completed),
                     "rollback_failed": list(progress.rollback_failed)},
    }


def from_json(raw: Mapping[str, Any]) -> Rollout:
    """ValueError naming what is wrong with a stored document."""
    try:
        plan_raw, progress_raw, bundle = raw["plan"], raw["progress"], raw["bundle"]
        window = Window.parse(plan_raw["window"]) if plan_raw.get("window") else None
        plan = RolloutPlan(
            version=str(plan_raw["version"]), bundle=str(bundle["sha256"]),
            waves=tuple(tuple(tuple(str(b) for b in batch) for batch in wave) for wave in plan_raw["waves"]),
            max_unavailable=int(plan_raw["max_unavailable"]), bake=float(plan_raw["bake"]),
            from_versions={str(k): str(v) for k, v in plan_raw["from_versions"].items()}, window=window)
        progress = Progress(
            completed=frozenset(int(i) for i in progress_raw["completed"]),
            lost=tuple(str(b) for b in progress_raw["lost"]), state=str(progress_raw["state"]),
            reason=str(progress_raw["reason"]), rollback=tuple(_step_of(s) for s in progress_raw["rollback"]),
            rollback_completed=frozenset(int(i) for i in progress_raw["rollback_completed"]),
            rollback_failed=tuple(str(b) for b in progress_raw["rollback_failed"]))
        thresholds = GateThresholds(float(raw["thresholds"]["max_error_rate"]), int(raw["thresholds"]["max_restarts"]))
        return Rollout(str(raw["id"]), plan, progress, str(bundle["path"]), int(bundle["size"]), str(raw["operator"]),
                       float(raw["created"]), float(raw["updated"]), thresholds,
                       frozenset(str(b) for b in raw["operator_drained"]),
                       {str(k): str(v) for k, v in raw.get("spec", {}).items()})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"roll-out {str(raw.get('id', '?'))[:64]}: stored document is malformed ({exc!r})") from None
