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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from control.health import BoxStatus
from control.model import Box, Inventory
from oca.httpapi import bearer, loads
from oca.wire.inventory import Listing, TitleChanges

log = logging.getLogger("oca.control.inventory")


@dataclass
class _BoxTitles:
    sequence: int | None = None
    titles: dict[str, int] = field(default_factory=dict)  # title id -> objects held
    bytes: dict[str, int] = field(default_factory=dict)  # title id -> bytes held (when the box says)


@dataclass
class InventoryTracker:
    session: aiohttp.ClientSession
    file_counts: Callable[[], Mapping[str, int]]  # title id -> catalogued files
    timeout: float = 5.0
    token: str | None = None
    _boxes: dict[str, _BoxTitles] = field(default_factory=dict)
    title_sizes: Callable[[], Mapping[str, int]] | None = None  # title id -> catalogued bytes
    _snapshot: Inventory | None = None
    _busy: set[str] = field(default_factory=set)

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

    async def on_status(self, box: Box, status: BoxStatus) -> None:
        """A health-poll listener: refresh the box's titles when its inventory sequence moved."""
        state = self._boxes.setdefault(box.id, _BoxTitles())
        if status.inventory_sequence is not None and status.inventory_sequence == state.sequence:
            return
        if box.id in self._busy:
            return
        self._busy.add(box.id)
        try:
            await asyncio.wait_for(self._refresh(box, state, status.inventory_sequence), self.timeout)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.info("inventory of %s not refreshed: %s", box.id, exc)
        finally:
            self._busy.discard(box.id)

    async def _refresh(self, box: Box, state: _BoxTitles, polled: int | None) -> None:
        since = state.sequence if state.sequence is not None else 0
        headers = bearer(self.token)
        url = f"{box.admin_url}/inventory/titles"
        async with self.session.get(url, params={"since": str(since)}, headers=headers) as resp:
            if resp.status == 404:
                url = f"{box.admin_url}/inventory"
                async with self.session.get(url, headers=headers) as old:
                    if old.status != 200:
                        raise ValueError(f"/inventory answered {old.status}")
                    body = await old.json(content_type=None, loads=loads)
            elif resp.status != 200:
                raise ValueError(f"/inventory/titles answered {resp.status}")
            else:
                body = await resp.json(content_type=None, loads=loads)
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
