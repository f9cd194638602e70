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
  Each is also kept in the state store, so whichever replica leads can upload it.
- One leader: a roll-out is run only by the replica holding the `rollouts` lease (StateStore.take_lease,
  `replica.lease` long, renewed every third of it). Any replica takes a submit or an abort (through the
  store); the leader starts or resumes the unfinished roll-out at its next renewal, and carries out an abort
  between steps. A leader that cannot renew stops running before its lease ends, and every step's progress
  is saved only while the lease is still ours, so two replicas never drive the same roll-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from control.config import ControlConfig
from control.model import BoxHealth
from control.rollout.boxes import BoxFirmwareClient
from control.rollout.job import Rollout, from_json, to_json
from control.rollout.plan import FINAL, GateThresholds, Progress, make_plan
from control.rollout.runner import RolloutRunner
from control.store import StateStore
from oca.errors import BadRequest, Conflict, NotFound, OcaError
from oca.firmware.bundle import read_bundle
from oca.firmware.keys import load_trusted_keys
from oca.firmware.verify import Manifest, check_payload, check_signature, parse_manifest
from oca.wire.window import Window

log = logging.getLogger("oca.control.rollout")
LEASE = "rollouts"  # the lease whose holder runs roll-outs (and their bundle pruning)
STOP_GRACE = 5.0  # seconds a stopping replica gives its runner to reach a step boundary before cutting it
T = TypeVar("T")
KEEP_BUNDLES = 5
Blocking = Callable[..., Awaitable[Any]]


class LeaseLost(OcaError):
    """This replica no longer holds the roll-out lease: another one runs the roll-out now."""


def _read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _write_file(path: str, data: bytes) -> None:
    tmp = f"{path}.part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


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
    replica: str = "control"  # this replica's id: the lease's holder
    lease: float = 10.0  # seconds
    leader: bool = False
    _held_until: float = 0.0  # our lease's end as we last renewed it (clock time)
    _runner: RolloutRunner | None = None
    _task: asyncio.Task[None] | None = None
    _lead_task: asyncio.Task[None] | None = None
    _pending: Rollout | None = None  # the unfinished roll-out in the store (whoever runs it)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _broken: set[str] = field(default_factory=set)  # roll-outs whose runner failed here: left for a restart

    @property
    def bundles_dir(self) -> str:
        return self.config.bundles_dir()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Find the roll-out that was under way when the control plane stopped (the leader resumes it)."""
        self._pending = await self._unfinished()
        if self._pending is not None:
            log.warning("roll-out %s of %s was under way: resuming under the roll-out lease (%d of %d steps done)",
                        self._pending.id, self._pending.plan.version, len(self._pending.progress.completed),
                        len(self._pending.plan.steps()))

    async def _unfinished(self) -> Rollout | None:
        for raw in await self.blocking(self.store.rollouts, 20):
            try:
                rollout = from_json(raw)
            except ValueError as exc:
                log.error("%s: not resumed", exc)
                continue
            if rollout.progress.state not in FINAL:
                return rollout
        return None

    def start(self) -> None:
        self._lead_task = asyncio.create_task(self._lead(), name="roll-out lease")

    async def stop(self) -> None:
        """Stop running (the progress is saved after each step; the step under way repeats at resume) and give
        the lease up, so another replica resumes at once rather than at its expiry."""
        if self._lead_task is not None:
            self._lead_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lead_task
            self._lead_task = None
        await self._stop_runner()
        if self.leader:
            self.leader = False
            with contextlib.suppress(OcaError):
                await self.blocking(self.store.release_lease, LEASE, self.replica)

    async def _stop_runner(self) -> None:
        """Stop the runner at its next step boundary (its progress saved), or cut it after a few seconds."""
        if self._runner is not None and self._task is not None and not self._task.done():
            self._runner.stop()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the lease -------------------------------------------------------------------------------------

    async def _lead(self) -> None:
        while True:
            try:
                await self.lead_once()
            except Exception:  # keep leading (or trying to) whatever one round does
                log.exception("roll-out lease round failed")
            await asyncio.sleep(self.lease / 3)

    async def lead_once(self) -> None:
        """Take or renew the lease; as the leader, start or resume the unfinished roll-out and pass on an
        abort asked of another replica; having lost it (or unable to renew in time), stop running."""
        now = self.clock()
        try:
            held = await self.blocking(lambda: self.store.take_lease(LEASE, self.replica, now=now, ttl=self.lease))
        except OcaError as exc:
            held = False
            if self.leader and self.clock() < self._held_until - self.lease / 3:
                log.warning("roll-out lease not renewed (%s): still ours for %.1fs", exc,
                            self._held_until - self.clock())
                return
        if held:
            self._held_until = now + self.lease
            if not self.leader:
                log.info("replica %s now leads roll-outs", self.replica)
            self.leader = True
        elif self.leader:
            log.warning("replica %s no longer holds the roll-out lease: stopping its roll-out", self.replica)
            self.leader = False
            await self._stop_runner()
        with contextlib.suppress(OcaError):  # what every replica shows; the store may be away
            self._pending = await self._unfinished()
        if not self.leader or self._pending is None:
            return
        running = self._running_here()
        alive = self._task is not None and not self._task.done()  # (it may be writing a finished one's audit)
        if not alive:
            if self._pending.id not in self._broken:
                await self._launch_here(self._pending)
        elif self._runner is not None and running is not None:
            asked = await self.blocking(self.store.abort_request, running.id)
            if asked is not None:
                self._runner.abort(f"by {asked}")

    async def _launch_here(self, rollout: Rollout) -> None:
        """Run `rollout` on this replica, with its bundle from the store if another replica took the submit."""
        path = os.path.join(self.bundles_dir, f"{rollout.plan.bundle}.tar")
        if not os.path.isfile(path):
            data: bytes | None = await self.blocking(self.store.get_bundle, rollout.plan.bundle)
            if data is None:
                log.error("roll-out %s: its bundle %s is in neither %s nor the state store: not resumed",
                          rollout.id, rollout.plan.bundle, self.bundles_dir)
                return
            os.makedirs(self.bundles_dir, exist_ok=True)
            await asyncio.to_thread(_write_file, path, data)
        log.warning("roll-out %s of %s: running it here (%d of %d steps done)", rollout.id, rollout.plan.version,
                    len(rollout.progress.completed), len(rollout.plan.steps()))
        self._launch(dataclasses.replace(rollout, bundle_path=path))

    def _launch(self, rollout: Rollout) -> None:
        operator = f"rollout {rollout.id}"

        async def save(r: Rollout) -> None:
            # progress is ours to save only while the lease is: a leader that lost it stops here
            now = self.clock()
            if not await self.blocking(lambda: self.store.take_lease(LEASE, self.replica, now=now, ttl=self.lease)):
                raise LeaseLost(f"replica {self.replica} lost the roll-out lease")
            self._held_until = now + self.lease
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
        except LeaseLost as exc:
            log.warning("roll-out %s stopped: %s (the leader resumes it)", runner.rollout.id, exc)
            return
        except Exception:  # a bug or a store failure: the roll-out stays where it was, resumable at restart
            log.exception("roll-out %s stopped unexpectedly; it resumes at the next start", runner.rollout.id)
            self._broken.add(runner.rollout.id)
            return
        if runner.stopping and runner.rollout.progress.state not in FINAL:
            log.info("roll-out %s stopped between two steps; it resumes under the lease", runner.rollout.id)
            return
        if self._pending is not None and self._pending.id == runner.rollout.id:
            self._pending = None
        async with self._lock:  # never beside a submit, whose new bundle is not in the store yet
            await self._prune_bundles()

    async def _prune_bundles(self) -> None:
        """Delete bundles no recent roll-out names (with `_lock` held), here and in the store."""
        recent = await self.blocking(self.store.rollouts, KEEP_BUNDLES)
        kept = {os.path.realpath(str(raw.get("bundle", {}).get("path"))) for raw in recent}
        digests = {str(raw.get("bundle", {}).get("sha256")) for raw in recent}
        kept |= {os.path.realpath(os.path.join(self.bundles_dir, f"{digest}.tar")) for digest in digests}
        await self.blocking(self.store.prune_bundles, digests)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.bundles_dir):
                if entry.is_file() and entry.name.endswith(".tar") and os.path.realpath(entry.path) not in kept:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    # -- operator actions ------------------------------------------------------------------------------

    async def submit(self, bundle_path: str, spec: Spec, operator: str) -> Rollout:
        """Start a roll-out of the bundle at `bundle_path` (a file this call takes over)."""
        async with self._lock:
            running = self._running_here() or await self._unfinished()  # run here or by another replica
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
            versions = {b: h.version for b, h in health.items() if h.version}
            skipped = _preflight(manifest, versions)
            if skipped and set(skipped) >= set(self.config.fleet.boxes):
                raise BadRequest(f"every box already runs {manifest.version}: nothing to roll out")
            try:
                plan = make_plan([b for b in self.config.fleet.boxes.values() if b.id not in skipped],
                                 version=manifest.version, bundle=sha256, waves=spec.waves,
                                 max_unavailable=spec.max_unavailable, bake=spec.bake, from_versions=versions,
                                 window=window)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            os.makedirs(self.bundles_dir, exist_ok=True)
            kept = os.path.join(self.bundles_dir, f"{sha256}.tar")
            os.replace(bundle_path, kept)
            data = await asyncio.to_thread(_read_file, kept)
            await self.blocking(self.store.put_bundle, sha256, data)  # for whichever replica leads
            now = self.clock()
            r = self.config.rollout
            rollout = Rollout(f"{manifest.version}-{secrets.token_hex(3)}", plan, Progress(), kept, size, operator,
                              now, now, GateThresholds(r.max_error_rate, r.max_restarts), self.drained(),
                              {"waves": spec.waves, "max_unavailable": spec.max_unavailable, "bake": f"{spec.bake:g}s",
                               "in_fill_window": "yes" if spec.in_fill_window else "no",
                               **({"skipped": ",".join(skipped)} if skipped else {})})
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
            self._pending = rollout
            if self.leader:
                self._launch(rollout)
            else:  # the leader starts it at its next renewal (within a third of the lease)
                log.info("roll-out %s is left to the leader (this replica, %s, does not hold the lease)",
                         rollout.id, self.replica)
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

    def _running_here(self) -> Rollout | None:
        if self._runner is not None and self._task is not None and not self._task.done() \
                and self._runner.rollout.progress.state not in FINAL:  # not while it writes its last audit line
            return self._runner.rollout
        return None

    def running(self) -> Rollout | None:
        """The roll-out under way: run here, else as the store last showed it (run by the leader)."""
        return self._running_here() or self._pending

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
        await self.blocking(self.store.request_abort, rollout.id, operator, self.clock())
        await self.blocking(lambda: self.store.add_audit(time=self.clock(), operator=operator, action="rollout",
                                                         subject=rollout.id, detail={"rollout": rollout.id,
                                                                                     "abort": True}))
        if self._runner is not None and self._runner.rollout.id == rollout.id:
            self._runner.abort(f"by {operator}")
            return self._runner.rollout
        return rollout  # the leader carries it out at its next renewal, between two steps


def _preflight(manifest: Manifest, versions: Mapping[str, str]) -> list[str]:
    """The boxes already at the bundle's version (skipped, and said so in the roll-out's spec), or BadRequest
    naming the boxes a bundle older than their version would downgrade (unless it is a signed rollback)."""
    target = Version(manifest.version)
    newer = sorted(b for b, v in versions.items() if _newer(v, target))
    if newer and not manifest.rollback:
        raise BadRequest(f"bundle {manifest.version} is older than the version of {', '.join(newer)} "
                         f"({', '.join(sorted({versions[b] for b in newer}))}): build a newer one, or a signed "
                         "rollback (oca firmware build --rollback)")
    return sorted(b for b, v in versions.items() if _same(v, target))


def _newer(version: str, than: Version) -> bool:
    try:
        return Version(version) > than
    except InvalidVersion:
        return False


def _same(version: str, target: Version) -> bool:
    try:
        return Version(version) == target
    except InvalidVersion:
        return False
