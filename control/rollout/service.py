"""The control plane's roll-outs: submit one (check the bundle, freeze the plan, persist it), run it, show
it, abort it, and resume the one under way after a restart.

Rules kept here:
- One roll-out at a time: a second submit while one runs is a Conflict (409) naming the running one.
- At submit the bundle is read whole once: its manifest must parse and its payload must match the
  manifest's size and digest; with `rollout.trusted_keys_file` its signature must come from a trusted key.
  Anything else is a BadRequest (400) naming the problem, before any box is touched. The boxes verify again
  (they trust only their own keys).
- The plan is made from the fleet config and frozen: the versions boxes report now are what a rollback
  returns them to; boxes an operator has drained stay drained.
- Bundles are kept under `rollout.bundles_dir` as `<sha256>.tar`: those of the KEEP_BUNDLES newest roll-outs
  (a finished one may be looked at again; older ones only take disk), pruned after each submit and each end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from control.config import ControlConfig
from control.model import BoxHealth
from control.rollout.boxes import BoxFirmwareClient
from control.rollout.job import Rollout, from_json, to_json
from control.rollout.plan import FINAL, GateThresholds, Progress, make_plan
from control.rollout.runner import RolloutRunner
from control.store import StateStore
from fill.plan import Window
from oca.errors import BadRequest, Conflict, NotFound, OcaError
from oca.firmware.bundle import read_bundle
from oca.firmware.keys import load_trusted_keys
from oca.firmware.verify import Manifest, check_payload, check_signature, parse_manifest

log = logging.getLogger("oca.control.rollout")
T = TypeVar("T")
KEEP_BUNDLES = 5
Blocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Spec:
    waves: str = "1,10%,50%,100%"
    max_unavailable: str = "10%"
    bake: float = 60.0
    in_fill_window: bool = False


@dataclass
class Rollouts:
    config: ControlConfig
    store: StateStore
    blocking: Blocking
    clock: Callable[[], float]
    client: BoxFirmwareClient
    health: Callable[[], Mapping[str, BoxHealth]]
    drained: Callable[[], frozenset[str]]  # operator drains now
    set_drained: Callable[[str, bool, str], Awaitable[None]]  # box, drained, operator
    poll: Callable[[str], Awaitable[BoxHealth]]
    _runner: RolloutRunner | None = None
    _task: asyncio.Task[None] | None = None
    _pending: Rollout | None = None  # loaded at start, resumed by start()
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def bundles_dir(self) -> str:
        return self.config.bundles_dir()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Find the roll-out that was under way when the control plane stopped."""
        for raw in await self.blocking(self.store.rollouts, 20):
            try:
                rollout = from_json(raw)
            except ValueError as exc:
                log.error("%s: not resumed", exc)
                continue
            if rollout.progress.state not in FINAL:
                self._pending = rollout
                log.warning("roll-out %s of %s was under way: resuming (%d of %d steps done)", rollout.id,
                            rollout.plan.version, len(rollout.progress.completed), len(rollout.plan.steps()))
                return

    def start(self) -> None:
        if self._pending is not None:
            self._launch(self._pending)
            self._pending = None

    async def stop(self) -> None:
        """Stop running (the progress is saved after each step; the step under way repeats at resume)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _launch(self, rollout: Rollout) -> None:
        operator = f"rollout {rollout.id}"

        async def save(r: Rollout) -> None:
            await self.blocking(lambda: self.store.save_rollout(r.id, to_json(r), state=r.progress.state,
                                                                time=r.updated))

        async def audit(subject: str, detail: Mapping[str, Any]) -> None:
            await self.blocking(lambda: self.store.add_audit(time=self.clock(), operator=rollout.operator,
                                                             action="rollout", subject=subject, detail=detail))

        self._runner = RolloutRunner(rollout, self.config.fleet.boxes, self.client,
                                     lambda box, drained: self.set_drained(box, drained, operator), self.poll,
                                     save, audit, clock=self.clock)
        self._task = asyncio.create_task(self._run(self._runner), name=f"roll-out {rollout.id}")

    async def _run(self, runner: RolloutRunner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or a store failure: the roll-out stays where it was, resumable at restart
            log.exception("roll-out %s stopped unexpectedly; it resumes at the next start", runner.rollout.id)
            return
        async with self._lock:  # never beside a submit, whose new bundle is not in the store yet
            await self._prune_bundles()

    async def _prune_bundles(self) -> None:
        """Delete bundles no recent roll-out names (with `_lock` held)."""
        kept = {os.path.realpath(str(raw.get("bundle", {}).get("path")))
                for raw in await self.blocking(self.store.rollouts, KEEP_BUNDLES)}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.bundles_dir):
                if entry.is_file() and entry.name.endswith(".tar") and os.path.realpath(entry.path) not in kept:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    # -- operator actions ------------------------------------------------------------------------------

    async def submit(self, bundle_path: str, spec: Spec, operator: str) -> Rollout:
        """Start a roll-out of the bundle at `bundle_path` (a file this call takes over)."""
        async with self._lock:
            running = self.running()
            if running is not None:
                raise Conflict(f"roll-out {running.id} of {running.plan.version} is {running.progress.state}: "
                               "wait for it or abort it first")
            manifest, sha256, size = await asyncio.to_thread(self._check_bundle, bundle_path)
            window = None
            if spec.in_fill_window:
                window = Window.parse(self.config.fill.window) if self.config.fill.window else None
                if window is None:
                    raise BadRequest("in_fill_window: the control plane has no fill.window (it is 'always')")
            health = self.health()
            try:
                plan = make_plan(self.config.fleet.boxes.values(), version=manifest.version, bundle=sha256,
                                 waves=spec.waves, max_unavailable=spec.max_unavailable, bake=spec.bake,
                                 from_versions={b: h.version for b, h in health.items() if h.version},
                                 window=window)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            os.makedirs(self.bundles_dir, exist_ok=True)
            kept = os.path.join(self.bundles_dir, f"{sha256}.tar")
            os.replace(bundle_path, kept)
            now = self.clock()
            r = self.config.rollout
            rollout = Rollout(f"{manifest.version}-{secrets.token_hex(3)}", plan, Progress(), kept, size, operator,
                              now, now, GateThresholds(r.max_error_rate, r.max_restarts), self.drained(),
                              {"waves": spec.waves, "max_unavailable": spec.max_unavailable, "bake": f"{spec.bake:g}s",
                               "in_fill_window": "yes" if spec.in_fill_window else "no"})
            await self.blocking(lambda: self.store.save_rollout(rollout.id, to_json(rollout), state="running",
                                                                time=now))
            await self.blocking(lambda: self.store.add_audit(
                time=now, operator=operator, action="rollout", subject=rollout.id,
                detail={"rollout": rollout.id, "version": manifest.version, "sha256": sha256, **rollout.spec,
                        "boxes": len(plan.boxes()), "waves_sizes": [sum(map(len, w)) for w in plan.waves]}))
            await self._prune_bundles()
            log.info("roll-out %s of %s submitted by %s: %d boxes in %d waves, %d at a time, bake %gs",
                     rollout.id, manifest.version, operator, len(plan.boxes()), len(plan.waves),
                     plan.max_unavailable, plan.bake)
            self._launch(rollout)
            return rollout

    def _check_bundle(self, path: str) -> tuple[Manifest, str, int]:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            size = fh.tell()
            fh.seek(0)
            try:
                unverified = read_bundle(fh, self.config.rollout.max_bundle_size)
                manifest = parse_manifest(unverified.manifest)
                check_payload(manifest, unverified)
                if self.config.rollout.trusted_keys_file is not None:
                    check_signature(unverified.manifest, unverified.signature,
                                    load_trusted_keys(self.config.rollout.trusted_keys_file))
            except OcaError as exc:
                raise BadRequest(f"bundle refused: {exc}") from None
        return manifest, digest.hexdigest(), size

    def running(self) -> Rollout | None:
        if self._runner is not None and self._task is not None and not self._task.done() \
                and self._runner.rollout.progress.state not in FINAL:  # not while it writes its last audit line
            return self._runner.rollout
        return self._pending

    async def get(self, rollout_id: str) -> Rollout:
        running = self.running()
        if running is not None and running.id == rollout_id:
            return running
        raw = await self.blocking(self.store.get_rollout, rollout_id)
        if raw is None:
            raise NotFound(f"no roll-out {rollout_id[:64]!r}")
        try:
            return from_json(raw)
        except ValueError as exc:
            raise OcaError(str(exc)) from None

    async def list(self, limit: int = 20) -> list[Rollout]:
        out = []
        running = self.running()
        for raw in await self.blocking(self.store.rollouts, limit):
            with contextlib.suppress(ValueError):
                rollout = from_json(raw)
                out.append(running if running is not None and running.id == rollout.id else rollout)
        return out

    async def abort(self, rollout_id: str, operator: str) -> Rollout:
        rollout = await self.get(rollout_id)
        if rollout.progress.state in FINAL:
            raise Conflict(f"roll-out {rollout.id} is already {rollout.progress.state}")
        if self._runner is None or self._runner.rollout.id != rollout.id:
            raise Conflict(f"roll-out {rollout.id} is not running here (resumed at the next start)")
        self._runner.abort(f"by {operator}")
        await self.blocking(lambda: self.store.add_audit(time=self.clock(), operator=operator, action="rollout",
                                                         subject=rollout.id, detail={"rollout": rollout.id,
                                                                                     "abort": True}))
        return self._runner.rollout
