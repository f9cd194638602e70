"""Which titles each box holds, learnt incrementally from the boxes' admin `/inventory`, as model.Inventory.

Rules kept here:
- After a good health poll whose `inventory_sequence` differs from the last one seen, the box is asked for
  `GET /inventory/titles?since=<last>` → {"sequence", "full", "titles": {id: {"objects", "bytes"}},
  "removed": [id, ...]}; `full: true` replaces what we knew, otherwise the answer is a delta.
- A box without that route (404) is asked for its object listing (`GET /inventory` → {"objects": [{"key"}]}),
  read as a full listing with titles taken from keys `titles/<id>/...`. Both answers are decoded by the wire
  model (oca/wire/inventory.py: TitleChanges, Listing); one that does not decode is a failed refresh.
- A title is "live" on a box when the box holds at least as many of its objects as the catalog has files
  and, when the catalog's sizes are known (`title_sizes`), at least as many bytes as the title has (slices of
  a large file count as objects, so the count alone could call a title with a partly fetched file live).
- A failed refresh keeps what we knew; it is retried at the next poll. Reads never block on I/O.
- A poll never waits for an inventory: the poll listener (`on_status`) only queues the box, and at most
  `concurrency` refreshes run at once, in worker tasks that exist while there is work (so nothing has to
  start them) and end when the queue is empty. A box is queued or refreshed once at a time; a sequence that
  moves meanwhile is seen by a later poll. (Awaiting each box's first inventory inside its poll made the
  four rounds after start-up at 20,000 boxes take 2.0-5.9 s against a 2 s interval.) `settled()` waits
  until nothing is queued or running: the poller's `poll_once` (start-up, tests) waits for it.
- Fetches go through the poller's control.status_client: over the connection it keeps to the box, parsed by
  llhttp, each bounded by `timeout` (a cancel half-way closes that connection) and by `max_body` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from control.health import BoxStatus
from control.model import Box, Inventory
from control.status_client import StatusClient, Target
from oca.httpapi import loads
from oca.wire.inventory import Listing, TitleChanges

log = logging.getLogger("oca.control.inventory")

MAX_BODY = 256 << 20  # a full title listing is ~50 bytes a title; an old box's object listing far more


@dataclass
class _BoxTitles:
    sequence: int | None = None
    titles: dict[str, int] = field(default_factory=dict)  # title id -> objects held
    bytes: dict[str, int] = field(default_factory=dict)  # title id -> bytes held (when the box says)


@dataclass
class InventoryTracker:
    client: StatusClient  # the health poller's: its kept connections
    file_counts: Callable[[], Mapping[str, int]]  # title id -> catalogued files
    timeout: float = 5.0
    token: str | None = None
    _boxes: dict[str, _BoxTitles] = field(default_factory=dict)
    title_sizes: Callable[[], Mapping[str, int]] | None = None  # title id -> catalogued bytes
    concurrency: int = 32  # refreshes in flight at once
    max_body: int = MAX_BODY
    _snapshot: Inventory | None = None
    # box id -> (box, polled sequence), oldest first: an OrderedDict, whose popitem(last=False) is O(1) where
    # taking a plain dict's first key scans past every entry removed before it (20,000 at start-up)
    _queued: OrderedDict[str, tuple[Box, int | None]] = field(default_factory=OrderedDict)
    _running: set[str] = field(default_factory=set)  # box ids being refreshed
    _workers: set[asyncio.Task[None]] = field(default_factory=set)
    _active: int = 0  # workers still taking boxes from the queue (a finished task leaves the set later)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: bool = False

    def __post_init__(self) -> None:
        self._idle.set()

    def snapshot(self) -> Inventory:
        if self._snapshot is None:
            counts = self.file_counts()
            sizes = self.title_sizes() if self.title_sizes is not None else {}
            holding = {box: frozenset(t for t, n in s.titles.items() if n > 0) for box, s in self._boxes.items()}
            complete = {box: frozenset(t for t, n in s.titles.items()
                                       if n > 0 and n >= counts.get(t, 1 << 62)
                                       and (t not in sizes or t not in s.bytes or s.bytes[t] >= sizes[t]))
                        for box, s in self._boxes.items()}
            self._snapshot = Inventory(holding, complete)
        return self._snapshot

    def catalog_changed(self) -> None:
        self._snapshot = None

    def titles_of(self, box_id: str) -> dict[str, int]:
        state = self._boxes.get(box_id)
        return dict(state.titles) if state else {}

    def bytes_of(self, box_id: str) -> dict[str, int]:
        """Title id -> bytes the box holds of it (titles the box reported sizes for)."""
        state = self._boxes.get(box_id)
        return dict(state.bytes) if state else {}

    @property
    def pending(self) -> int:
        """Boxes whose refresh is queued or running."""
        return len(self._queued) + len(self._running)

    async def on_status(self, box: Box, status: BoxStatus) -> None:
        """A health-poll listener: queue a refresh of the box's titles when its inventory sequence moved
        (never waits for it: see the module rules)."""
        state = self._boxes.setdefault(box.id, _BoxTitles())
        if status.inventory_sequence is not None and status.inventory_sequence == state.sequence:
            return
        if self._stopped or box.id in self._queued or box.id in self._running:
            return
        self._queued[box.id] = (box, status.inventory_sequence)
        self._idle.clear()
        if self._active < self.concurrency:
            self._active += 1
            worker = asyncio.create_task(self._work(), name="inventory refresh")
            self._workers.add(worker)  # a reference until it ends: the loop keeps only a weak one
            worker.add_done_callback(self._workers.discard)

    async def settled(self) -> None:
        """Return once no refresh is queued or running."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Cancel the refreshes queued and running, and queue no more (what we knew is kept): the plane
        stops this before the poller, whose polls may still be ending."""
        self._stopped = True
        self._queued.clear()
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._running.clear()
        self._idle.set()

    async def _work(self) -> None:
        try:
            while self._queued:
                box_id, (box, polled) = self._queued.popitem(last=False)  # in the order queued
                self._running.add(box_id)
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._refresh(box, self._boxes.setdefault(box_id, _BoxTitles()), polled)
                except TimeoutError:
                    log.info("inventory of %s not refreshed: no answer within %gs", box_id, self.timeout)
                except (OSError, ValueError) as exc:
                    log.info("inventory of %s not refreshed: %s: %s", box_id, exc.__class__.__name__, exc)
                except Exception:  # a bug must not end the worker with boxes still queued
                    log.exception("inventory refresh of %s failed unexpectedly", box_id)
                finally:
                    self._running.discard(box_id)
        finally:
            # no await from the queue's last check to here, so a box queued meanwhile found this worker
            # still counted as taking boxes only while it really was
            self._active -= 1
            if self._active == 0 and not self._queued:
                self._idle.set()

    async def _get(self, box: Box, path: str) -> tuple[int, object]:
        code, body = await self.client.get(Target.of(box.admin_url, path, self.token), self.max_body)
        return code, loads(body) if code == 200 else None

    async def _refresh(self, box: Box, state: _BoxTitles, polled: int | None) -> None:
        since = state.sequence if state.sequence is not None else 0
        code, body = await self._get(box, f"/inventory/titles?since={since}")
        if code == 404:
            code, body = await self._get(box, "/inventory")
            if code != 200:
                raise ValueError(f"/inventory answered {code}")
        elif code != 200:
            raise ValueError(f"/inventory/titles answered {code}")
        if isinstance(body, dict) and "titles" in body:
            changes = TitleChanges.from_json(body, f"{box.id}'s /inventory/titles")
            sequence: object = changes.sequence
            titles = {t: h.objects for t, h in changes.titles.items()}
            sizes = {t: h.bytes for t, h in changes.titles.items()}
            if changes.full or state.sequence is None:
                state.titles, state.bytes = titles, sizes
            else:
                state.titles.update(titles)
                state.bytes.update(sizes)
            for gone in changes.removed:
                state.titles.pop(gone, None)
                state.bytes.pop(gone, None)
        elif isinstance(body, dict) and "objects" in body:
            sequence = body.get("sequence")
            counts: dict[str, int] = {}
            held: dict[str, int] = {}
            for obj in Listing.from_json(body, f"{box.id}'s /inventory").objects:
                parts = obj.key.split("/")
                if len(parts) >= 3 and parts[0] == "titles":
                    counts[parts[1]] = counts.get(parts[1], 0) + 1
                    held[parts[1]] = held.get(parts[1], 0) + obj.size
            state.titles, state.bytes = counts, held
        else:
            raise ValueError("/inventory has neither titles nor objects")
        state.sequence = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else polled
        self._snapshot = None
