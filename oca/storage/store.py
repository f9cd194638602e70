"""Store: the single owner of the tiers and the index; every write, move and eviction happens here.

Rules kept here:
- One owner per state_dir (lock.py). One lock guards the catalog, the index and the engine; get/list/
  status only read memory.
- New objects land on the fastest tier that admits them (`admission: returning` lets in only what the
  policy remembers, or `hot` objects; such a tier is the fallback when no tier that admits can make room);
  an evicted object moves down while its policy finds it worth keeping (an exclusive hierarchy: one cache
  across the tiers). A tier that is not UP is skipped, and a put whose tier fails under it (EIO, directory
  gone) moves on to the next. A full disk
  (ENOSPC) fails that put with StorageError and marks the tier FULL; nothing stored is lost.
- The sum of object sizes on a tier never exceeds its capacity: bytes count only when an object is
  committed, and every commit is preceded by the evictions `plan_placement` returned for it.
- Promotion: `config.promotion.hits` hits within `config.promotion.window` move an unpinned object up one
  tier. Pinned objects are never evicted, demoted or promoted; they stay where the fill plan put them.
- Blocking: put_file copies without holding the lock; promotions and demotions copy while holding it.
  Call put_file, record_hits, evict*, set_pinned and check_tiers from an executor, not an event loop.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from oca.config.model import StorageConfig
from oca.errors import BadRequest, InsufficientStorage, NotFound, StorageError
from oca.storage import files, health, lock
from oca.storage.catalog import Catalog, CatalogEntry, Tier
from oca.storage.engine import STICKY, Engine
from oca.storage.generation import GENERATION_NAME, Generation
from oca.storage.index import Index, IndexCorrupt, index_path, scan_tiers
from oca.storage.layout import key_hash, unlink_quiet
from oca.storage.model import ObjectInfo, TierState
from oca.storage.planned import PlannedPolicy
from oca.storage.policy import EvictionPolicy, PromotionCounter, policy_factory

log = logging.getLogger("oca.storage")


class _Retry(Exception):
    """The chosen tier failed under a put: try the next one."""


class Store:
    """The owner of one box's storage. Thread-safe; one per state_dir. Open with `Store.open`."""

    def __init__(self, config: StorageConfig, clock: Callable[[], float], catalog: Catalog, engine: Engine,
                 lock_fd: int) -> None:
        self.config, self._clock, self._cat, self._engine = config, clock, catalog, engine
        self._index, self._gen, self._lock_fd = engine.index, engine.gen, lock_fd
        self._state_dir = os.path.abspath(config.state_dir)
        self._lock = threading.RLock()
        self._last_flush = clock()
        self._closed = False

    # ---------------------------------------------------------------- opening and closing

    @classmethod
    def open(cls, config: StorageConfig, clock: Callable[[], float] = time.time, *,
             policy: Callable[[], EvictionPolicy] | None = None) -> Store:
        """Take ownership of `config.state_dir`, prepare the tiers and load (or rebuild) the index.

        `policy` makes one eviction policy per tier (`config.policy` unless told otherwise)."""
        lock.validate(config)
        state_dir = os.path.abspath(config.state_dir)
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create state_dir {state_dir}: {health.describe(e)}") from e
        lock_fd = lock.take_lock(state_dir)
        generation = index = None
        try:
            tiers = config.tiers
            catalog = Catalog(tiers, policy or policy_factory(config.policy, [t.capacity for t in tiers]))
            suspect = _prepare_tiers(catalog)
            generation = Generation(os.path.join(state_dir, GENERATION_NAME), writable=True)
            index = _open_index(index_path(state_dir), catalog)
            counter = PromotionCounter(config.promotion.hits, config.promotion.window, clock)
            store = cls(config, clock, catalog, Engine(catalog, index, generation, counter, clock), lock_fd)
            store._load(suspect)
        except BaseException:
            if index is not None:
                index.close()
            if generation is not None:
                generation.close()
            os.close(lock_fd)
            raise
        return store

    def _load(self, suspect: set[str]) -> None:
        """Fill memory from the index, settle the journal, check the tiers, enforce capacities."""
        cat, index = self._cat, self._index
        with index.transaction():
            dropped = index.drop_tiers_except([t.name for t in cat.tiers])
        if dropped:
            log.warning("forgot %d objects on tiers no longer configured", dropped)
        suspect |= {name for name, state in index.tier_states().items() if state is TierState.FAILED}
        for row in index.rows():
            cat.attach(CatalogEntry(row.key, key_hash(row.key), cat.by_name[row.tier].number, row.size, row.digest,
                             row.stored_at, row.last_access, row.hot, row.pinned))
        self._engine.settle(index.pending())
        for name in suspect:  # the tier was FAILED or its directory was recreated: check its files
            if cat.by_name[name].state is not TierState.FAILED:
                self._engine.forget_missing(cat.by_name[name])
        with index.transaction():
            for tier in cat.tiers:
                index.set_tier_state(tier.name, tier.state, tier.error)
        self.check_tiers()
        for tier in cat.tiers:
            self._engine.shrink(tier)
        self._gen.bump()

    def close(self) -> None:
        """Save last access times and give up ownership. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._engine.flush_access()
            except StorageError as e:
                log.warning("last access times not saved: %s", e)
            self._index.close()
            self._gen.close()
            os.close(self._lock_fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    @property
    def generation(self) -> int:
        """Bumped on every removal, move or replacement and every tier state change."""
        return self._gen.value

    def get(self, key: str) -> ObjectInfo | None:
        """The object stored as `key`, or None if absent or on a FAILED tier."""
        with self._lock:
            entry = self._cat.entries.get(key)
            if entry is None or not self._cat.servable(entry):
                return None
            return self._cat.info(entry)

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every servable object whose key starts with `prefix`, sorted by key."""
        with self._lock:
            found = sorted((e for k, e in self._cat.entries.items()
                            if k.startswith(prefix) and self._cat.servable(e)), key=lambda e: e.key)
            return [self._cat.info(e) for e in found]

    def status(self) -> dict[str, object]:
        with self._lock:
            tiers = self._cat.tiers
            return {
                "objects": len(self._cat.entries),
                "generation": self._gen.value,
                "tiers": [{"name": t.name, "path": t.layout.root, "capacity": t.capacity, "used": t.used,
                           "objects": t.objects, "state": t.state.value, "error": t.error} for t in tiers],
                "promotions": self._engine.promotions,
                "demotions": self._engine.demotions,
                "evictions": {t.name: t.evictions for t in tiers},
            }

    # ---------------------------------------------------------------- writing

    def put_file(self, src: str, key: str, *, hot: bool = False, pin: bool = False,
                 digest: str | None = None) -> ObjectInfo:
        """Copy `src` in as `key`, verified against its size and (if given) `digest`; replaces any old copy.

        Raises StorageError (503) if it cannot be stored, InsufficientStorage (507) if no tier can make room.
        """
        _check_key(key)
        try:
            size = os.stat(src).st_size
        except OSError as e:
            raise StorageError(f"cannot read {src}: {health.describe(e)}") from e
        tried: set[int] = set()
        while True:
            with self._lock:
                self._check_open()
                tier = self._choose_tier(key, size, hot, tried)
            tried.add(tier.number)
            try:
                staged = files.stage_copy(src, tier.layout.tmp_dir, expect_size=size, expect_digest=digest)
            except files.SourceError as e:
                raise StorageError(str(e)) from e
            except files.VerifyError as e:
                raise StorageError(f"put {key!r}: {e}") from e
            except OSError as e:
                with self._lock:
                    self._write_failed(tier, e, size, key)
                continue
            try:
                with self._lock:
                    self._check_open()
                    return self._commit_put(tier, staged, key, hot, pin)
            except _Retry:
                continue
            finally:
                unlink_quiet(staged.path)

    def fill_target(self, key: str, size: int, hot: bool = False) -> tuple[str, str]:
        """(tier name, its temp directory): where an upstream fill of `key` (`size` bytes, 0 if unknown)
        should write its temp file, so that `adopt` can rename it into place on the same filesystem."""
        _check_key(key)
        with self._lock:
            self._check_open()
            tier = self._choose_tier(key, size, hot, set())
            return tier.name, tier.layout.tmp_dir

    def adopt(self, path: str, key: str, *, tier: str, size: int, digest: str, hot: bool = False,
              pin: bool = False) -> ObjectInfo:
        """Take a fully written and fsynced temp file (made in `fill_target`'s directory) as `key`, renamed into
        place without a copy. If that tier cannot take it any more, the file is copied to another tier.
        The temp file is gone afterwards, whatever happens."""
        _check_key(key)
        try:
            with self._lock:
                self._check_open()
                found = self._cat.by_name.get(tier)
                if found is None:
                    raise StorageError(f"no tier named {tier!r}")
                try:
                    return self._commit_put(found, files.Staged(path, size, digest), key, hot, pin)
                except _Retry:
                    pass
            return self.put_file(path, key, hot=hot, pin=pin, digest=digest)
        finally:
            unlink_quiet(path)

    def evict(self, key: str) -> bool:
        """Remove the object stored as `key` (on any tier, even a FAILED one); False if there is none."""
        with self._lock:
            self._check_open()
            entry = self._cat.entries.get(key)
            if entry is not None:
                self._engine.drop([entry])
            return entry is not None

    def evict_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; returns how many."""
        with self._lock:
            self._check_open()
            doomed = [e for k, e in self._cat.entries.items() if k.startswith(prefix)]
            self._engine.drop(doomed)
            return len(doomed)

    def set_pinned(self, key: str, pinned: bool) -> ObjectInfo:
        """Pin (never evict, demote or promote) or unpin an object; recorded in its sidecar too."""
        with self._lock:
            self._check_open()
            entry = self._cat.entries.get(key)
            if entry is None:
                raise NotFound(f"no stored object {key!r}")
            if entry.pinned != pinned:
                tier = self._cat.tiers[entry.tier]
                entry.pinned = pinned
                try:
                    self._engine.write_sidecar(tier, entry)
                    with self._index.transaction():
                        self._index.set_pinned(key, pinned)
                except OSError as e:
                    entry.pinned = not pinned
                    self._engine.charge(tier, e)
                    raise StorageError(f"cannot pin {key!r} on tier {tier.name}: {health.describe(e)}") from e
                except StorageError:
                    entry.pinned = not pinned
                    raise
            return self._cat.info(entry)

    def set_fill_scores(self, scores: Mapping[str, float]) -> None:
        """The fill plan's per-file predictions (oca/storage/planned.py): planned keys outrank the rest on
        every tier, lowest score evicted first, until the next call replaces them ({} ends the plan)."""
        with self._lock:
            self._check_open()
            planned = dict(scores)
            held: list[dict[str, int]] = [{} for _ in self._cat.tiers]
            for entry in self._cat.entries.values():
                held[entry.tier][entry.key] = entry.size
            for tier in self._cat.tiers:
                if not isinstance(tier.policy, PlannedPolicy):
                    if not planned:
                        continue
                    tier.policy = PlannedPolicy(tier.policy)
                tier.policy.replan(planned, held[tier.number])

    def record_hits(self, hits: Mapping[str, int]) -> None:
        """Note reads reported by workers: LRU order, last access (saved in batches), promotion."""
        with self._lock:
            self._check_open()
            now = self._clock()
            earned: builtins.list[CatalogEntry] = []
            for key, count in hits.items():
                entry = self._cat.entries.get(key)
                if entry is None or count <= 0:
                    continue
                self._engine.touch(entry, now)
                if entry.tier > 0 and not entry.pinned and self._engine.counter.hit(key, count):
                    earned.append(entry)
            for entry in earned:
                if self._cat.current(entry):
                    self._promote(entry)
            if now - self._last_flush >= self.config.access_flush_interval:
                self._last_flush = now
                self._engine.flush_access()
                self._engine.counter.prune()

    # ---------------------------------------------------------------- tier health

    def report_io_error(self, tier: str, error: str) -> None:
        """A worker saw an I/O error reading from `tier`: take it out of service until reopened."""
        with self._lock:
            self._check_open()
            found = self._cat.by_name.get(tier)
            if found is None:
                raise NotFound(f"no tier named {tier!r}")
            found.sticky = True
            self._engine.set_state(found, TierState.FAILED,
                                   f"{error or 'I/O error reported by a worker'}; {STICKY}")

    def report_write_error(self, tier: str, error: OSError, need: int = 0) -> None:
        """A fill could not write its temp file on `tier`: FULL (ENOSPC: until `need` bytes are free again) or
        FAILED (EIO, a vanished directory...) as the errno says, like a put's own write error."""
        with self._lock:
            self._check_open()
            found = self._cat.by_name.get(tier)
            if found is None:
                raise NotFound(f"no tier named {tier!r}")
            self._engine.charge(found, error, need)

    def check_tiers(self) -> None:
        """Probe every tier; mark broken ones FAILED, FULL ones with room again UP, revived ones UP.

        A tier taken out by a media error (EIO, or reported by a worker) stays FAILED until the storage
        is reopened: a disk with bad sectors still passes a write probe and would flap in and out.
        """
        with self._lock:
            self._check_open()
            for tier in self._cat.tiers:
                if tier.sticky:
                    continue
                result = health.probe(tier.layout)
                state, error = result.state, result.error
                if state is TierState.FAILED and result.errno in health.MEDIA_ERRNOS:
                    tier.sticky = True
                    error = f"{error}; {STICKY}"
                still_full = tier.state is TierState.FULL and result.free_bytes < tier.full_need
                if state is TierState.UP and still_full:
                    state, error = TierState.FULL, tier.error
                was = tier.state
                self._engine.set_state(tier, state, error)
                if was is TierState.FAILED and state is not TierState.FAILED:
                    self._engine.revive(tier)

    # ---------------------------------------------------------------- placing objects

    def _choose_tier(self, key: str, size: int, hot: bool, tried: set[int]) -> Tier:
        """The fastest tier that takes new objects, admits this one and can make room for `size` bytes."""
        candidates = [t for t in self._cat.tiers if t.number not in tried and t.state.accepts]
        if not candidates:
            states = ", ".join(f"{t.name} {t.state.value}" for t in self._cat.tiers)
            raise StorageError(f"no tier takes new objects ({states})")
        admitted = [t for t in candidates if hot or t.admission == "all" or t.policy.admits(key)]
        # a tier that does not admit the object is the fallback when none that does can make room
        candidates = admitted + [t for t in candidates if t not in admitted]
        refusal: InsufficientStorage | None = None
        for tier in candidates:
            try:
                self._cat.plan(tier, size, key, replacing=True)
                return tier
            except InsufficientStorage as e:
                refusal = refusal or e
        assert refusal is not None
        raise refusal

    def _commit_put(self, tier: Tier, staged: files.Staged, key: str, hot: bool, pin: bool) -> ObjectInfo:
        if not tier.state.accepts:
            raise _Retry
        moves = self._cat.plan(tier, staged.size, key, replacing=True)
        now = self._clock()
        entry = CatalogEntry(key, key_hash(key), tier.number, staged.size, staged.digest, now, now, hot, pin)
        meta_tmp = ""
        try:
            meta_tmp = self._engine.prepare(tier, entry)  # a full disk fails here, before any change
            old = self._cat.entries.get(key)
            if old is not None:
                self._engine.drop([old])
            self._engine.run(moves)
            self._engine.install(tier, staged.path, meta_tmp, entry)
        except OSError as e:
            self._write_failed(tier, e, staged.size, key)
            raise _Retry from e
        finally:
            if meta_tmp:
                unlink_quiet(meta_tmp)
        return self._cat.info(entry)

    def _write_failed(self, tier: Tier, error: OSError, size: int, key: str) -> None:
        """A put could not write to `tier`: returns if the tier FAILED (try the next one), else raises."""
        state = self._engine.charge(tier, error, size)
        if state is TierState.FAILED:
            return
        if state is TierState.FULL:
            raise StorageError(f"put {key!r}: tier {tier.name} is full: {health.describe(error)}") from error
        raise StorageError(f"put {key!r} on tier {tier.name}: {health.describe(error)}") from error

    def _promote(self, entry: CatalogEntry) -> None:
        self._engine.counter.forget(entry.key)
        upper = self._cat.tiers[entry.tier - 1]
        if not (upper.state.accepts and self._cat.servable(entry)):
            return
        try:
            moves = self._cat.plan(upper, entry.size, entry.key)
        except InsufficientStorage:
            return
        self._engine.run(moves)
        if self._cat.current(entry) and self._engine.move(entry, upper):
            self._engine.promotions += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the store at {self._state_dir} is closed")


def _prepare_tiers(catalog: Catalog) -> set[str]:
    """Create each tier's directories and empty its tmp/; a tier that cannot be prepared is FAILED.

    Returns the tiers whose objects/ directory had to be created: their indexed objects must be checked."""
    recreated: set[str] = set()
    for tier in catalog.tiers:
        if not os.path.isdir(tier.layout.objects_dir):
            recreated.add(tier.name)
        try:
            tier.layout.prepare()
        except OSError as e:
            tier.state, tier.error = TierState.FAILED, health.describe(e)
    return recreated


def _open_index(path: str, catalog: Catalog) -> Index:
    """Open the index, or rebuild it by scanning the tiers if it is missing or cannot be trusted."""
    try:
        return Index.open(path)
    except IndexCorrupt as e:
        if os.path.lexists(path):
            log.warning("rebuilding the storage index by scanning the tiers: %s", e)
        else:
            log.info("no storage index at %s yet: building one by scanning the tiers", path)
    usable = [(t.name, t.layout) for t in catalog.tiers if t.state is not TierState.FAILED]
    rows, errors = scan_tiers(usable)
    for name, error in errors.items():
        tier = catalog.by_name[name]
        tier.state, tier.error = TierState.FAILED, error
    try:
        return Index.create(path, rows)
    except (OSError, IndexCorrupt) as e:
        raise StorageError(f"cannot rebuild the index at {path}: {e}") from e


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise BadRequest(f"storage key must be a non-empty string, got {key!r}")
    try:
        key.encode()
    except UnicodeEncodeError as e:
        raise BadRequest(f"storage key {key!r} is not encodable as UTF-8") from e
