"""Invalidations: append to the durable log, push to healthy boxes at once, track what each box has applied.

Rules kept here:
- An invalidation is acknowledged only once it is in the store (sequence-numbered, with operator, time and
  reason: the audit trail). A client-supplied id makes a resubmission return the first entry, unpushed.
- Scope `key` takes a content key, `prefix` a key prefix (a trailing `/` allowed), `title` a title id; anything
  else is BadRequest naming the value.
- Push: `POST <admin>/invalidations {"invalidations": [entries after the box's applied seq]}` to every healthy
  box right after an append, and to any healthy box still behind every `retry_interval` (the backstop beside
  the boxes' own pulls). The answer's `applied_seq`, and `invalidation_seq` in each health poll, move the
  box's applied sequence forward (in memory and in the store); it never moves back.
- `wait(seq)` returns when every healthy box has applied `seq` or at the timeout, with the boxes still pending.
- Push failures are logged and retried; they never fail the operator's request.
- At most `push_concurrency` pushes talk to boxes at once (`invalidation.push_concurrency`): an append
  pushes to every healthy box, and one connection per box all at once was 20,000 sockets at 20,000 boxes,
  past the open-file reserve the health poller leaves (control/status_client.py). A push waiting for its
  turn is not timed yet: `push_timeout` bounds its exchange with the box only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from control.catalog.codec import check_title_id
from control.health import BoxStatus
from control.model import Box, BoxHealth, Fleet
from control.store import SCOPES, Invalidation, StateStore
from oca.errors import BadRequest, NotFound
from oca.httpapi import bearer, loads
from oca.keys import is_valid_key
from oca.wire.invalidation import Applied, InvalidationBatch

log = logging.getLogger("oca.control.invalidation")

T = TypeVar("T")
Blocking = Callable[..., Awaitable[Any]]
_KEEP_TIMES = 1000  # recent sequences whose per-box apply times are kept for the status view
_PUSH_BATCH = 1000


def check_scope(scope: object, value: object) -> tuple[str, str]:
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not isinstance(value, str) or not value:
        raise BadRequest(f"value must be a non-empty string, got {value!r}")
    if scope == "title":
        check_title_id(value)
    elif not is_valid_key(value.removesuffix("/") if scope == "prefix" else value):
        raise BadRequest(f"not a valid content {'prefix' if scope == 'prefix' else 'key'}: {value[:200]!r}")
    return str(scope), value


@dataclass
class Invalidator:
    store: StateStore
    fleet: Fleet
    session: aiohttp.ClientSession
    health: Callable[[], Mapping[str, BoxHealth]]
    clock: Callable[[], float]
    blocking: Blocking  # runs a store call off the event loop: (fn, *args) -> awaitable result
    push_timeout: float = 2.0
    retry_interval: float = 1.0
    token: str | None = None
    push_concurrency: int = 256
    last_seq: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    # called with (box id, seconds from append to applied) once per box for the invalidations this replica took
    on_applied: Callable[[str, float], None] | None = None
    _times: OrderedDict[int, dict[str, float]] = field(default_factory=OrderedDict)
    _appended: dict[int, float] = field(default_factory=dict)  # seq -> its append time, for the seqs in _times
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _pushing: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _again: set[str] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.push_concurrency)

    async def load(self) -> None:
        self.last_seq = await self.blocking(self.store.last_invalidation_seq)
        stored: dict[str, int] = await self.blocking(self.store.applied_seqs)
        self.applied = {box: stored.get(box, 0) for box in self.fleet.boxes}

    def start(self) -> None:
        self._task = asyncio.create_task(self._backstop(), name="invalidation backstop")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pushing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the operator's side ---------------------------------------------------------------------------

    async def submit(self, scope: object, value: object, *, soft: bool, reason: str, operator: str,
                     client_id: str | None) -> tuple[Invalidation, bool]:
        scope, value = check_scope(scope, value)
        entry, created = await self.blocking(
            lambda: self.store.append_invalidation(scope, value, soft=soft, reason=reason, operator=operator,
                                                   time=self.clock(), client_id=client_id))
        if created:
            self.last_seq = max(self.last_seq, entry.seq)
            self._times[entry.seq] = {}
            self._appended[entry.seq] = entry.time
            while len(self._times) > _KEEP_TIMES:
                self._appended.pop(self._times.popitem(last=False)[0], None)
            self.push_all()
        return entry, created

    async def since(self, seq: int, limit: int = _PUSH_BATCH) -> list[Invalidation]:
        entries: list[Invalidation] = await self.blocking(self.store.invalidations_since, seq, limit)
        return entries

    async def get(self, seq: int) -> Invalidation:
        entry: Invalidation | None = await self.blocking(self.store.get_invalidation, seq)
        if entry is None:
            raise NotFound(f"no invalidation with seq {seq} (last is {self.last_seq})")
        return entry

    def progress(self, entry: Invalidation) -> dict[str, Any]:
        """Per box: applied or pending, with its health; and how long propagation took so far."""
        health = self.health()
        times = self._times.get(entry.seq, {})
        boxes = {}
        for box_id in self.fleet.boxes:
            seq = self.applied.get(box_id, 0)
            h = health.get(box_id)
            boxes[box_id] = {"applied": seq >= entry.seq, "applied_seq": seq, "applied_at": times.get(box_id),
                             "healthy": bool(h and h.healthy)}
        pending = sorted(b for b, v in boxes.items() if not v["applied"])
        done = [t for b, t in times.items() if boxes.get(b, {}).get("applied")]
        complete = not [b for b in pending if boxes[b]["healthy"]]
        return {"invalidation": entry.to_json(), "boxes": boxes, "pending": pending,
                "pending_healthy": [b for b in pending if boxes[b]["healthy"]], "complete": complete,
                "propagation_seconds": round(max(done) - entry.time, 3) if done and complete else None}

    async def wait(self, entry: Invalidation, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            view = self.progress(entry)
            remaining = deadline - loop.time()
            if view["complete"] or remaining <= 0:
                return view
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.5))

    # -- the boxes' side -------------------------------------------------------------------------------

    async def on_status(self, box: Box, status: BoxStatus) -> None:
        """A health-poll listener: learn the box's applied seq; push when it is behind."""
        if status.invalidation_seq is not None:
            if status.invalidation_seq < self.applied.get(box.id, 0):  # the box lost its state: resend
                self.applied[box.id] = status.invalidation_seq
            await self._record(box.id, status.invalidation_seq)
        if self.applied.get(box.id, 0) < self.last_seq:
            self.push(box)

    def push_all(self) -> None:
        health = self.health()
        for box in self.fleet.boxes.values():
            h = health.get(box.id)
            if h is not None and h.healthy and self.applied.get(box.id, 0) < self.last_seq:
                self.push(box)

    def push(self, box: Box) -> None:
        """Start a push to `box` unless one is running (then run one more after it)."""
        running = self._pushing.get(box.id)
        if running is not None and not running.done():
            self._again.add(box.id)
            return
        self._pushing[box.id] = asyncio.create_task(self._push(box), name=f"invalidate {box.id}")

    async def _push(self, box: Box) -> None:
        while True:
            self._again.discard(box.id)
            try:
                async with self._slots:
                    await asyncio.wait_for(self._push_once(box), self.push_timeout)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.debug("push of invalidations to %s failed: %s", box.id, exc)
                return
            if box.id not in self._again:
                return

    async def _push_once(self, box: Box) -> None:
        entries = await self.since(self.applied.get(box.id, 0))
        if not entries:
            return
        headers = bearer(self.token)
        body = InvalidationBatch(tuple(entries)).to_json()
        async with self.session.post(f"{box.admin_url}/invalidations", json=body, headers=headers) as resp:
            if resp.status != 200:
                raise ValueError(f"{box.id} answered {resp.status} to POST /invalidations")
            answer = await resp.json(content_type=None, loads=loads)
        await self._record(box.id, Applied.from_json(answer, f"{box.id}'s POST /invalidations answer").applied_seq)

    async def _record(self, box_id: str, seq: int) -> None:
        if box_id not in self.fleet.boxes or seq <= self.applied.get(box_id, 0):
            return
        self.applied[box_id] = seq
        now = self.clock()
        for known, times in self._times.items():
            if known <= seq and box_id not in times:
                times[box_id] = now
                if self.on_applied is not None:
                    self.on_applied(box_id, now - self._appended.get(known, now))
        self._changed.set()
        self._changed = asyncio.Event()
        await self.blocking(self.store.record_applied, box_id, seq, now)

    async def _backstop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval)
            try:
                self.push_all()
            except Exception:  # keep the backstop alive whatever one round does
                log.exception("invalidation backstop round failed")
