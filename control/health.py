"""Polls every box's admin `/status` on a schedule and turns the answers into model.BoxHealth, with hysteresis.

Rules kept here:
- Every box is polled once per `interval`, each poll bounded by `timeout`: a box that hangs, refuses or
  answers junk costs only its own poll, never another box's.
- The polls of a round are spread evenly over the first `interval - timeout` of it (box i of n starts at
  i/n of that span, in fleet order), so even the last poll's timeout ends inside the interval and a fleet
  of 10^4 boxes is a steady trickle, not a burst; at most `concurrency` polls are in flight at once. One
  scheduler task launches them (not a task per box). A box whose previous poll is still running when its
  turn comes is skipped for that round (counted in `skipped`), so a hung box never piles up polls.
- Before its first round the schedule opens a kept connection to every box that has none yet (`warm`:
  `concurrency` at a time, each bounded by `timeout`, all by `WARM_ROUNDS` intervals): the first poll at
  start reaches only part of a large fleet within its bound, and a first round that opened the rest's
  connections inside its span (13,700 handshakes at 20,000 boxes, 150-180 µs of CPU each on loopback, in
  the caller's time) was the slowest round of every run. A box that cannot be reached is left to its poll.
- A round is done when the last poll launched in it ends; `last_round` is how long that took from the
  round's start (over `interval` means the fleet does not fit the interval: logged as a warning).
  `unpolled` counts the boxes not polled since start.
- Polls use control.status_client (one kept connection per box, llhttp parsing), not aiohttp: at 20,000
  boxes aiohttp's client alone cost more than a core.
- Hysteresis: a healthy box goes down after `down_after` (k) failed polls in a row and an unhealthy one comes
  back after `up_after` (m) good polls in a row. The first poll after start decides directly.
- A poll is good when the answer is a JSON object for this box id (`box` matches) with at least one tier
  that is not failed. A box coming back up must also have applied the invalidation log (its
  `invalidation_seq`, when it reports one, is at least `required_seq()`), so it never serves stale objects.
- Load is egress / egress capacity: `egress_bps` when the box reports it, else the rate of `bytes_out`
  between two polls. Draining is the box's own flag or an operator drain held by the control plane.
- `stop()` ends the scheduler and every poll in flight, even one finishing as it is cancelled (each poll is
  bounded with `asyncio.timeout`, which never swallows a cancellation).
- Listeners (`listeners`) run inside the poll, so they must be quick: one with I/O to do (the inventory
  tracker) queues it and returns, and registers in `followups` how to wait for it. `poll_once` (start-up,
  tests, an operator's poll) waits for those after its round, so the inventories a first poll learns of
  are in by the time it returns; a round's duration never includes them, and the scheduled rounds never
  wait for them.
- `last_healthy_poll` is when the latest good poll finished (the injected clock): steering uses it to know
  whether a box has passed a fresh poll since a player left it.
- Every poll judged bad is counted, per box (`failed_polls`) and in all (`failed_polls` of the poller), whether
  or not it changed the box's state: a box that misses one poll in `down_after` is never marked down, and
  without the count nothing would show that it ever missed one (a flapping box, a box slow under a fill).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import msgspec

from control.model import Box, BoxHealth, Fleet
from control.status_client import StatusClient, Target, default_max_idle
from oca.wire.status import BoxReport, TierReport

log = logging.getLogger("oca.control.health")

Clock = Callable[[], float]
ROUNDS_KEPT = 64  # durations of the latest rounds kept for /v1/status
WARM_ROUNDS = 2  # the connection warm-up before the first round takes at most this many intervals
TICK = 0.005  # the scheduler wakes at most this often: boxes whose turn falls within one tick start together
StatusListener = Callable[[Box, "BoxStatus"], Awaitable[None]]
Followup = Callable[[], Awaitable[None]]


class BoxStatus(msgspec.Struct, frozen=True, gc=False):
    """The facts of one good poll of a box's /status (a Struct out of the collector's sight, as the report
    it comes from: see oca.wire.status)."""

    version: str | None
    draining: bool
    tiers: tuple[TierReport, ...]
    egress_bps: float | None
    bytes_out: int | None
    connections: int | None
    inventory_sequence: int | None
    invalidation_seq: int | None
    polled_at: float
    hit_bytes: int | None = None  # body bytes sent on cache hits (and misses), for the hit ratio by bytes
    miss_bytes: int | None = None

    @property
    def failed_tiers(self) -> tuple[str, ...]:
        return tuple(t.label for t in self.tiers if t.failed)


@dataclass
class _BoxState:
    healthy: bool | None = None  # None until the first poll
    streak: int = 0  # polls in a row that disagree with `healthy`
    status: BoxStatus | None = None
    load: float = 0.0
    error: str | None = None
    last_healthy_poll: float | None = None
    last_poll: float | None = None
    polls: int = 0
    failed: int = 0  # polls judged bad since start


@dataclass(slots=True)
class _Round:
    start: float  # loop time
    left: int = 0  # polls queued and not ended yet
    queued: bool = False  # every box of the round has been queued (or skipped)


@dataclass
class HealthPoller:
    fleet: Fleet
    clock: Clock = time.time
    interval: float = 2.0
    timeout: float = 1.0
    down_after: int = 2
    up_after: int = 2
    token: str | None = None
    required_seq: Callable[[], int] = lambda: 0
    listeners: list[StatusListener] = field(default_factory=list)
    followups: list[Followup] = field(default_factory=list)  # what poll_once waits for after its round
    drained: frozenset[str] = frozenset()  # operator drains, kept in step by the service
    concurrency: int = 256  # polls in flight at once
    client: StatusClient = field(default_factory=lambda: StatusClient(default_max_idle()))
    rounds: int = 0  # rounds done (the first, `poll_once`, included)
    last_round: float | None = None  # seconds the latest round took, start to its last poll's end
    recent_rounds: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=ROUNDS_KEPT))
    skipped: int = 0  # polls not started because the box's previous one was still running
    polls: int = 0  # polls done since start
    failed_polls: int = 0  # polls judged bad since start (no answer, a bad answer, or a box not fit to serve)
    unpolled: int = field(init=False)  # boxes not polled since start
    _states: dict[str, _BoxState] = field(default_factory=dict)
    _health: dict[str, BoxHealth] = field(default_factory=dict)
    _view: Mapping[str, BoxHealth] = field(init=False, repr=False)  # read-only proxy of _health
    _targets: dict[str, Target] = field(default_factory=dict)
    _busy: set[str] = field(default_factory=set)  # boxes queued or being polled by the schedule
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._view = types.MappingProxyType(self._health)
        for box_id, box in self.fleet.boxes.items():
            self._states[box_id] = _BoxState()
            self._health[box_id] = BoxHealth(box_id, healthy=False, error="not polled yet")
            self._targets[box_id] = Target.of(box.admin_url, "/status", self.token)
        self.unpolled = len(self.fleet.boxes)

    # -- what the rest of the control plane reads ------------------------------------------------------

    def health(self) -> dict[str, BoxHealth]:
        """Box id -> its latest BoxHealth (a fresh dict each call; the values are frozen)."""
        return dict(self._health)

    def health_view(self) -> Mapping[str, BoxHealth]:
        """The same, read-only and live (no copy: at 10,000 boxes a copy per decision halved the playlist
        rate). For synchronous readers only: it changes under anyone holding it across an await."""
        return self._view

    def status(self, box_id: str) -> BoxStatus | None:
        state = self._states.get(box_id)
        return state.status if state else None

    def last_poll(self, box_id: str) -> float | None:
        state = self._states.get(box_id)
        return state.last_poll if state else None

    def poll_counts(self, box_id: str) -> tuple[int, int]:
        """(polls, polls judged bad) of the box since start."""
        state = self._states.get(box_id)
        return (state.polls, state.failed) if state else (0, 0)

    def box_draining(self, box_id: str, draining: bool) -> None:
        """The box acknowledged a drain or an undrain: take its new flag now rather than at its next poll, so
        an undrained box counts as serving again at once (a roll-out drains the next box right after)."""
        state = self._states[box_id]
        if state.status is not None:
            state.status = msgspec.structs.replace(state.status, draining=draining)
        self._publish(box_id)

    def set_drained(self, drained: frozenset[str]) -> None:
        self.drained = drained
        for box_id in self.fleet.boxes:
            self._publish(box_id)

    # -- polling ---------------------------------------------------------------------------------------

    def start(self) -> None:
        queue: asyncio.Queue[tuple[Box, _Round]] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._schedule(queue), name="health schedule")]
        self._tasks += [asyncio.create_task(self._worker(queue), name=f"health poller {i}")
                        for i in range(min(self.concurrency, len(self.fleet.boxes)))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._busy.clear()
        self.client.close()

    def offsets(self) -> list[float]:
        """When each box's poll starts within a round, in seconds from the round's start (fleet order)."""
        n = len(self.fleet.boxes)
        span = max(0.0, self.interval - self.timeout)
        return [span * i / n for i in range(n)]

    async def warm(self) -> int:
        """Open a kept connection to every box that has none, as many as the client has room for, in fleet
        order (see the module rules); how many were opened."""
        boxes = iter(list(self.fleet.boxes.values()))
        opened = 0

        async def worker() -> None:
            nonlocal opened
            for box in boxes:
                if self.client.idle >= self.client.max_idle:
                    return  # no room: the boxes left reconnect at each poll whatever we do
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        kept = await self.client.connect(self._targets[box.id])
                    opened += kept  # after the await: `opened += await ...` reads `opened` before it

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WARM_ROUNDS * self.interval):
                await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(self.fleet.boxes)))))
        return opened

    async def _schedule(self, queue: asyncio.Queue[tuple[Box, _Round]]) -> None:
        loop = asyncio.get_running_loop()
        await self.warm()
        boxes = list(self.fleet.boxes.values())
        offsets = self.offsets()
        start = loop.time()
        number = 0
        while boxes:
            current = _Round(start + number * self.interval)
            for box, offset in zip(boxes, offsets, strict=True):
                wait = current.start + offset - loop.time()
                if wait > TICK:
                    await asyncio.sleep(wait)
                if box.id in self._busy:
                    self.skipped += 1
                    continue
                self._busy.add(box.id)
                current.left += 1
                queue.put_nowait((box, current))
            current.queued = True
            if current.left == 0:
                self._round_ended(loop.time() - current.start)
            number += 1
            behind = loop.time() - (start + number * self.interval)
            if behind > 0:  # queueing alone overran the interval: go on from the latest tick already passed
                number += int(behind / self.interval)
            await asyncio.sleep(max(0.0, start + number * self.interval - loop.time()))

    async def _worker(self, queue: asyncio.Queue[tuple[Box, _Round]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            box, of = await queue.get()
            try:
                await self._guarded(box)
            finally:
                self._busy.discard(box.id)
                of.left -= 1
                if of.left == 0 and of.queued:
                    self._round_ended(loop.time() - of.start)

    async def _guarded(self, box: Box) -> None:
        try:
            await self.poll_box(box)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a listener must not stop the other polls
            log.exception("health poll of %s failed unexpectedly", box.id)

    def _round_ended(self, seconds: float) -> None:
        self.rounds += 1
        late = self.last_round is not None and self.last_round > self.interval
        self.last_round = seconds
        self.recent_rounds.append(seconds)
        if seconds > self.interval and not late:  # once per run of late rounds, not every round
            log.warning("a health round of %d boxes took %.2fs, more than health.interval %gs: polls run late "
                        "(raise health.concurrency or health.interval, or give the control plane more CPU)",
                        len(self.fleet.boxes), seconds, self.interval)

    async def poll_once(self) -> None:
        """Poll every box once, `concurrency` at a time, as fast as they answer (the first round after
        start, and tests), then wait for the work the listeners queued (`followups`). Cancelling it cancels
        the polls in flight, not that work."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        boxes = iter(list(self.fleet.boxes.values()))

        async def worker() -> None:
            for box in boxes:
                await self._guarded(box)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(self.fleet.boxes)))))
        self._round_ended(loop.time() - started)
        for followup in self.followups:
            await followup()

    async def poll_box(self, box: Box) -> None:
        try:
            async with asyncio.timeout(self.timeout):  # not wait_for: on 3.11 it drops a cancel that comes
                status = await self._fetch(box)      # as the fetch ends, and stop() then waits for ever
            problem = self._problem(box, status)
        except TimeoutError:
            status, problem = None, f"no answer within {self.timeout:g}s"
        except OSError as exc:
            status, problem = None, f"cannot reach {box.admin_url}: {exc.__class__.__name__}: {exc}"
        except ValueError as exc:
            status, problem = None, str(exc)
        state = self._states[box.id]
        now = self.clock()
        self.polls += 1
        if state.polls == 0:
            self.unpolled -= 1
        state.last_poll, state.polls = now, state.polls + 1
        if status is not None:
            state.load = self._load(box, state.status, status)
            state.status = status
            for listener in self.listeners:
                await listener(box, status)
        self._judge(box.id, state, problem, now)

    async def _fetch(self, box: Box) -> BoxStatus:
        code, body = await self.client.get(self._targets[box.id])
        if code != 200:
            raise ValueError(f"/status answered {code}")
        return status_of(BoxReport.decode(body, box.id), self.clock())

    def _problem(self, box: Box, status: BoxStatus) -> str | None:
        if status.tiers and len(status.failed_tiers) == len(status.tiers):
            return "every tier has failed"
        state = self._states[box.id]
        required = self.required_seq()
        if state.healthy is not True and status.invalidation_seq is not None and status.invalidation_seq < required:
            return f"invalidations not applied yet ({status.invalidation_seq} < {required})"
        return None

    def _load(self, box: Box, previous: BoxStatus | None, status: BoxStatus) -> float:
        if status.egress_bps is not None:
            return status.egress_bps / box.egress_capacity
        if previous is None or previous.bytes_out is None or status.bytes_out is None:
            return 0.0
        elapsed = status.polled_at - previous.polled_at
        sent = status.bytes_out - previous.bytes_out
        return (sent * 8 / elapsed) / box.egress_capacity if elapsed > 0 and sent >= 0 else 0.0

    def _judge(self, box_id: str, state: _BoxState, problem: str | None, now: float) -> None:
        good = problem is None
        state.error = problem
        if good:
            state.last_healthy_poll = now
        else:
            state.failed += 1
            self.failed_polls += 1
        if state.healthy is None:
            state.healthy, state.streak = good, 0
        elif good == state.healthy:
            state.streak = 0
        else:
            state.streak += 1
            if state.streak >= (self.up_after if good else self.down_after):
                state.healthy, state.streak = good, 0
                log.warning("box %s is now %s%s", box_id, "up" if good else "down", f": {problem}" if problem else "")
        self._publish(box_id)

    def _publish(self, box_id: str) -> None:
        state = self._states[box_id]
        status = state.status
        self._health[box_id] = BoxHealth(
            box_id, healthy=bool(state.healthy),
            draining=box_id in self.drained or bool(status and status.draining),
            load=state.load, version=status.version if status else None,
            failed_tiers=status.failed_tiers if status else (),
            last_healthy_poll=state.last_healthy_poll, error=state.error)


def status_of(report: BoxReport, now: float) -> BoxStatus:
    """The BoxStatus of a box's report, polled at `now`."""
    return BoxStatus(
        version=report.version, draining=report.draining, tiers=report.tiers, egress_bps=report.egress_bps,
        bytes_out=report.bytes_out, connections=report.connections, inventory_sequence=report.inventory_sequence,
        invalidation_seq=report.invalidation_seq, polled_at=now, hit_bytes=report.hit_bytes,
        miss_bytes=report.miss_bytes)
