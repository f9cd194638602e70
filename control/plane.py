"""The control plane's live state and the few decisions that join its parts: one object the HTTP API holds.

Rules kept here:
- Everything with a lifetime is created in `open()` and released in `close()`: the HTTP client session,
  the store, the health poller, the invalidation pusher, the popularity snapshots. Nothing is global.
- The clock is injected (wall clock, epoch seconds); the store runs on one worker thread (`blocking`).
- State that must survive a restart is loaded at start: drains, applied invalidation seqs, the catalog,
  and this replica's popularity snapshot (also saved every `popularity.snapshot_interval` and at stop).
- Several replicas share the state store: what another replica wrote reaches this one's memory within
  `replica.refresh_interval` (control.replication), and the other replicas' popularity counters are merged
  in every `popularity.snapshot_interval` (`popularity_view`).
- Tokens: one per session, scoped to the title's directory (RFC 9246 `cdniuc`), signed with the configured
  private key; the origin pathway carries none. Without a signing key, pathways carry no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from control.config import ControlConfig
from control.health import HealthPoller
from control.invalidation import Invalidator
from control.inventory import InventoryTracker
from control.manifests.query import SteeringQuery
from control.model import ORIGIN_PATHWAY, BoxHealth, Title
from control.popularity import Popularity
from control.prefix_data import PrefixState, reload_index
from control.preflight import Startup, prefix_files, startup
from control.replication import StateFollower
from control.rollout.boxes import BoxFirmwareClient
from control.rollout.service import Rollouts
from control.sessions import SessionTable
from control.signals import PlayerSignals
from control.steering import Decision, Pathway, SteeringIndex, steer
from control.store import StateStore, open_store
from control.titles import LiveCatalog
from oca.errors import NotFound, OcaError
from oca.httpapi import bearer
from oca.tokens import PrivateKey, mint, title_scope

log = logging.getLogger("oca.control")

T = TypeVar("T")
Clock = Callable[[], float]


@dataclass(frozen=True)
class Signer:
    key: PrivateKey
    kid: str
    issuer: str
    lifetime: float
    bind_client_ip: bool

    def token(self, title_id: str, client_ip: str | None, now: float) -> str:
        return mint(self.key, self.kid, issuer=self.issuer, scope=title_scope(title_id), lifetime=self.lifetime,
                    now=now, client_ip=client_ip if self.bind_client_ip else None)


@dataclass
class ControlPlane:
    config: ControlConfig
    store: StateStore
    http: aiohttp.ClientSession
    executor: ThreadPoolExecutor
    clock: Clock
    index: SteeringIndex
    poller: HealthPoller
    inventory: InventoryTracker
    invalidator: Invalidator
    catalog: LiveCatalog
    sessions: SessionTable
    popularity: Popularity
    signer: Signer | None
    operator_token: str | None
    box_token: str | None
    read_token: str | None = None  # auth.read_token_file: GET routes only (control/api.py)
    rollouts: Rollouts = field(init=False)
    follower: StateFollower = field(init=False)
    others: dict[str, Popularity] = field(default_factory=dict)  # other replicas' counters, at their last snapshot
    prefixes: PrefixState = field(init=False)  # the prefix files the index was built from (control.prefix_data)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)
    signals: PlayerSignals = field(default_factory=PlayerSignals)  # players' throughput per box (this replica's)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    async def open(cls, config: ControlConfig, *, clock: Clock = time.time, store: StateStore | None = None,
                   loaded: Startup | None = None) -> ControlPlane:
        """Build every part from the config and load the persisted state (polling not started yet).
        `loaded`: what control.preflight already read from the files the config names (else read here)."""
        if loaded is None:
            loaded = startup(config)  # control.preflight: the same checks as `oca check-config` (all problems)
        operator_token, box_token = loaded.operator_token, loaded.box_token
        signer = None
        if loaded.signing_key is not None:
            t = config.tokens
            signer = Signer(loaded.signing_key, t.kid, t.issuer, t.lifetime, t.bind_client_ip)
        assert loaded.index is not None  # startup() raised otherwise
        index = loaded.index
        executor = ThreadPoolExecutor(1, thread_name_prefix="oca-control-store")
        store = store if store is not None else open_store(config.state.target(), password=loaded.state_password)
        # force_close: health polls and inventories have their own kept connections (control.status_client);
        # the rest of what is asked of boxes is rare (pushes, drains, roll-outs), and keeping those
        # connections open too held a second descriptor per box: 20,000 boxes ran out of open files.
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.health.timeout),
                                     connector=aiohttp.TCPConnector(limit=0, limit_per_host=4, force_close=True))

        async def blocking(fn: Callable[..., T], *args: Any) -> T:
            return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))

        catalog = LiveCatalog(store, blocking)
        poller = HealthPoller(config.fleet, clock, interval=config.health.interval,
                              timeout=config.health.timeout, down_after=config.health.down_after,
                              up_after=config.health.up_after, token=box_token,
                              concurrency=config.health.concurrency)
        inventory = InventoryTracker(poller.client, catalog.file_counts, config.health.inventory_timeout, box_token,
                                     title_sizes=lambda: {t.id: t.size for t in catalog.titles()})
        invalidator = Invalidator(store, config.fleet, http, poller.health_view, clock, blocking,
                                  config.invalidation.push_timeout, config.invalidation.retry_interval, box_token,
                                  config.invalidation.push_concurrency)
        poller.required_seq = lambda: invalidator.last_seq
        poller.listeners += [invalidator.on_status, inventory.on_status]
        poller.followups.append(inventory.settled)
        catalog.on_change(inventory.catalog_changed)
        plane = cls(config, store, http, executor, clock, index, poller, inventory, invalidator, catalog,
                    SessionTable(config.steering.max_sessions), Popularity(config.popularity.half_life), signer,
                    operator_token, box_token, read_token=loaded.read_token)
        plane.prefixes = PrefixState(prefix_files(config), loaded.prefix_signature, clock(), len(index.announced),
                                     len(index.coverage))
        plane.rollouts = Rollouts(
            config, store, blocking, clock,
            BoxFirmwareClient(http, box_token, config.rollout.request_timeout, config.health.timeout),
            poller.health, lambda: poller.drained, plane.set_drained, plane.poll_now,
            replica=config.replica_id(), lease=config.replica.lease)
        plane.follower = StateFollower(store, blocking, invalidator, poller, catalog, clock,
                                       config.replica.refresh_interval)
        try:
            await plane._load()
        except BaseException:
            await plane.close()
            raise
        return plane

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    async def _load(self) -> None:
        await self.catalog.load()
        await self.invalidator.load()
        await self.rollouts.load()
        drained: frozenset[str] = await self.blocking(self.store.drained)
        self.poller.set_drained(drained)
        await self._read_popularity(restore=True)
        await self.follower.refresh()  # the newest audit id the memory now reflects

    def start(self) -> None:
        """Start polling, pushing and snapshotting (in the running loop)."""
        self.poller.start()
        self.invalidator.start()
        self.rollouts.start()
        self._tasks.append(asyncio.create_task(self._snapshots(), name="popularity snapshots"))
        self._tasks.append(asyncio.create_task(self.follower.run(), name="state refresh"))
        if self.config.prefixes_check_interval > 0 and self.prefixes.files.paths():
            self._tasks.append(asyncio.create_task(self._watch_prefixes(), name="prefix files"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.rollouts.stop()
        await self.inventory.stop()  # before the poller closes the connections its fetches use
        await self.poller.stop()
        await self.invalidator.stop()
        try:
            await self.save_popularity()
        except Exception:
            log.exception("popularity snapshot at stop failed")
        await self.http.close()
        await self.blocking(self.store.close)
        self.executor.shutdown(wait=True)

    async def save_popularity(self) -> None:
        """This replica's counters, under its id (and as the single snapshot an older version restores)."""
        now = self.clock()
        self.popularity.prune(now)
        snapshot = self.popularity.snapshot()
        await self.blocking(self.store.save_replica_popularity, self.config.replica_id(), snapshot, now)
        await self.blocking(self.store.save_popularity, snapshot, now)

    async def _read_popularity(self, *, restore: bool = False) -> None:
        """The other replicas' last snapshots (and, at start, this replica's own counters back)."""
        me, half_life = self.config.replica_id(), self.config.popularity.half_life
        snapshots: dict[str, dict[str, Any]] = await self.blocking(self.store.replica_popularity)
        if restore:
            own = snapshots.get(me)
            if own is None and not snapshots:  # a state from before replicas: its one snapshot is ours
                own = await self.blocking(self.store.load_popularity)
            if own is not None:
                try:
                    self.popularity = Popularity.restore(own, half_life=half_life)
                except ValueError as exc:
                    log.warning("popularity snapshot not restored: %s", exc)
        others = {}
        for replica, snapshot in snapshots.items():
            if replica != me:
                try:
                    others[replica] = Popularity.restore(snapshot, half_life=half_life)
                except ValueError as exc:
                    log.warning("popularity of replica %s not merged: %s", replica, exc)
        self.others = others

    def popularity_view(self) -> Popularity:
        """Session starts counted by every replica: this one's live counters and the others' last snapshots
        (each saved every popularity.snapshot_interval), what fill plans and /v1/popularity use."""
        if not self.others:
            return self.popularity
        return Popularity.merged([self.popularity, *self.others.values()], self.config.popularity.half_life)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.config.popularity.snapshot_interval)
            try:
                await self.save_popularity()
                await self._read_popularity()
            except OcaError as exc:  # the store is unreachable: the counters stay in memory until the next round
                log.warning("popularity snapshot not saved: %s", exc)
            except Exception:
                log.exception("popularity snapshot failed")

    async def reload_prefixes(self, *, force: bool = False) -> bool:
        """Rebuild the steering index from the prefix files if they changed (or `force`: SIGHUP), in a
        thread; True when a new index is in use. A bad file is logged and changes nothing. Each replica
        does this on its own: the files are config, deployed beside control.yaml on every replica."""
        async with self._reloading:
            index = await asyncio.to_thread(reload_index, self.config.fleet, self.prefixes,
                                            self.config.steering.default_site, self.clock, force=force)
        if index is None:
            return False
        self.index = index
        gc.freeze()  # as at start (control/service.py): the new tables live until the next reload
        return True

    async def _watch_prefixes(self) -> None:
        while True:
            await asyncio.sleep(self.config.prefixes_check_interval)
            try:
                await self.reload_prefixes()
            except Exception:
                log.exception("prefix data reload failed")

    # -- decisions -------------------------------------------------------------------------------------

    def health(self) -> dict[str, BoxHealth]:
        return self.poller.health()

    def decide(self, title: Title, client_ip: str, avoid: dict[str, float] | None = None, *,
               new_session: bool = False) -> Decision:
        """ValueError on a malformed client address (the API answers 400). A new session also ranks the
        boxes players find slow last (control.signals); a steering reload does not, so no session is moved."""
        health = self.poller.health_view()
        now = self.clock()
        slow = None
        if new_session:
            loads = {box: h.load for box, h in health.items()}
            slow = {box: s.reason() for box, s in self.signals.current(self.index.box_site, loads, now).items()}
        return steer(self.index, health, self.inventory.snapshot(), title, client_ip,
                     now=now, avoid=avoid, overload_threshold=self.config.steering.overload_threshold,
                     max_pathways=self.config.steering.max_pathways, slow=slow)

    def player_report(self, report: SteeringQuery, now: float) -> None:
        """A steering reload's throughputs, per box reported (the origin and unknown ids are not boxes)."""
        for pathway, bits_per_second in zip(report.pathways, report.throughputs, strict=False):
            if pathway in self.index.box_site:
                self.signals.report(pathway, bits_per_second, now)

    def token(self, title_id: str, client_ip: str) -> str | None:
        return self.signer.token(title_id, client_ip, self.clock()) if self.signer else None

    def token_for(self, pathway: Pathway, token: str | None) -> str | None:
        return None if pathway.id == ORIGIN_PATHWAY else token

    async def poll_now(self, box_id: str) -> BoxHealth:
        """Poll the box now (outside the schedule) and return its health."""
        await self.poller.poll_box(self.config.fleet.boxes[box_id])
        return self.poller.health()[box_id]

    async def set_drained(self, box_id: str, drained: bool, operator: str) -> None:
        if box_id not in self.config.fleet.boxes:
            raise NotFound(f"unknown box {box_id!r}")
        await self.blocking(functools.partial(self.store.set_drained, box_id, drained, operator=operator,
                                              time=self.clock()))
        current = set(self.poller.drained)
        (current.add if drained else current.discard)(box_id)
        self.poller.set_drained(frozenset(current))
        admin = self.config.fleet.boxes[box_id].admin_url
        headers = bearer(self.box_token)
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):  # the control plane's drain is enough
            async with asyncio.timeout(self.config.health.timeout):
                async with self.http.post(f"{admin}/{'drain' if drained else 'undrain'}", headers=headers) as resp:
                    if resp.status == 200:
                        self.poller.box_draining(box_id, drained)
