"""Control-plane invalidations on the box: applied once each, in sequence order, pushed or pulled.

Rules kept here:
- The control plane's log is sequence-numbered. The box applies entry N only after every entry before it,
  and never twice: the last applied sequence number is kept in fetch.db and reported in /status.
- Entries arrive pushed (POST /invalidations on the admin port) or pulled (GET <control>/v1/invalidations
  ?since=N, at start before the admin port opens, then every control.poll_interval). A push with a gap
  (its first entry is past applied+1) makes the box pull the missing ones first.
- An entry is the wire model's Invalidation (oca/wire/invalidation.py: seq, scope key | prefix | title, value,
  soft, ...). A malformed entry stops the batch there (BadRequest naming it): skipping it would break the order.
- Every number a peer or the control plane sends is range-checked. A seq is an integer in 1..MAX_SEQ and,
  in a push, at most applied + MAX_AHEAD (the control plane pushes at most that many entries past the applied
  seq it learnt from us, which is never ahead of ours): anything else is refused whole (400), before one entry
  is applied. Within range, the box applies only the run applied+1, applied+2, ...: an entry past a gap is not
  applied (the pull fills the gap when control.url is set), so the applied seq never passes a missing entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp

from oca.config import ControlConfig
from oca.errors import BadRequest
from oca.fetch.manager import FillManager
from oca.httpapi import bearer, loads
from oca.replicas import Replicas
from oca.secret_files import read_secret
from oca.wire.invalidation import Invalidation, InvalidationBatch

log = logging.getLogger("oca.invalidations")
MAX_AHEAD = 1000  # control/invalidation.py's _PUSH_BATCH: a push holds at most that many entries past applied


def check_window(entries: Sequence[Invalidation], applied: int) -> None:
    """BadRequest unless every entry's seq is at most applied + MAX_AHEAD."""
    for entry in entries:
        if entry.seq > applied + MAX_AHEAD:
            raise BadRequest(f"invalidation seq {entry.seq} is too far ahead: this box has applied {applied}, "
                             f"a push may reach {applied + MAX_AHEAD} at most")


def in_order(entries: Sequence[Invalidation], applied: int) -> tuple[list[Invalidation], int | None]:
    """The entries to apply now, in order: applied+1, applied+2, ... (older ones skipped, duplicates once);
    and the first missing seq when a gap stops the run (None when nothing after it waits)."""
    run: list[Invalidation] = []
    for entry in sorted(entries, key=lambda e: e.seq):
        seq = entry.seq
        if seq <= applied:
            continue
        if seq > applied + 1:
            return run, applied + 1
        run.append(entry)
        applied = seq
    return run, None


class Invalidations:
    def __init__(self, fills: FillManager, config: ControlConfig) -> None:
        self.fills = fills
        self.config = config
        self.applied = int(fills.state.get("invalidation_seq", "0") or 0)
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._credential = read_secret(config.credential_file, "control.credential_file") \
            if config.credential_file else None
        self._replicas = Replicas(config.url) if config.url else None

    async def apply(self, checked: Sequence[Invalidation]) -> int:
        """Apply what is new among the entries (in order); returns the last applied sequence number."""
        async with self._lock:
            check_window(checked, self.applied)
            run, missing = in_order(checked, self.applied)
            if missing is not None and self.config.url:  # the control plane's log has the missing ones
                await self._pull_locked()
                run, missing = in_order(checked, self.applied)
            for entry in run:
                count = await self.fills.purge(entry.scope, entry.value, entry.soft)
                log.info("invalidation %d applied: %s %s%s, %d objects (%s)", entry.seq, entry.scope, entry.value,
                         " (soft)" if entry.soft else "", count, entry.reason)
                self.applied = entry.seq
                self.fills.state.put("invalidation_seq", str(entry.seq))
            if missing is not None:
                log.warning("invalidation %d is missing: the ones after it wait for %s", missing,
                            "the next pull" if self.config.url else "a push that carries it (no control.url)")
        return self.applied

    async def pull(self) -> None:
        async with self._lock:
            await self._pull_locked()

    async def _pull_locked(self) -> None:
        if self._replicas is None:
            return
        headers = bearer(self._credential)
        timeout = aiohttp.ClientTimeout(total=max(2.0, self.config.poll_interval))
        failures: list[str] = []
        body: object = None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for base in self._replicas:  # the replica that answered last first, then the others (oca.replicas)
                url = f"{base}/v1/invalidations"
                try:
                    async with session.get(url, params={"since": str(self.applied)}, headers=headers) as response:
                        if response.status != 200:
                            raise OSError(f"answered {response.status}")
                        body = await response.json(loads=loads)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    failures.append(f"{url}: {exc or type(exc).__name__}")
                    continue
                self._replicas.answered(base)
                break
            else:
                self.last_error = "pull: " + "; ".join(failures)
                log.warning("%s", self.last_error)
                return
        entries = body.get("invalidations") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            self.last_error = f"pull from {base}: no invalidations list in the answer"
            return
        self.last_error = None
        run, _ = in_order(InvalidationBatch.from_json(body).entries, self.applied)  # a bad entry: BadRequest
        for entry in run:
            await self.fills.purge(entry.scope, entry.value, entry.soft)
            self.applied = entry.seq
            self.fills.state.put("invalidation_seq", str(entry.seq))

    async def pull_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.pull()
            except BadRequest as exc:
                self.last_error = f"the control plane sent a bad invalidation: {exc}"
                log.error("%s", self.last_error)
