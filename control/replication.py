"""Keeping a replica's memory in step with the state every replica shares, and knowing when it cannot.

Rules kept here:
- The play and steering paths read memory only; this loop refreshes it every `replica.refresh_interval`
  (1 s by default). It polls rather than LISTEN/NOTIFY: two cheap queries a round (the newest audit entry's
  id and the last invalidation seq) work the same on SQLite and PostgreSQL, need no connection held open per
  replica, and cannot miss a change the way a notification sent while a replica was disconnected is missed.
- Every write another replica must see leaves an audit entry (drain, undrain, catalog, invalidate,
  roll-out), so the audit entries newer than the last round say what to reload: the drains after a drain,
  undrain or roll-out step, the catalog after an ingest (templates of titles that did not change are kept). The
  invalidation seq is read every round: a box is healthy only once it applied the whole log, and a replica
  pushes what it did not append itself.
- A round that fails (the state store unreachable) keeps everything as it was and says why (`error`,
  shown by /v1/status and the `oca_control_state_store_up` metric); the next good round clears it. Playlists,
  MPDs and steering go on from memory meanwhile; writes fail with the store's 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from control.health import HealthPoller
from control.invalidation import Invalidator
from control.store import AuditEntry, StateStore
from control.titles import LiveCatalog
from oca.errors import OcaError

log = logging.getLogger("oca.control")
Blocking = Callable[..., Awaitable[Any]]
_AUDIT_WINDOW = 50  # audit entries read a round: more new ones than this reload everything


@dataclass
class StateFollower:
    store: StateStore
    blocking: Blocking
    invalidator: Invalidator
    poller: HealthPoller
    catalog: LiveCatalog
    clock: Callable[[], float]
    interval: float
    newest_audit: int = -1  # the newest audit id the memory reflects (-1: none read yet)
    error: str | None = None  # why the last round failed; None when it worked
    refreshed: float | None = None  # when the last round worked

    async def refresh(self) -> None:
        """One round: raise the invalidation seq, reload drains and catalog if anything was written."""
        seq: int = await self.blocking(self.store.last_invalidation_seq)
        recent: list[AuditEntry] = await self.blocking(self.store.audit, _AUDIT_WINDOW)
        audit_id = recent[-1].id if recent else 0
        if seq > self.invalidator.last_seq:
            self.invalidator.last_seq = seq
            self.invalidator.push_all()
        if audit_id != self.newest_audit:
            new = [e for e in recent if e.id > self.newest_audit]
            everything = self.newest_audit < 0 or len(new) == len(recent)  # first round, or more than we read
            actions = {e.action for e in new}
            if everything or actions & {"drain", "undrain", "rollout"}:  # a roll-out drains and undrains too
                drained: frozenset[str] = await self.blocking(self.store.drained)
                if drained != self.poller.drained:
                    self.poller.set_drained(drained)
            if everything or "catalog" in actions:
                await self.catalog.reload()
            self.newest_audit = audit_id
        if self.error is not None:
            log.warning("state store reachable again: %s", self.store_name())
        self.error, self.refreshed = None, self.clock()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except OcaError as exc:  # StoreError (503): keep serving what memory holds
                if self.error != str(exc):
                    log.error("state store unreachable, serving from memory: %s", exc)
                self.error = str(exc)
            except Exception as exc:  # a bug must not stop the refreshes
                log.exception("state refresh failed")
                self.error = f"refresh failed: {exc}"

    def store_name(self) -> str:
        return type(self.store).__name__
