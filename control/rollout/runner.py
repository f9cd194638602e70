"""Carries a roll-out's steps out one at a time: ask the plan for the next step, do it, report the outcome,
persist the progress, repeat until the plan says done, halted or aborted (control/rollout/plan.py decides
everything; this module only does I/O).

Rules kept here:
- Progress is saved after every step, before the next one starts. A control plane killed mid-step repeats
  that step at resume, so every step is idempotent: drain and undrain are states, an upload or an upgrade
  to a version the box already runs (or has staged) is done already, a revert to the release the box runs
  is done already, a bake bakes again.
- Outcomes: a box that answers an error fails the step (the plan halts and rolls the wave back); a box
  that cannot be reached mid-step is lost (the plan counts it against max_unavailable). A revert that fails
  is reported to the plan as failed either way: that box stays drained.
- Upgrade: the box answers once the new release serves (its own health gate passed) or refused it (422).
  A box restarted since its upload has forgotten what was staged (409): the bundle is uploaded again.
- Gate, after the bake: a fresh poll says the box is healthy and reports the version; the box's counters
  since it switched release give the error rate (over at least GATE_SAMPLE requests) and the worker
  restarts, held to the thresholds.
- Boxes an operator drained before the roll-out are never undrained by it.
- Abort: between steps and during a bake. What the plan then does (undrain, no rollback) is its business.
- Every step's outcome lands in the audit log (action `rollout`), and in the service log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from control.model import Box, BoxHealth
from control.rollout.boxes import BoxFirmwareClient, BoxRefused, BoxUnreachable
from control.rollout.job import Rollout
from control.rollout.plan import (
    BAKE,
    DRAIN,
    FINAL,
    GATE,
    REVERT,
    RUNNING,
    UNDRAIN,
    UPGRADE,
    UPLOAD,
    Abort,
    BoxLost,
    Event,
    Progress,
    Step,
    StepDone,
    StepFailed,
    advance,
    check_gate,
)
from oca.wire.window import local_second_of_day

log = logging.getLogger("oca.control.rollout")

MAX_WAIT = 60.0  # outside the window: look again at least this often (an abort, a clock change)
GATE_SAMPLE = 100  # requests: the smallest sample an error rate is taken over
BUSY = ("installing", "switching")  # a box's firmware states while a step runs on it
SETTLE_POLL = 0.2  # seconds between looks at a busy box


@dataclass
class RolloutRunner:
    rollout: Rollout
    boxes: Mapping[str, Box]
    client: BoxFirmwareClient
    set_drained: Callable[[str, bool], Awaitable[None]]
    poll: Callable[[str], Awaitable[BoxHealth]]  # a fresh poll of the box, then its health
    save: Callable[[Rollout], Awaitable[None]]
    audit: Callable[[str, Mapping[str, Any]], Awaitable[None]]  # subject, detail
    clock: Callable[[], float] = time.time
    second_of_day: Callable[[float], float] = local_second_of_day
    _abort: asyncio.Event = field(default_factory=asyncio.Event)
    _abort_reason: str = ""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)  # set by an abort or a stop: a bake ends early
    stopping: bool = False

    def abort(self, reason: str) -> None:
        self._abort_reason = reason
        self._abort.set()
        self._wake.set()

    def stop(self) -> None:
        """Return at the next step boundary, after the progress of every audited step is saved (a step cut
        between its audit line and its saved progress would run, and be audited, again at resume)."""
        self.stopping = True
        self._wake.set()

    async def run(self) -> Rollout:
        event: Event | None = None
        while True:
            if event is None and self._abort.is_set() and self.rollout.progress.state == RUNNING:
                event = Abort(self._abort_reason)
            decision = advance(self.rollout.plan, self.rollout.progress, event,
                               second_of_day=self.second_of_day(self.clock()))
            if event is not None or decision.progress != self.rollout.progress:
                await self._persist(decision.progress)
            event = None
            if self.stopping and decision.state not in FINAL:
                return self.rollout
            if decision.step is None:
                if decision.wait > 0 and decision.state not in FINAL:
                    await self._sleep(min(decision.wait, MAX_WAIT))
                    continue
                await self.audit(self.rollout.id, {"rollout": self.rollout.id, "state": decision.state,
                                                   "reason": decision.note})
                log.info("roll-out %s %s: %s", self.rollout.id, decision.state, decision.note)
                return self.rollout
            assert decision.index is not None
            event = await self._execute(decision.index, decision.step)
            if event is not None:
                await self._report(decision.step, event)

    async def _persist(self, progress: Progress) -> None:
        self.rollout = replace(self.rollout, progress=progress, updated=self.clock())
        await self.save(self.rollout)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or less if an abort comes: True when the whole time passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
            return False
        return True

    async def _report(self, step: Step, event: Event) -> None:
        result = "done" if isinstance(event, StepDone) else "lost" if isinstance(event, BoxLost) else "failed"
        reason = getattr(event, "reason", "")
        detail = {"rollout": self.rollout.id, "step": step.kind, "wave": step.wave, "batch": step.batch,
                  "version": step.arg("version") or self.rollout.plan.version, "result": result}
        if reason:
            detail["reason"] = reason
        await self.audit(step.box or f"wave {step.wave} batch {step.batch}", detail)
        level = logging.INFO if result == "done" else logging.ERROR
        log.log(level, "roll-out %s wave %d batch %d: %s %s %s%s", self.rollout.id, step.wave, step.batch,
                step.kind, step.box or "", result, f": {reason}" if reason else "")

    # -- one step --------------------------------------------------------------------------------------

    async def _execute(self, index: int, step: Step) -> Event | None:
        """The outcome of the step, or None when an abort interrupted it (it will run again if ever needed)."""
        if step.kind == BAKE:
            return StepDone(index) if await self._sleep(float(step.arg("seconds") or 0)) else None
        assert step.box is not None
        box = self.boxes.get(step.box)
        if box is None:
            return BoxLost(index, f"{step.box} is no longer in the fleet config")
        rollback = self.rollout.progress.state != RUNNING
        try:
            if step.kind in (DRAIN, UNDRAIN):
                if box.id not in self.rollout.operator_drained:
                    await self.set_drained(box.id, step.kind == DRAIN)
            elif step.kind == UPLOAD:
                await self._upload(box)
            elif step.kind == UPGRADE:
                await self._upgrade(box)
            elif step.kind == GATE:
                problem = await self._gate(box)
                if problem is not None:
                    return StepFailed(index, problem)
            elif step.kind == REVERT:
                await self._revert(box, step.arg("version") or "previous")
            else:
                return StepFailed(index, f"unknown step {step.kind!r}")
        except BoxRefused as exc:
            return StepFailed(index, str(exc))
        except BoxUnreachable as exc:
            return StepFailed(index, str(exc)) if rollback else BoxLost(index, str(exc))
        return StepDone(index)

    async def _settled(self, box: Box) -> dict[str, Any]:
        """The box's firmware status once no firmware step is under way on it: after a restart of the control
        plane, the upload or switch it had started may still be running there (a new one would be refused)."""
        deadline = self.clock() + self.client.timeout
        while True:
            status = await self.client.status(box)
            if (status.get("firmware") or {}).get("state") not in BUSY or self.clock() >= deadline:
                return status
            await asyncio.sleep(SETTLE_POLL)

    async def _upload(self, box: Box) -> None:
        version = self.rollout.plan.version
        status = await self._settled(box)
        if version in (status.get("version"), status.get("staged")):
            return  # a repeat after a restart: the box runs or holds this version already
        await self.client.stage(box, self.rollout.bundle_path)

    async def _upgrade(self, box: Box) -> None:
        version = self.rollout.plan.version
        status = await self._settled(box)
        if status.get("version") == version:
            return
        try:
            await self.client.activate(box, version)
        except BoxRefused as exc:
            if exc.status != 409 or "not staged" not in str(exc):
                raise
            log.warning("roll-out %s: %s forgot the staged release (restarted?): uploading it again",
                        self.rollout.id, box.id)
            await self.client.stage(box, self.rollout.bundle_path)
            await self.client.activate(box, version)

    async def _gate(self, box: Box) -> str | None:
        version = self.rollout.plan.version
        health = await self.poll(box.id)
        stats = (await self.client.status(box)).get("release_stats") or {}  # unreachable: the box is lost
        if stats.get("version") != version:
            return f"gate: the box's counters are of release {stats.get('version')!r}, expected {version!r}"
        requests, errors, restarts = (int(stats.get(k) or 0) for k in ("requests", "errors", "restarts"))
        # a drained box sees few requests while it bakes: below GATE_SAMPLE each 5xx weighs 1/GATE_SAMPLE, so
        # one bad answer among four health probes is not read as a 25% error rate
        return check_gate(health, version=version, error_rate=errors / max(requests, GATE_SAMPLE),
                          restarts=restarts, thresholds=self.rollout.thresholds)

    async def _revert(self, box: Box, version: str) -> None:
        status = await self._settled(box)
        if version == "previous":
            previous = status.get("previous_version")
            if not isinstance(previous, str):
                raise BoxRefused(409, f"{box.id} keeps no previous release to revert to")
            version = previous
        await self.client.revert(box, version)
