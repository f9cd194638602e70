"""A firmware roll-out as data: the fleet and a spec in, the exact steps out; progress and an event in, the
next step out. Pure: no I/O, no clock (the time of day comes in as an argument). A runner carries the steps
out one at a time and persists `Progress` after each, so a restarted runner resumes at the first incomplete
step (issue 7, "Fleet roll-out"; STYLE.md, mitmproxy anchor).

Rules kept here:
- Waves (`1,10%,50%,100%`) are cumulative targets: a count is a number of boxes, a percentage a share of the
  fleet rounded up; both must increase strictly and the last entry must be 100%. Targets that round to the
  previous wave's size give no wave.
- Boxes are ordered deterministically, canaries spread over sites: sites in rendezvous order of the version,
  boxes of each site in rendezvous order of the version, then round-robin over the sites.
- Each wave is cut into batches of at most `max_unavailable` boxes (a count, or a share of the fleet rounded
  down, at least 1). Per batch: drain, upload, upgrade for each box; one bake; a gate per box; an undrain per
  box. So per box: drain -> upload -> upgrade -> (bake) -> gate -> undrain.
- A failed step (a gate, or an upload or upgrade the box refused) halts the roll-out and rolls back that wave
  only: its boxes still drained first (revert to the release the box ran before, kept in its previous slot,
  then undrain; a drained box not upgraded is only undrained), then its boxes already undrained (drain
  first). No step of a later wave runs.
- A lost box (unreachable mid-step) has its remaining steps skipped and stays out of service: it counts
  against `max_unavailable` for the rest of the roll-out; a batch that would take lost + batch boxes over the
  limit is not started and the roll-out halts.
- With a window (`--in-fill-window`), a batch starts only inside the window; a started batch finishes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from control.model import Box, BoxHealth
from control.steering import rendezvous_order
from oca.wire.window import Window

DRAIN, UPLOAD, UPGRADE, BAKE, GATE, UNDRAIN = "drain", "upload", "upgrade", "bake", "gate", "undrain"
REVERT = "revert"  # back to the box's previous release (rollbacks only)
RUNNING, ROLLING_BACK, HALTED, DONE, ABORTED = "running", "rolling_back", "halted", "done", "aborted"
FINAL = frozenset({HALTED, DONE, ABORTED})


# --- spec ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quota:
    """A number of boxes, or a percentage of the fleet."""

    value: Fraction
    percent: bool

    def resolve(self, total: int, *, round_up: bool) -> int:
        if not self.percent:
            return min(int(self.value), total)
        share = self.value * total / 100
        return min(math.ceil(share) if round_up else math.floor(share), total)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def parse_quota(text: str, what: str = "quota") -> Quota:
    """`N` (a count of at least 1) or `P%` (0 < P <= 100); ValueError naming the text otherwise."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = Fraction(raw[:-1].strip())
            if not 0 < value <= 100:
                raise ValueError
            return Quota(value, True)
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError
        return Quota(Fraction(int(raw)), False)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} {text!r}: expected a count of at least 1 or a percentage such as 10%") from None


def parse_waves(text: str) -> tuple[Quota, ...]:
    """`1,10%,50%,100%`: cumulative targets; ValueError naming the spec and the entry otherwise."""
    if not text.strip():
        raise ValueError(f"waves {text!r}: expected a list such as 1,10%,50%,100%")
    waves = tuple(parse_quota(entry, f"waves {text!r}: entry") for entry in text.split(","))
    for kind in (True, False):
        values = [q.value for q in waves if q.percent is kind]
        if any(b <= a for a, b in itertools.pairwise(values)):
            unit = "percentages" if kind else "counts"
            raise ValueError(f"waves {text!r}: {unit} must increase from wave to wave")
    last = waves[-1]
    if not (last.percent and last.value == 100):
        raise ValueError(f"waves {text!r}: the last wave must be 100% so that every box is upgraded")
    return waves


def wave_sizes(waves: Sequence[Quota], total: int) -> tuple[int, ...]:
    """Cumulative box counts per non-empty wave for a fleet of `total` boxes."""
    sizes: list[int] = []
    reached = 0
    for quota in waves:
        target = max(reached, quota.resolve(total, round_up=True))
        if target > reached:
            sizes.append(target)
            reached = target
    return tuple(sizes)


def window_allows(second_of_day: float, window: Window | None) -> bool:
    """Whether a batch may start at this local time of day (`--in-fill-window`); no window: always."""
    return window is None or window.remaining(second_of_day % 86400) > 0


@dataclass(frozen=True, slots=True)
class GateThresholds:
    max_error_rate: float = 0.01  # share of requests answered 5xx or reset during the bake
    max_restarts: int = 0  # worker restarts during the bake


def check_gate(health: BoxHealth | None, *, version: str, error_rate: float, restarts: int,
               thresholds: GateThresholds) -> str | None:
    """None when the box passes its gate after the bake, else why it does not (names the value)."""
    if health is None or not health.healthy:
        why = health.error if health is not None and health.error else "not healthy"
        return f"gate: box not healthy ({why})"
    if health.version != version:
        return f"gate: box reports version {health.version!r}, expected {version!r}"
    if error_rate > thresholds.max_error_rate:
        return f"gate: error rate {error_rate:.4f} above {thresholds.max_error_rate:.4f}"
    if restarts > thresholds.max_restarts:
        return f"gate: {restarts} restarts above {thresholds.max_restarts}"
    return None


# --- the plan --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # drain | upload | upgrade | bake | gate | undrain | revert
    box: str | None  # None for a batch's bake
    wave: int  # 1-based
    batch: int  # 1-based within its wave
    args: tuple[tuple[str, str], ...] = ()

    def arg(self, name: str) -> str | None:
        return dict(self.args).get(name)


def order_boxes(boxes: Iterable[Box], version: str) -> tuple[str, ...]:
    """Canary first, spread over sites: round-robin over sites, each in rendezvous order of the version."""
    by_site: dict[str, list[str]] = {}
    for box in boxes:
        by_site.setdefault(box.site, []).append(box.id)
    queues = [rendezvous_order(version, by_site[site]) for site in rendezvous_order(version, by_site)]
    ordered: list[str] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[rank] for q in queues if rank < len(q))
    return tuple(ordered)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    version: str
    bundle: str  # the bundle's digest (what the runner uploads)
    waves: tuple[tuple[tuple[str, ...], ...], ...]  # wave -> batch -> box ids
    max_unavailable: int
    bake: float  # seconds
    from_versions: Mapping[str, str] = field(default_factory=dict)  # box -> version to roll back to
    window: Window | None = None

    def steps(self) -> tuple[Step, ...]:
        out: list[Step] = []
        version = (("version", self.version),)
        for w, batches in enumerate(self.waves, 1):
            for b, batch in enumerate(batches, 1):
                for box in batch:
                    out += [Step(DRAIN, box, w, b), Step(UPLOAD, box, w, b, (("bundle", self.bundle), *version)),
                            Step(UPGRADE, box, w, b, version)]
                out.append(Step(BAKE, None, w, b, (("seconds", f"{self.bake:g}"),)))
                out += [Step(GATE, box, w, b, version) for box in batch]
                out += [Step(UNDRAIN, box, w, b) for box in batch]
        return tuple(out)

    def boxes(self) -> tuple[str, ...]:
        return tuple(box for batches in self.waves for batch in batches for box in batch)


def make_plan(boxes: Iterable[Box], *, version: str, bundle: str, waves: str, max_unavailable: str,
              bake: float, from_versions: Mapping[str, str] | None = None,
              window: Window | None = None) -> RolloutPlan:
    """The roll-out of `version` over `boxes`; ValueError naming the bad spec value."""
    if bake < 0:
        raise ValueError(f"bake {bake!r}: expected seconds, at least 0")
    ordered = order_boxes(boxes, version)
    if not ordered:
        raise ValueError("roll-out: the fleet has no boxes")
    limit = max(1, parse_quota(max_unavailable, "max_unavailable").resolve(len(ordered), round_up=False))
    plan_waves: list[tuple[tuple[str, ...], ...]] = []
    start = 0
    for end in wave_sizes(parse_waves(waves), len(ordered)):
        members = ordered[start:end]
        plan_waves.append(tuple(members[i:i + limit] for i in range(0, len(members), limit)))
        start = end
    return RolloutPlan(version, bundle, tuple(plan_waves), limit, bake, dict(from_versions or {}), window)


# --- progress and the state machine ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """What a runner persists after each step; `advance` derives everything else from it and the plan."""

    completed: frozenset[int] = frozenset()  # indexes into plan.steps()
    lost: tuple[str, ...] = ()  # boxes unreachable mid-step, in the order they were lost
    state: str = RUNNING
    reason: str = ""
    rollback: tuple[Step, ...] = ()  # set when a failure halts the roll-out
    rollback_completed: frozenset[int] = frozenset()  # indexes into rollback
    rollback_failed: tuple[str, ...] = ()  # boxes whose rollback failed: their remaining steps are skipped


@dataclass(frozen=True, slots=True)
class StepDone:
    index: int


@dataclass(frozen=True, slots=True)
class StepFailed:
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class BoxLost:
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str = "by operator"


Event = StepDone | StepFailed | BoxLost | Abort


@dataclass(frozen=True, slots=True)
class Decision:
    progress: Progress
    index: int | None = None  # index of the next step in `script` (plan.steps(), or progress.rollback)
    step: Step | None = None
    wait: float = 0.0  # > 0: no step now; the window opens in this many seconds
    note: str = ""

    @property
    def state(self) -> str:
        return self.progress.state


def advance(plan: RolloutPlan, progress: Progress, event: Event | None = None, *,
            second_of_day: float | None = None) -> Decision:
    """Apply `event` (None: just ask, e.g. after a restart) and return the next step or the final state."""
    steps = plan.steps()
    if event is not None:
        progress = _apply(plan, steps, progress, event)
    if progress.state == ROLLING_BACK:
        return _next_rollback(progress)
    if progress.state in FINAL:
        return Decision(progress, note=progress.reason)
    lost = set(progress.lost)
    for index, step in enumerate(steps):
        if index in progress.completed or step.box in lost:
            continue
        if step.kind == BAKE and set(plan.waves[step.wave - 1][step.batch - 1]) <= lost:
            continue  # nothing left to bake in this batch
        if _starts_batch(steps, index, progress.completed):
            batch = plan.waves[step.wave - 1][step.batch - 1]
            if len(lost) + len(batch) > plan.max_unavailable:
                reason = (f"halted before wave {step.wave} batch {step.batch}: {len(lost)} lost box(es) "
                          f"({', '.join(progress.lost)}) + {len(batch)} would exceed max_unavailable "
                          f"{plan.max_unavailable}")
                progress = replace(progress, state=HALTED, reason=reason)
                return Decision(progress, note=reason)
            if second_of_day is not None and not window_allows(second_of_day, plan.window):
                assert plan.window is not None
                opens = (plan.window.start - second_of_day) % 86400
                return Decision(progress, wait=opens, note=f"outside the window {plan.window}")
        return Decision(progress, index, step)
    done = replace(progress, state=DONE, reason=f"all boxes at {plan.version}")
    return Decision(done, note=done.reason)


def _starts_batch(steps: Sequence[Step], index: int, completed: frozenset[int]) -> bool:
    """The next step opens a batch none of whose steps has run yet."""
    step = steps[index]
    same = [i for i, s in enumerate(steps) if (s.wave, s.batch) == (step.wave, step.batch)]
    return not any(i in completed for i in same)


def _apply(plan: RolloutPlan, steps: Sequence[Step], progress: Progress, event: Event) -> Progress:
    if progress.state in FINAL:
        return progress
    if progress.state == ROLLING_BACK:
        return _apply_rollback(progress, event)
    if isinstance(event, Abort):
        undrain = tuple(Step(UNDRAIN, box, w, b) for box, (w, b) in _drained(steps, progress).items())
        return replace(progress, state=ROLLING_BACK if undrain else ABORTED, reason=f"aborted: {event.reason}",
                       rollback=undrain)
    if event.index in progress.completed:
        return progress  # a step reported twice (e.g. replayed after a restart) changes nothing
    if isinstance(event, StepDone):
        return replace(progress, completed=progress.completed | {event.index})
    step = steps[event.index]
    if isinstance(event, BoxLost) and step.box is not None:
        return replace(progress, lost=(*progress.lost, step.box))
    reason = f"{step.kind} failed on {step.box} (wave {step.wave}): {event.reason}"
    rollback = _rollback_steps(plan, steps, progress, step.wave)
    return replace(progress, state=ROLLING_BACK if rollback else HALTED, reason=reason, rollback=rollback)


def _drained(steps: Sequence[Step], progress: Progress) -> dict[str, tuple[int, int]]:
    """Boxes drained and not undrained (nor lost), in drain order -> (wave, batch)."""
    drained: dict[str, tuple[int, int]] = {}
    for index in sorted(progress.completed):
        step = steps[index]
        if step.kind == DRAIN and step.box is not None:
            drained[step.box] = (step.wave, step.batch)
        elif step.kind == UNDRAIN and step.box is not None:
            drained.pop(step.box, None)
    return {box: wb for box, wb in drained.items() if box not in progress.lost}


def _rollback_steps(plan: RolloutPlan, steps: Sequence[Step], progress: Progress, wave: int) -> tuple[Step, ...]:
    upgraded = [s for i, s in enumerate(steps) if i in progress.completed and s.kind == UPGRADE
                and s.wave == wave and s.box not in progress.lost]
    drained = _drained(steps, progress)
    out: list[Step] = []
    for box, (w, b) in drained.items():  # still drained: roll back (if upgraded) and undrain
        if any(s.box == box for s in upgraded):
            out += _revert(plan, box, w, b)
        out.append(Step(UNDRAIN, box, w, b))
    for s in upgraded:  # upgraded earlier in the wave and back in service: drain first
        if s.box is not None and s.box not in drained:
            out += [Step(DRAIN, s.box, s.wave, s.batch), *_revert(plan, s.box, s.wave, s.batch),
                    Step(UNDRAIN, s.box, s.wave, s.batch)]
    return tuple(out)


def _revert(plan: RolloutPlan, box: str, wave: int, batch: int) -> list[Step]:
    """Back to the release the box ran before the roll-out: the box keeps it in its previous slot, so no
    bundle travels and no signed downgrade is needed. Without a recorded version: whatever is previous."""
    return [Step(REVERT, box, wave, batch, (("version", plan.from_versions.get(box, "previous")),))]


def _apply_rollback(progress: Progress, event: Event) -> Progress:
    if isinstance(event, Abort) or event.index in progress.rollback_completed:
        return progress  # a rollback is not abortable: it is what leaves the fleet serving
    if isinstance(event, StepDone):
        return replace(progress, rollback_completed=progress.rollback_completed | {event.index})
    box = progress.rollback[event.index].box or ""
    return replace(progress, rollback_failed=(*progress.rollback_failed, box),
                   reason=f"{progress.reason}; rollback of {box} failed: {event.reason}")


def _next_rollback(progress: Progress) -> Decision:
    for index, step in enumerate(progress.rollback):
        if index not in progress.rollback_completed and step.box not in progress.rollback_failed:
            return Decision(progress, index, step)
    final = replace(progress, state=ABORTED if progress.reason.startswith("aborted") else HALTED)
    return Decision(final, note=final.reason)
