"""What every admin route shares: the parts of the box it may use, each behind a narrow interface.

Rules kept here:
- The admin API never holds the master: each route reaches only the interfaces in AdminContext (a drain
  control, a workers view, a release switch, storage calls, ...), and changes the box only through their
  methods, never by setting attributes.
- The interfaces are typing.Protocols, so the admin routes can be tested with plain fakes and the master's
  parts can change without the routes knowing. (JSON bodies: oca.httpapi.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from aiohttp import web

from oca.admin.inventory import TitleInventory
from oca.config.model import AdminConfig, BoxIdentity
from oca.fetch.prefetch import PrefetchJob
from oca.firmware.box import BoxFirmware, Switcher
from oca.serve.stats import FleetStats
from oca.wire.invalidation import Invalidation
from oca.wire.prefetch import PrefetchItem

T = TypeVar("T")


class StoreCalls(Protocol):
    """The store, called on the storage owner's threads (never straight from the event loop)."""

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    def peek(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """The store's lock-free counters (Store.status, Store.title_changes), read on the caller's thread."""
        ...


class BoxView(Protocol):
    """Who the box is (its config's `box` section, as last reloaded) and since when it runs."""

    @property
    def identity(self) -> BoxIdentity: ...

    @property
    def started(self) -> float: ...  # epoch seconds


class DrainControl(Protocol):
    """An operator's drain: the box says it is draining (/status, oca_draining) so steering sends players
    elsewhere; it keeps serving whoever still comes."""

    @property
    def draining(self) -> bool: ...

    def drain(self) -> None: ...

    def undrain(self) -> None: ...


class WorkersView(Protocol):
    """The worker processes serving the data port."""

    def serving_workers(self) -> int: ...

    def serving_releases(self) -> Sequence[tuple[int, str]]: ...  # (generation, version) with a serving worker


class EgressView(Protocol):
    @property
    def egress_bps(self) -> int: ...  # bits per second sent to clients lately


class FillsView(Protocol):
    """The box's fills from upstream (oca.fetch.manager): their counters, purges, and one key's history."""

    def status(self) -> dict[str, Any]: ...

    async def purge(self, scope: str, value: str, soft: bool) -> int: ...

    def explain(self, key: str, held: bool) -> dict[str, Any]: ...  # `oca cache why` (oca.fetch.history)


class PrefetchJobs(Protocol):
    """The prefetch queue (oca.fetch.prefetch)."""

    @property
    def jobs(self) -> Mapping[int, PrefetchJob]: ...

    def submit(self, items: list[PrefetchItem], priority: int = 0, rate: int = 0) -> PrefetchJob: ...

    def cancel(self, job_id: int) -> PrefetchJob | None: ...


class InvalidationLog(Protocol):
    """The control plane's invalidations as this box applied them (oca.fetch.invalidations)."""

    @property
    def applied(self) -> int: ...  # the last sequence number applied

    @property
    def last_error(self) -> str | None: ...

    async def apply(self, checked: Sequence[Invalidation]) -> int: ...


@dataclasses.dataclass(frozen=True)
class AdminContext:
    admin: AdminConfig  # the admin port's settings at start (a reload does not change them)
    box: BoxView
    drain: DrainControl
    workers: WorkersView
    store: StoreCalls
    stats: FleetStats
    egress: EgressView
    inventory: TitleInventory
    fills: FillsView
    prefetch: PrefetchJobs
    invalidations: InvalidationLog
    firmware: BoxFirmware  # the release view: releases, state, counters, the steps
    switcher: Switcher  # switches the workers to a release (the firmware steps' last part)


CONTEXT = web.AppKey("context", AdminContext)


def context_of(request: web.Request) -> AdminContext:
    return request.app[CONTEXT]
