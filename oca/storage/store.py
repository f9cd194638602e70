"""Store: the single owner of the tiers and the index; every write, move and eviction happens here.

Rules kept here:
- One owner per state_dir (lock.py). One lock guards the catalog, the index and the engine; get/list
  only read memory. status and title_changes read counters kept as objects come and go, without the lock,
  so health answers never wait behind a commit (nothing periodic walks every object).
- New objects land on the fastest tier that admits them (`admission: returning` lets in only what the
  policy remembers, or `hot` objects; such a tier is the fallback when no tier that admits can make room);
  an evicted object moves down while its policy finds it worth keeping (an exclusive hierarchy: one cache
  across the tiers). A tier that is not UP is skipped, and a put whose tier fails under it (EIO, directory
  gone) moves on to the next. A full disk
  (ENOSPC) fails that put with StorageError and marks the tier FULL; nothing stored is lost.
- The sum of object sizes on a tier never exceeds its capacity: bytes count only when an object is
  committed, and every commit is preceded by the evictions `plan_placement` returned for it. Choosing a
  tier plans nothing (the catalog's byte counts say whether a tier can make room), so a put plans once.
- Promotion: `config.promotion.hits` hits within `config.promotion.window` of the first of them move an
  unpinned object up one tier. Pinned objects are never evicted, demoted or promoted; they stay where the
  fill plan put them.
- A background load (open) streams the index into memory a chunk per hold of the lock; every call runs between
  two chunks and ends as it would after the whole load (see _load).
- Blocking: put_file copies without holding the lock; promotions and demotions copy while holding it.
  Call put_file, record_hits, evict*, set_pinned and check_tiers from an executor, not an event loop.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from types import TracebackType

from oca.config.model import StorageConfig
from oca.errors import BadRequest, InsufficientStorage, NotFound, OcaError, StorageError
from oca.storage import files, health, lock
from oca.storage.catalog import PINNED, Catalog, CatalogEntry, Tier
from oca.storage.engine import STICKY, Engine
from oca.storage.generation import GENERATION_NAME, Generation
from oca.storage.index import Index, IndexCorrupt, RowValues, Snapshot, index_path
from oca.storage.layout import key_hash, unlink_quiet
from oca.storage.model import ObjectInfo, TierState
from oca.storage.planned import PlannedPolicy
from oca.storage.policy import EvictionPolicy, Move, PromotionCounter, demand_reserves
from oca.storage.scan import scan_tiers
from oca.storage.titles import TitleFeed

log = logging.getLogger("oca.storage")


class _Retry(Exception):
    """The chosen tier failed under a put: try the next one."""


# rows a background load attaches per hold of the lock: ~10 ms of the master's CPU (a load costs ~10 us a row:
# 9-11 s of CPU at 10^6), so a put, a purge or a listing that arrives during the load waits about that long at
# most, not the whole load (tens of seconds at 10^6 rows); a hold per 1,024 rows costs nothing measurable
LOAD_CHUNK = 1024


def _row_entry(row: RowValues, numbers: Mapping[str, int]) -> CatalogEntry:
    """The catalog record of an index row (`numbers`: tier name -> tier number). The file-name hash is not kept
    (Entries recomputes it), so none is computed here."""
    key, on, size, digest, stored_at, last_access, hot, pinned = row
    return CatalogEntry(key, "", numbers[on], size, digest, stored_at, last_access, bool(hot), bool(pinned))


class _LoadStopped(Exception):
    """close() was called during a background load."""


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
        self._loading = False  # a background load is running (see open and _load)
        self._stop_loading = False  # close() asks a background load to give up
        self._load_error = ""
        self._load_chunk = LOAD_CHUNK
        self._loader: threading.Thread | None = None
        # While loading: the snapshot whose rows are being attached; whether the tiers' byte counts include
        # every indexed object yet; the keys whose records were taken from the index out of turn (_take), whose
        # snapshot rows are stale; hit reports held back until the load ends (with their time); the tiers
        # that came back from FAILED during the load (their files are checked at its end).
        self._snapshot: Snapshot | None = None
        self._snapshotted = False
        self._counted = True
        self._fresh: dict[str, tuple[int, str, int, int] | None] = {}  # key -> its deferred policy add
        self._early_hits: builtins.list[tuple[int, float, dict[str, int]]] = []  # (held-back adds before, when, hits)
        self._revived: set[str] = set()
        self._loaded_more = threading.Condition(self._lock)  # notified after each chunk and at the load's end
        # keys a batch is writing at their final names (put_files); a put of one waits until it is released
        self._claimed: set[str] = set()
        self._unclaimed = threading.Condition(self._lock)
        # per tier, bytes pins must leave to the policy's new objects (fill_target's hot pre-positioned files)
        self._reserves = demand_reserves(config.policy, [t.capacity for t in catalog.tiers])

    # ---------------------------------------------------------------- opening and closing

    @classmethod
    def open(cls, config: StorageConfig, clock: Callable[[], float] = time.time, *,
             policy: Callable[[], EvictionPolicy] | None = None, background: bool = False,
             load_chunk: int = LOAD_CHUNK) -> Store:
        """Take ownership of `config.state_dir`, prepare the tiers and load (or rebuild) the index.

        `policy` makes one eviction policy per tier (`config.policy` unless told otherwise). With `background`,
        return as soon as the index is open (rebuilt if it had to be) and load memory from it on a thread of
        its own (see _load): the index is servable at every commit (see engine.py), so workers serve hits from
        it at once, and every other call goes on during the load, waiting at most for one chunk of
        `load_chunk` rows. `status` answers meanwhile, with `loading` true and the object counts still
        growing. A load that fails leaves the store refusing writes (StorageError)."""
        if load_chunk < 1:
            raise ValueError(f"load_chunk must be at least 1, got {load_chunk}")
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
            catalog = Catalog(tiers, policy) if policy else Catalog.with_policy(tiers, config.policy)
            suspect = _prepare_tiers(catalog)
            generation = Generation(os.path.join(state_dir, GENERATION_NAME), writable=True)
            index = _open_index(index_path(state_dir), catalog)
            counter = PromotionCounter(config.promotion.hits, config.promotion.window, clock)
            store = cls(config, clock, catalog, Engine(catalog, index, generation, counter, clock), lock_fd)
            store._load_chunk = load_chunk
            if background:
                store._load_in_background(suspect)
            else:
                store._loading = True  # the same load, with nobody to wait for it
                store._load(suspect)
        except BaseException:
            if index is not None:
                index.close()
            if generation is not None:
                generation.close()
            os.close(lock_fd)
            raise
        return store

    def _load_in_background(self, suspect: set[str]) -> None:
        """Start `_load` on its own thread and return once that thread holds the lock (so nothing is stored or
        removed before the journal is settled and the snapshot taken)."""
        holding = threading.Event()

        def load() -> None:
            try:
                self._load(suspect, holding)
            except _LoadStopped:
                pass
            except Exception as e:  # no caller to raise to: every later write reports it (_check_open)
                if not self._stop_loading:  # else close() interrupted the index read
                    self._load_error = str(e) or type(e).__name__
                    log.error("storage not loaded from the index: %s", self._load_error)
            finally:
                with self._lock:
                    self._end_loading(hits=False)  # did nothing if the load ended well
                holding.set()  # a load that failed before it took the lock

        self._loading = True
        self._loader = threading.Thread(target=load, name="oca-storage-load", daemon=True)
        self._loader.start()
        holding.wait()

    def _load(self, suspect: set[str], holding: threading.Event | None = None) -> None:
        """Fill memory from the index, settle the journal, check the tiers, enforce capacities.

        Streamed, so that a background load never holds the lock for long (issue 20: at 10^6 objects one hold
        of 12-37 s kept imports, purges and listings waiting):
        1. Under the lock: forget tiers no longer configured, settle the journal (taking the records of the
           keys it names out of turn: `_take`), and take a snapshot of the index (index.Snapshot).
        2. Without it: the snapshot's byte totals per tier, added to the tiers' counts (under the lock), so a
           placement during the load sees every indexed byte and the store stays within capacity; puts wait for
           this (`_await_counts`), nothing else does.
        3. The snapshot's rows, least recently accessed first as before, read and sorted without the lock and
           attached `_load_chunk` at a time, one lock hold each. Between two chunks any call may run. Whatever
           it changes, the end state is the one a load followed by that call leaves, because every call that
           changes an object first takes its record from the index (`_take`, which notes the key in `_fresh`):
           the index is current for every key (every change commits there first), and no key changes before
           its record is in memory, so a row of the snapshot whose key is not in `_fresh` is still exactly the
           index's row, and one whose key is (replaced, purged, re-pinned, evicted since) is skipped. Reads
           answer from the index for keys not loaded yet; hit reports are held back and counted at the end, so
           the eviction order they build is the one a load followed by those hits builds.
        4. Under the lock: check the tiers, enforce capacities, count the held-back hits."""
        cat, index = self._cat, self._index
        with self._lock:
            if holding is not None:
                holding.set()
            with index.transaction():
                dropped = index.drop_tiers_except([t.name for t in cat.tiers])
            if dropped:
                log.warning("forgot %d objects on tiers no longer configured", dropped)
            suspect |= {name for name, state in index.tier_states().items() if state is TierState.FAILED}
            pending = index.pending()
            for p in pending:
                self._take(p.key)
            self._engine.settle(pending)  # first, as a load without interleaving did before any put
            snapshot = self._snapshot = index.snapshot()
            self._snapshotted, self._counted = True, False
            self._fresh = dict.fromkeys(cat.entries)  # settled from the index above: their snapshot rows are theirs
            cat.held_back = []
            before = [(t.used, t.pinned) for t in cat.tiers]
        try:
            totals = snapshot.totals()
            with self._lock:
                self._check_loading()
                for tier, (used, pinned) in zip(cat.tiers, before, strict=True):
                    # objects attached since the snapshot (counted) and snapshot rows attached since (not
                    # counted: their bytes are the totals') both come out right whatever the order
                    indexed, indexed_pinned = totals.get(tier.name, (0, 0))
                    tier.used += indexed - used
                    tier.pinned += indexed_pinned - pinned
                self._counted = True
                self._loaded_more.notify_all()
            rows = snapshot.rows()
            while chunk := builtins.list(islice(rows, self._load_chunk)):  # read and sorted without the lock
                with self._lock:
                    self._check_loading()
                    self._attach_loaded(chunk)
                    self._loaded_more.notify_all()
        finally:
            self._snapshot = None
            snapshot.close()
        with self._lock:
            self._check_loading()
            for name in suspect | self._revived:  # FAILED or recreated (or back during the load): check files
                if cat.by_name[name].state is not TierState.FAILED:
                    self._engine.forget_missing(cat.by_name[name])
            with index.transaction():
                for tier in cat.tiers:
                    index.set_tier_state(tier.name, tier.state, tier.error)
            self.check_tiers()
            for tier in cat.tiers:
                self._engine.shrink(tier)
            self._gen.bump()
            self._end_loading()

    def _replay_held_back(self, hits_too: bool) -> None:
        """Under the lock, at a load's end: the policy adds held back during it (Catalog.held_back) and the hit
        reports, in the order they came, as if they had come after the load. A hit counts for an object only if
        it was stored by then (not for a copy stored after the hit)."""
        held, early = self._cat.stop_holding_back(), self._early_hits if hits_too else []
        self._early_hits = []
        add_held, entries = self._cat.add_held, self._cat.entries
        done = 0
        for upto, when, hits in early:
            for one in held[done:upto]:
                add_held(one)
            done = upto
            slots, stored_at = entries.slots, entries.stored_at
            self._count_hits({key: n for key, n in hits.items()
                              if (slot := slots.get(key)) is not None and stored_at[slot] <= when}, when)
        for one in held[done:]:
            add_held(one)

    def _attach_loaded(self, rows: Sequence[RowValues]) -> None:
        """Attach a chunk of the snapshot's rows, but those whose keys were taken out of turn (see _load)."""
        numbers = {t.name: t.number for t in self._cat.tiers}
        attach, fresh, add_held = self._cat.attach, self._fresh, self._cat.add_held
        for row in rows:
            if row[0] in fresh:
                taken = fresh[row[0]]
                if taken is not None:  # taken out of turn and maybe changed since: its turn in the policy is now
                    add_held(taken)
                continue
            attach(_row_entry(row, numbers), counted=True, loaded=True)

    def _take(self, key: str) -> None:
        """While loading: give `key` its record now, from its index row, if it has one and its chunk has not
        come yet; the chunk will skip it. Call under the lock before anything that may change `key`."""
        if not self._loading or key in self._fresh or key in self._cat.entries:
            return
        row = self._index.get(key)
        if row is not None:
            self._attach_row(row)

    def _take_prefix(self, prefix: str) -> None:
        """`_take` of every indexed key starting with `prefix` (a range of the index: O(matching))."""
        if not self._loading:
            return
        entries, fresh = self._cat.entries, self._fresh
        for row in self._index.starting_with(prefix):
            if row[0] not in fresh and row[0] not in entries:
                self._attach_row(row)

    def _attach_row(self, row: RowValues) -> None:
        """Attach an object from its index row out of turn. After the snapshot: its bytes are in the totals
        (once they are added), and its policy add waits for its chunk (the order a whole load gives), made then
        if the record is still the one attached here on the same tier; before (settling): as any attach."""
        entry = _row_entry(row, {row[1]: self._cat.by_name[row[1]].number})
        later = self._snapshotted
        self._cat.attach(entry, counted=later, unranked=later)
        self._fresh[entry.key] = (entry.tier, entry.key, entry.size, entry.serial) if later else None

    def _check_loading(self) -> None:
        if self._stop_loading or self._closed:
            raise _LoadStopped

    def _end_loading(self, hits: bool = True) -> None:
        """Under the lock: the load is over (done, or with `hits` False failed or stopped); wake whoever waits
        for it."""
        if not self._loading:
            return
        self._loading, self._counted, self._snapshotted = False, True, False
        self._replay_held_back(hits)
        self._fresh, self._revived = {}, set()
        self._loaded_more.notify_all()

    def _await_counts(self) -> None:
        """Under the lock: wait until the tiers' byte counts include every indexed object (a background load's
        step 2): a placement decided before would not see them and could fill a tier past its capacity."""
        while not self._counted:
            self._loaded_more.wait()
            self._check_open()

    def close(self) -> None:
        """Save last access times and give up ownership (a background load gives up first). Idempotent."""
        self._stop_loading = True
        snapshot = self._snapshot
        if snapshot is not None:
            snapshot.interrupt()  # the first row of 10^7 waits for SQLite's sort by last access: ~20 s
        loader = self._loader
        if loader is not None and loader is not threading.current_thread():
            loader.join()  # it stops at its next chunk: the snapshot is closed before the index is
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._engine.flush_access()
            except StorageError as e:
                log.warning("last access times not saved: %s", e)
            self._index.close(clean=True)
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
            return self._lookup(key)

    def get_now(self, key: str) -> tuple[bool, ObjectInfo | None]:
        """`get` for a thread that must not block (the master's event loop): (True, what `get` returns) when
        the lock is free, (False, None) when another thread holds it (an install's fsyncs, an eviction).
        O(1): a dict lookup under the lock, taken only if nobody holds it."""
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            return True, self._lookup(key)
        finally:
            self._lock.release()

    def _lookup(self, key: str) -> ObjectInfo | None:
        entry = self._cat.entries.get(key)
        if entry is None:
            if self._loading:  # not loaded yet, or not stored: the index is current for every key (see _load)
                row = self._index.get(key)
                return None if row is None else self._row_info(row)
            return None
        if not self._cat.servable(entry):
            return None
        return self._cat.info(entry)

    def _row_info(self, row: RowValues) -> ObjectInfo | None:
        """What `_lookup` answers for an index row (None on a tier that does not serve)."""
        key, on, size, digest, stored_at, _, hot, pinned = row
        tier = self._cat.by_name[on]
        if not tier.state.serves:
            return None
        return ObjectInfo(key, tier.name, tier.layout.object_path(key_hash(key)), size, digest, stored_at,
                          bool(hot), bool(pinned))

    def lookup(self, keys: Iterable[str]) -> builtins.list[ObjectInfo]:
        """The objects stored as any of `keys` (absent keys and objects on a FAILED tier left out), in the
        order asked. O(len(keys)), however many objects the store holds: the fill job diffs its plan with it."""
        with self._lock:
            found = (self._lookup(key) for key in keys)
            return [info for info in found if info is not None]

    def pinned(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every servable pinned object whose key starts with `prefix`, sorted by key. O(pinned objects).
        During a background load it waits for the end of it (the pinned ones are known only then)."""
        with self._lock:
            while self._loading:
                self._loaded_more.wait()
            return self.lookup(sorted(k for k in self._cat.pinned_keys if k.startswith(prefix)))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every servable object whose key starts with `prefix`, sorted by key. During a background load, read
        from the index (a range of its keys), which is current for every key (see _load)."""
        with self._lock:
            if self._loading:
                found_rows = (self._row_info(row) for row in self._index.starting_with(prefix))
                return [info for info in found_rows if info is not None]
            found = sorted((e for e in self._cat.matching(prefix) if self._cat.servable(e)), key=lambda e: e.key)
            return [self._cat.info(e) for e in found]

    def status(self) -> dict[str, object]:
        """Counters only, read without the lock: each is kept up to date as objects come and go, and each
        read is atomic, so /status and /healthz never wait behind an index commit or an eviction (at worst
        two fields are a moment apart). Safe to call from any thread, the event loop's included."""
        tiers = self._cat.tiers
        return {
            "loading": self._loading,
            "objects": len(self._cat.entries),
            "generation": self._gen.value,
            "tiers": [{"name": t.name, "path": t.layout.root, "capacity": t.capacity, "used": t.used,
                       "objects": t.objects, "state": t.state.value, "error": t.error} for t in tiers],
            "promotions": self._engine.promotions,
            "demotions": self._engine.demotions,
            "evictions": {t.name: t.evictions for t in tiers},
        }

    def title_changes(self) -> TitleFeed:
        """The titles whose servable objects or bytes changed since the last call (every title on the first
        call, or after a tier started or stopped serving). O(changes), without the store's lock: safe to
        call from any thread, the event loop's included."""
        return self._cat.titles.take([t.state.serves for t in self._cat.tiers])

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
                self._take(key)
                self._await_counts()
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

    def put_files(self, items: Sequence[tuple[str, str]], *, hot: bool = False, pin: bool = False,
                  sizes: Sequence[int] | None = None) -> builtins.list[ObjectInfo | OcaError]:
        """Copy many (src, key) in, as put_file does each, with the index written once for the batch: the
        batch's names are journalled, each copy and sidecar is written at its final name without the lock and
        the tier flushed after each kind (syncfs), then one lock hold makes room for the whole batch and
        indexes it (Engine.install_many). `sizes`, when the caller knows them (a directory walk's lstat),
        saves a stat per file; a file of another size is refused. Returns, per item in order, its ObjectInfo
        or the error that refused it. A key already stored or being stored, a key twice in the batch, a batch
        no tier can make room for at once, or a tier failing under the batch: those items go through put_file
        one by one, so every outcome is the one put_file would give."""
        results: builtins.list[ObjectInfo | OcaError | None] = [None] * len(items)
        known: dict[int, int] = {}
        for i, (src, key) in enumerate(items):
            try:
                _check_key(key)
                known[i] = sizes[i] if sizes is not None else os.stat(src).st_size
            except OcaError as e:
                results[i] = e
            except OSError as e:
                results[i] = StorageError(f"cannot read {src}: {health.describe(e)}")
        one_by_one: builtins.list[int] = []
        try:
            self._put_batch(items, known, hot, pin, results, one_by_one)
        finally:
            for i in sorted(one_by_one):  # in the batch's order, whichever check sent each one here
                src, key = items[i]
                try:
                    results[i] = self.put_file(src, key, hot=hot, pin=pin)
                except OcaError as e:
                    results[i] = e
        return [r if r is not None else StorageError("not stored") for r in results]

    def _put_batch(self, items: Sequence[tuple[str, str]], sizes: dict[int, int], hot: bool, pin: bool,
                   results: builtins.list[ObjectInfo | OcaError | None], one_by_one: builtins.list[int]) -> None:
        """put_files' fast path: fills `results` for what it stores or refuses, `one_by_one` with the rest.

        Files are written at their final names, never renamed, and that keeps the crash guarantees because:
        - the names are claimed and journalled (WRITE rows) under the lock before any byte is written: no other
          put writes a claimed key (`_commit_put` waits for the claim), and a crash leaves rows that the next
          open settles (an object whose sidecar and bytes verify by hash is adopted, anything else removed);
        - every object is flushed (syncfs) before any sidecar of the batch is written, and the sidecars are
          flushed before the index row: a scan (the index lost) finds a valid sidecar only beside whole bytes;
        - nothing is indexed, so nothing is served, before both flushes.
        Per object that is one create, one write and one close for each of the two files (the staging copy
        before cost two renames, two fchmods and two getpids more). Only the claim and the commit hold the
        lock. Which tier takes the batch is read without it (byte counts) and decided again under it
        (`plan` refuses a tier that can no longer make room, and the batch falls back to put_file)."""
        self._check_open()
        seen: set[str] = set()
        batch: builtins.list[int] = []
        stored = self._cat.entries
        for i in sizes:
            key = items[i][1]
            (one_by_one if key in seen or key in stored else batch).append(i)
            seen.add(key)
        try:
            tier = self._choose_tier(None, sum(sizes[i] for i in batch), hot, set())
        except OcaError:
            one_by_one.extend(batch)
            return
        now = self._clock()
        mine: dict[int, CatalogEntry] = {}  # claimed and journalled: this batch alone writes their names
        written: builtins.list[tuple[int, CatalogEntry]] = []
        installed = False
        try:
            with self._lock:
                self._check_open()
                for i in batch:
                    key = items[i][1]
                    self._take(key)  # during a background load: stored, but not loaded yet, counts as stored
                    if key in stored or key in self._claimed:  # stored or being stored meanwhile: one by one
                        one_by_one.append(i)
                    else:
                        mine[i] = CatalogEntry(key, key_hash(key), tier.number, sizes[i], "", now, now, hot, pin)
                self._claimed.update(e.key for e in mine.values())  # before the journal: released in any case
                self._engine.journal_writes(tier, mine.values())
            layout, flusher = tier.layout, self._engine.flushers[tier.number]
            for i, entry in mine.items():
                path = layout.object_path(entry.hash)
                try:
                    layout.ensure_fanout(entry.hash)  # flushed with the objects, not fsynced one by one
                    # an object a failed removal left here goes, and its sidecar before it: flushed with the new
                    # bytes, so a crash before this batch's sidecars never pairs them with it (layout.py)
                    entry.digest = files.copy_new(items[i][0], path, sizes[i], layout.meta_path(entry.hash))
                except files.SourceError as e:
                    results[i] = StorageError(str(e))
                    continue
                except files.VerifyError as e:
                    results[i] = StorageError(f"put {entry.key!r}: {e}")
                    continue
                written.append((i, entry))
            flusher.flush(flusher.ticket())  # the objects durable before any sidecar names them
            for n, (_, entry) in enumerate(written):
                try:
                    files.write_new(layout.meta_path(entry.hash), entry.sidecar().to_bytes())
                except OSError:
                    for _, unwritten in written[n:]:  # those without a sidecar: removed with the rest below
                        unlink_quiet(layout.object_path(unwritten.hash))
                    del written[n:]
                    raise
            flusher.flush(flusher.ticket())
            with self._lock:
                self._check_open()
                if not tier.state.accepts:
                    raise _Retry
                need = sum(e.size for _, e in written)
                while (moves := self._plan(tier, need, None)) is None:  # a background load has more to give
                    self._loaded_more.wait()
                    self._check_open()
                    if not tier.state.accepts:
                        raise _Retry
                self._engine.run(moves)
                self._engine.install_many(tier, [e for _, e in written], (e.hash for e in mine.values()))
                installed = True
                for i, entry in written:
                    results[i] = self._cat.info(entry)
        except (OSError, _Retry, InsufficientStorage, StorageError) as e:
            # the tier failed or filled under the batch, or the index refused it: put_file decides each item
            log.warning("batch of %d objects not stored at once (%s): storing them one by one", len(mine), e)
            one_by_one.extend(i for i in batch if results[i] is None and i not in one_by_one)
        finally:
            self._release_batch(tier, mine, written, installed)

    def _release_batch(self, tier: Tier, mine: dict[int, CatalogEntry],
                       written: builtins.list[tuple[int, CatalogEntry]], installed: bool) -> None:
        """End a batch: unless it was indexed, remove what it wrote and clear its journal rows (a failure here
        leaves them to the next open's settle); then free its keys for other puts."""
        if not mine:
            return
        with self._lock:
            if not installed:
                with contextlib.suppress(OSError):  # a tier failing under it: settled at the next open
                    for _, entry in written:
                        tier.layout.remove(entry.hash)
                with contextlib.suppress(StorageError):
                    self._engine.unjournal(tier, (e.hash for e in mine.values()))
            self._claimed.difference_update(e.key for e in mine.values())
            self._unclaimed.notify_all()

    def fill_target(self, key: str, size: int, hot: bool = False, cold: bool = False) -> tuple[str, str]:
        """(tier name, its temp directory): where an upstream fill of `key` (`size` bytes, 0 if unknown)
        should write its temp file, so that `adopt` can rename it into place on the same filesystem.

        `cold`: a pre-positioned file (a fill plan's). One that is not hot goes to the slowest tier that can
        take it. The fast tier is for demand: S3-FIFO's small queue lives there, and a night's pinned plan
        landing on it leaves new objects no room to prove themselves (loadtest.cachesim --fill). A hot one goes
        to the fastest tier whose pinned bytes, with it, still leave the policy's reserve for new objects
        (policy.demand_reserves), else to the slowest tier that can take it: the plan's hot files are pinned,
        and pinning the small queue's room away cost the replay 0.8 points of day 2's byte hit ratio."""
        _check_key(key)
        with self._lock:
            self._check_open()
            self._take(key)
            self._await_counts()
            if cold:
                if hot:
                    for tier in self._cat.tiers:
                        if (tier.state.accepts and tier.pinned + size <= tier.capacity - self._reserves[tier.number]
                                and self._cat.refusal(tier, size, key) is None):
                            return tier.name, tier.layout.tmp_dir
                for tier in reversed(self._cat.tiers):
                    if tier.state.accepts and self._cat.refusal(tier, size, key) is None:
                        return tier.name, tier.layout.tmp_dir
            tier = self._choose_tier(key, size, hot, set())
            return tier.name, tier.layout.tmp_dir

    def adopt(self, path: str, key: str, *, tier: str, size: int, digest: str, hot: bool = False,
              pin: bool = False) -> ObjectInfo:
        """Take a fully written and fsynced temp file (made in `fill_target`'s directory) as `key`, renamed into
        place without a copy. If that tier cannot take it any more, the file is copied to another tier.
        The temp file is gone afterwards, whatever happens."""
        _check_key(key)
        renamed = False
        try:
            with self._lock:
                self._check_open()
                found = self._cat.by_name.get(tier)
                if found is None:
                    raise StorageError(f"no tier named {tier!r}")
                try:
                    info = self._commit_put(found, files.Staged(path, size, digest), key, hot, pin)
                    renamed = True  # into place: no unlink (a syscall per fill) needed
                    return info
                except _Retry:
                    pass
            return self.put_file(path, key, hot=hot, pin=pin, digest=digest)
        finally:
            if not renamed:
                unlink_quiet(path)

    def evict(self, key: str) -> bool:
        """Remove the object stored as `key` (on any tier, even a FAILED one); False if there is none."""
        with self._lock:
            self._check_open()
            self._take(key)
            entry = self._cat.entries.get(key)
            if entry is not None:
                self._engine.drop([entry])
            return entry is not None

    def evict_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; returns how many."""
        with self._lock:
            self._check_open()
            self._take_prefix(prefix)
            doomed = self._cat.matching(prefix)
            self._engine.drop(doomed)
            return len(doomed)

    def watch_evictions(self, callback: Callable[[str, str], None] | None) -> None:
        """Call `callback(key, why)` for each object removed to make room (capacity evictions, not purges);
        it runs on a storage thread holding the Store's lock: hand over, don't work (oca.fetch.history).
        Without the lock (one attribute store is atomic), so start-up does not wait for a background load."""
        self._engine.on_evicted = callback

    def set_pinned(self, key: str, pinned: bool) -> ObjectInfo:
        """Pin (never evict, demote or promote) or unpin an object; recorded in its sidecar too."""
        with self._lock:
            self._check_open()
            self._take(key)
            entry = self._cat.entries.get(key)
            if entry is None:
                raise NotFound(f"no stored object {key!r}")
            if entry.pinned != pinned:
                tier = self._cat.tiers[entry.tier]
                self._cat.set_pinned(entry, pinned)
                try:
                    self._engine.write_sidecar(tier, entry)
                    with self._index.transaction():
                        self._index.set_pinned(key, pinned)
                except OSError as e:
                    self._cat.set_pinned(entry, not pinned)
                    self._engine.charge(tier, e)
                    raise StorageError(f"cannot pin {key!r} on tier {tier.name}: {health.describe(e)}") from e
                except StorageError:
                    self._cat.set_pinned(entry, not pinned)
                    raise
            return self._cat.info(entry)

    def set_fill_scores(self, scores: Mapping[str, float]) -> None:
        """The fill plan's per-file predictions (oca/storage/planned.py): planned keys outrank the rest on
        every tier, lowest score evicted first, until the next call replaces them ({} ends the plan)."""
        with self._lock:
            self._check_open()
            planned = dict(scores)
            entries = self._cat.entries
            held: list[list[str]] = [[] for _ in self._cat.tiers]
            for key in planned:  # only planned keys can move between a tier's policy and its plan
                entry = entries.get(key)
                if entry is not None:
                    held[entry.tier].append(key)
            for tier in self._cat.tiers:
                if not isinstance(tier.policy, PlannedPolicy):
                    if not planned:
                        continue
                    tier.policy = PlannedPolicy(tier.policy, self._size_of)
                tier.policy.replan(planned, held[tier.number])

    def fill_score(self, key: str) -> float | None:
        """The fill plan's score of a stored key (`oca cache why`); None when no plan in force names it."""
        with self._lock:
            entry = self._cat.entries.get(key)
            if entry is None and self._loading:  # not loaded yet: the index says on which tier
                row = self._index.get(key)
                policy = self._cat.by_name[row[1]].policy if row is not None else None
            else:
                policy = self._cat.tiers[entry.tier].policy if entry is not None else None
            return policy.score(key) if isinstance(policy, PlannedPolicy) else None

    def record_hits(self, hits: Mapping[str, int]) -> None:
        """Note reads reported by workers: LRU order, last access (saved in batches), promotion."""
        with self._lock:
            if self._closed or self._load_error:  # _check_open's test, inline: a report per hit at worst
                self._check_open()
            now = self._clock()
            if self._loading:  # counted when the load ends, as if they came after it (see _load)
                self._early_hits.append((len(self._cat.held_back or ()), now, dict(hits)))
                return
            self._count_hits(hits, now)
            if now - self._last_flush >= self.config.access_flush_interval:
                self._last_flush = now
                self._engine.flush_access()
                self._engine.counter.prune()

    def _count_hits(self, hits: Mapping[str, int], now: float) -> None:
        """record_hits' work, under the lock: LRU order, last access, promotion."""
        earned: builtins.list[CatalogEntry] | None = None
        # Engine.touch inlined, and the lookups hoisted: this loop runs once per hit the box serves
        entries, tiers, accessed = self._cat.entries, self._cat.tiers, self._engine.accessed
        slots, on_tier, flags, access = entries.slots, entries.tier, entries.flags, entries.access
        counted = self._engine.counter.hit
        for key, count in hits.items():
            slot = slots.get(key)
            if slot is None or count <= 0:
                continue
            tier = on_tier[slot]
            tiers[tier].policy.touch(key)
            access[slot] = accessed[key] = now
            if tier and not flags[slot] & PINNED and counted(key, count, now):
                earned = earned or []
                earned.append(entries.entry(key, slot))
        for entry in earned or ():
            if self._cat.current(entry):
                self._promote(entry)

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
                    if self._loading:  # the journal's keys loaded first; the tier's files checked at the end
                        self._revived.add(tier.name)
                        for p in self._index.pending():
                            if p.tier == tier.name:
                                self._take(p.key)
                    self._engine.revive(tier)

    # ---------------------------------------------------------------- placing objects

    def _choose_tier(self, key: str | None, size: int, hot: bool, tried: set[int]) -> Tier:
        """The fastest tier that takes new objects, admits this one and can make room for `size` bytes.

        A tier that does not admit the object is the fallback when none that does can make room. With no `key`
        (a batch of new objects), only tiers that admit everything count as admitting. Nothing is
        planned here (`refusal` answers from byte counts): `_commit_put` plans once, when it commits."""
        refuse = self._cat.refusal
        first: InsufficientStorage | None = None
        fallback: builtins.list[Tier] = []
        for tier in self._cat.tiers:  # one pass, no lists: every miss comes here
            if tier.number in tried or not tier.state.accepts:
                continue
            if hot or tier.admission == "all" or (key is not None and tier.policy.admits(key)):
                refusal = refuse(tier, size, key)
                if refusal is None:
                    return tier
                first = first or refusal
            else:
                fallback.append(tier)
        if first is None and not fallback:
            states = ", ".join(f"{t.name} {t.state.value}" for t in self._cat.tiers)
            raise StorageError(f"no tier takes new objects ({states})")
        for tier in fallback:
            refusal = refuse(tier, size, key)
            if refusal is None:
                return tier
            first = first or refusal
        assert first is not None
        raise first

    def _commit_put(self, tier: Tier, staged: files.Staged, key: str, hot: bool, pin: bool) -> ObjectInfo:
        while True:
            self._take(key)
            if key in self._claimed:  # a batch writes this key's names now: replace what it stores, after it
                while key in self._claimed:
                    self._unclaimed.wait()
                self._check_open()  # closed meanwhile
            if not tier.state.accepts:
                raise _Retry
            moves = self._plan(tier, staged.size, key)
            if moves is not None:
                break
            self._loaded_more.wait()  # the lock released: anything may change, so everything is asked again
            self._check_open()
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
            meta_tmp = ""  # renamed into place: nothing left to remove (no unlink per fill that would fail)
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

    def _plan(self, tier: Tier, size: int, key: str | None) -> builtins.list[Move] | None:
        """Catalog.plan, `key`'s own copy counted as gone; None when a background load must go on first: the
        tiers' byte counts do not include every indexed object yet, or the records loaded so far cannot free
        enough (the rest of the tier's bytes is not loaded yet: rows come least recently accessed first, so
        the records a plan needs come early). The caller waits for `_loaded_more` and asks again."""
        if not self._counted:
            return None
        try:
            return self._cat.plan(tier, size, key, replacing=True)
        except InsufficientStorage:
            if self._loading:
                return None
            raise

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

    def _size_of(self, key: str) -> int:
        """Bytes of a key the catalog holds: what a fill-aware policy counts its victims by (planned.py)."""
        entries = self._cat.entries
        return entries.size[entries.slots[key]]  # the packed record, without making an entry per victim

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the store at {self._state_dir} is closed")
        if self._load_error:
            raise StorageError(f"the store at {self._state_dir} was not loaded: {self._load_error}")


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
    errors: dict[str, str] = {}

    def slower_copy(key: str, tier: str) -> None:  # the key is on a faster tier too: that copy is kept
        catalog.by_name[tier].layout.remove(key_hash(key))

    try:
        index = Index.create(path, scan_tiers(usable, errors), slower_copy)
    except (OSError, IndexCorrupt) as e:
        raise StorageError(f"cannot rebuild the index at {path}: {e}") from e
    for name, error in errors.items():
        tier = catalog.by_name[name]
        tier.state, tier.error = TierState.FAILED, error
    return index


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise BadRequest(f"storage key must be a non-empty string, got {key!r}")
    if key.isascii():  # O(1) in CPython (a flag of the string): every miss checks its key twice
        return
    try:
        key.encode()
    except UnicodeEncodeError as e:
        raise BadRequest(f"storage key {key!r} is not encodable as UTF-8") from e
