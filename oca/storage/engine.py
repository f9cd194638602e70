"""The mechanics under Store: keep files, the index and the in-memory catalog in step, across faults.

Rules kept here:
- The index is committed before memory changes, and file work at a final name is journalled first
  (`pending` rows: WRITE before a rename into place, DROP before an unlink) and cleared after; `settle`
  finishes journalled work after a crash or when a failed tier comes back. So a crash never leaves a row
  pointing at the wrong bytes, never loses a committed object, and never resurrects a purged one.
- Every move is copy, verify (size and digest), install, then drop the old copy: a failed copy changes
  nothing that is served. A demotion that cannot be done becomes a deletion, so room is still made.
- An OSError is charged to the tier it came from (health.classify): FULL or FAILED; media errors make
  FAILED stick until the storage is reopened.
- The generation is bumped after the index commit of every removal or replacement and every tier state
  change, and only then are old files unlinked. A move (promotion, demotion) does not bump it: the bytes
  are the same, so a worker may keep serving what it holds in memory, and one that opens the old path
  finds it gone and looks the key up again. Bumping on moves would empty every worker's memory cache
  at each promotion.
- Not thread-safe: the Store calls in here only while holding its lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence

from oca.errors import InsufficientStorage, StorageError
from oca.storage import files, health
from oca.storage.catalog import Catalog, CatalogEntry, Tier
from oca.storage.generation import Generation
from oca.storage.index import DROP, WRITE, Index, Pending
from oca.storage.layout import key_hash, unlink_quiet
from oca.storage.model import TierState
from oca.storage.policy import Demote, Move, Place, PromotionCounter

log = logging.getLogger("oca.storage")

STICKY = "out of service until the storage is reopened"


class Engine:
    def __init__(self, catalog: Catalog, index: Index, generation: Generation, counter: PromotionCounter,
                 clock: Callable[[], float]) -> None:
        self.cat, self.index, self.gen, self.counter, self.clock = catalog, index, generation, counter, clock
        self.accessed: dict[str, float] = {}  # last access times not yet written to the index
        # one syncfs per tier shared by the batches staged on it at once (files.Flusher: group commit);
        # thread-safe, so Store.put_files flushes its staged copies without the Store's lock
        self.flushers = {t.number: files.Flusher(t.layout.root) for t in catalog.tiers}
        self.promotions = 0
        self.demotions = 0
        # told (key, why) of each object removed to make room; runs on a storage thread under the Store's lock
        self.on_evicted: Callable[[str, str], None] | None = None

    # ---------------------------------------------------------------- writing objects

    def prepare(self, tier: Tier, entry: CatalogEntry) -> str:
        """Do the part of an install that allocates space, before anything changes: create the fan-out
        directories and stage the sidecar in the tier's tmp/, each fsynced. Returns the staged sidecar's path;
        raises OSError."""
        for parent in tier.layout.ensure_fanout(entry.hash):
            files.fsync_dir(parent)
        return files.stage_bytes(entry.sidecar().to_bytes(), tier.layout.tmp_dir)

    def install(self, tier: Tier, staged_path: str, meta_tmp: str, entry: CatalogEntry) -> None:
        """Rename a verified temp file and its staged sidecar into place on `tier`, journalled; index the
        entry and attach it. Raises OSError or StorageError (the index write failed); either way the files
        are removed again, and a journal row that could not be cleared is settled at the next open."""
        self.place(tier, staged_path, meta_tmp, entry)
        self.cat.attach(entry)

    def place(self, tier: Tier, staged_path: str, meta_tmp: str, entry: CatalogEntry) -> None:
        """`install` without the attach: the files renamed into place and the index row written (the entry's
        tier set to `tier`); memory is the caller's to change."""
        with self.index.transaction():
            self.index.add_pending(tier.name, entry.hash, entry.key, WRITE)
        layout = tier.layout
        try:
            # a sidecar a failed removal left at this name goes first (a replaced object is dropped before):
            # a crash between the renames must not leave the new bytes beside it, which a rebuild would trust
            # (layout.py: a sidecar only beside its bytes); one unlink per install, which has its fsyncs anyway
            unlink_quiet(layout.meta_path(entry.hash))
            os.replace(staged_path, layout.object_path(entry.hash))
            os.replace(meta_tmp, layout.meta_path(entry.hash))
            files.fsync_dir(layout.fanout_dir(entry.hash))
        except OSError:
            with contextlib.suppress(OSError, StorageError):
                layout.remove(entry.hash)
                with self.index.transaction():
                    self.index.clear_pending(tier.name, entry.hash)
            raise
        entry.tier = tier.number
        try:
            with self.index.transaction():
                self.index.put(self.cat.row(entry))
                self.index.clear_pending(tier.name, entry.hash)
        except StorageError:
            # the put failed: store nothing (a journal row left behind is settled at the next open)
            with contextlib.suppress(OSError):
                layout.remove(entry.hash)
            raise

    def journal_writes(self, tier: Tier, entries: Iterable[CatalogEntry]) -> None:
        """Journal WRITE rows, in one index transaction, for new objects a batch is about to write at their
        final names on `tier` (Store.put_files): a crash before `install_many` leaves rows that `settle`
        finishes, adopting an object whose files verify by hash and removing the rest. Raises StorageError."""
        with self.index.transaction():
            self.index.add_pending_many(tier.name, ((e.hash, e.key) for e in entries), WRITE)

    def install_many(self, tier: Tier, entries: Sequence[CatalogEntry], journalled: Iterable[str]) -> None:
        """Index new objects (no key already stored) whose files and sidecars a batch wrote at their final names
        on `tier` and flushed, and clear the batch's journal rows (`journalled`: every hash it journalled,
        stored or not), in one index transaction; then attach them. The index's fsyncs are paid once per batch
        instead of twice per object. Raises StorageError (nothing indexed; the caller removes the files)."""
        with self.index.transaction():
            for entry in entries:
                entry.tier = tier.number
            self.index.put_many(self.cat.row(e) for e in entries)
            self.index.clear_pending_many(tier.name, journalled)
        for entry in entries:
            self.cat.attach(entry)

    def unjournal(self, tier: Tier, hashes: Iterable[str]) -> None:
        """Clear journal rows whose files are gone again (a batch that stored nothing). Raises StorageError."""
        with self.index.transaction():
            self.index.clear_pending_many(tier.name, hashes)

    def write_sidecar(self, tier: Tier, entry: CatalogEntry) -> None:
        layout = tier.layout
        meta_tmp = files.stage_bytes(entry.sidecar().to_bytes(), layout.tmp_dir)
        try:
            os.replace(meta_tmp, layout.meta_path(entry.hash))
        finally:
            unlink_quiet(meta_tmp)
        files.fsync_dir(layout.fanout_dir(entry.hash))

    # ---------------------------------------------------------------- moving and removing objects

    def run(self, moves: Iterable[Move]) -> None:
        """Carry out the evictions of a plan (Place is the caller's)."""
        tiers, get, current = self.cat.tiers, self.cat.entries.get, self.cat.current
        for move in moves:
            if isinstance(move, Place):
                continue
            entry = get(move.key)
            if entry is None:
                continue
            tiers[entry.tier].evictions += 1
            if isinstance(move, Demote):
                if self.move(entry, tiers[move.dst]):
                    self.demotions += 1
                    continue
                if not current(entry):  # the move dropped it (its bytes did not match their digest)
                    continue
            self.drop([entry])
            if self.on_evicted is not None:
                self.on_evicted(entry.key, f"capacity: tier {tiers[entry.tier].name} full")

    def move(self, entry: CatalogEntry, dst: Tier) -> bool:
        """Copy an object to another tier, verified, then drop the old copy. False if it did not move."""
        src = self.cat.tiers[entry.tier]
        try:
            staged = files.stage_copy(src.layout.object_path(entry.hash), dst.layout.tmp_dir,
                                      expect_size=entry.size, expect_digest=entry.digest)
        except files.SourceError as e:
            self.charge(src, e.error)
            return False
        except files.VerifyError as e:  # rotten bytes: never serve them again
            log.warning("dropping %r: its copy on tier %s does not match its digest: %s", entry.key, src.name, e)
            self.drop([entry])
            return False
        except OSError as e:
            self.charge(dst, e, entry.size)
            return False
        meta_tmp = ""
        try:
            moved = entry.moved_to(dst.number)
            meta_tmp = self.prepare(dst, moved)
            with self.index.transaction():
                self.index.add_pending(src.name, entry.hash, entry.key, DROP)
            try:
                self.place(dst, staged.path, meta_tmp, moved)
            except (OSError, StorageError):
                with contextlib.suppress(StorageError), self.index.transaction():
                    self.index.clear_pending(src.name, entry.hash)
                raise
            # the index row says dst now: memory follows, keeping the object's record (Catalog.relocate)
            self.cat.relocate(entry, dst)
        except OSError as e:
            self.charge(dst, e, entry.size)
            return False
        finally:
            unlink_quiet(staged.path)
            if meta_tmp:
                unlink_quiet(meta_tmp)
        self.remove_files(src, [entry.hash])
        return True

    def drop(self, entries: Sequence[CatalogEntry]) -> None:
        """Remove objects: index rows (journalled), then memory, then the generation, then files."""
        if not entries:
            return
        with self.index.transaction():
            for entry in entries:
                self.index.delete(entry.key)
                self.index.add_pending(self.cat.tiers[entry.tier].name, entry.hash, entry.key, DROP)
        for entry in entries:
            self.forget(entry)
        self.gen.bump()
        if len(entries) == 1:  # a capacity eviction: one object, one tier
            self.remove_files(self.cat.tiers[entries[0].tier], [entries[0].hash])
            return
        by_tier: dict[int, list[str]] = {}
        for entry in entries:
            by_tier.setdefault(entry.tier, []).append(entry.hash)
        for number, hashes in sorted(by_tier.items()):
            self.remove_files(self.cat.tiers[number], hashes)

    def forget(self, entry: CatalogEntry) -> None:
        if self.cat.detach(entry):
            self.counter.forget(entry.key)
            self.accessed.pop(entry.key, None)

    def remove_files(self, tier: Tier, hashes: Sequence[str]) -> None:
        """Delete the files at these places, then clear their DROP rows (kept if deleting fails)."""
        if not self.present(tier):
            return
        done: list[str] = []
        try:
            for h in hashes:
                tier.layout.remove(h)
                done.append(h)
            for directory in {tier.layout.fanout_dir(h) for h in done}:
                with contextlib.suppress(FileNotFoundError):
                    files.fsync_dir(directory)
        except OSError as e:
            self.charge(tier, e)
            return
        try:
            with self.index.transaction():
                for h in done:
                    self.index.clear_pending(tier.name, h)
        except StorageError as e:
            log.warning("journal rows for removed files on %s not cleared: %s", tier.name, e)

    def present(self, tier: Tier) -> bool:
        """False, marking the tier FAILED, if its objects directory is gone: "already gone" from an unlink
        there would only mean the disk is away, and the files may come back with it."""
        if tier.state is TierState.FAILED:
            return False
        if not os.path.isdir(tier.layout.objects_dir):
            self.set_state(tier, TierState.FAILED, f"directory missing: {tier.layout.objects_dir}")
            return False
        return True

    def shrink(self, tier: Tier) -> None:
        """Bring a tier back under its capacity (after the capacity was lowered in the config)."""
        if tier.used <= tier.capacity or not tier.state.accepts:
            return
        try:
            moves = self.cat.plan(tier, 0)
        except InsufficientStorage as e:
            log.warning("tier %s holds %d bytes over its capacity: %s", tier.name,
                        tier.used - tier.capacity, e)
            return
        self.run(moves)

    # ---------------------------------------------------------------- faults and recovery

    def charge(self, tier: Tier, error: OSError, need: int = 0) -> TierState | None:
        """Mark the tier FULL or FAILED if the error says so; returns the state it implies (or None)."""
        state = health.classify(error)
        if state is None:
            log.warning("I/O error on tier %s: %s", tier.name, health.describe(error))
            return None
        text = health.describe(error)
        if state is TierState.FULL:
            tier.full_need = max(need, 1)
        elif error.errno in health.MEDIA_ERRNOS:
            tier.sticky = True
            text = f"{text}; {STICKY}"
        if not (state is TierState.FULL and tier.state is TierState.FAILED):
            self.set_state(tier, state, text)
        return state

    def set_state(self, tier: Tier, state: TierState, error: str) -> None:
        if (tier.state, tier.error) == (state, error):
            return
        changed = tier.state is not state
        if changed:
            log.warning("tier %s is now %s%s", tier.name, state.value, f": {error}" if error else "")
        tier.state, tier.error = state, error
        if state is not TierState.UP:
            tier.layout.forget_directories()  # a failed or full disk may come back without them
        try:
            with self.index.transaction():
                self.index.set_tier_state(tier.name, state, error)
        except StorageError as e:
            log.warning("tier state of %s not saved: %s", tier.name, e)
        if changed:
            self.gen.bump()

    def revive(self, tier: Tier) -> None:
        """A FAILED tier probes fine again: forget objects whose files are gone, settle its journal."""
        self.forget_missing(tier)
        self.settle([p for p in self.index.pending() if p.tier == tier.name])
        self.gen.bump()

    def forget_missing(self, tier: Tier) -> None:
        """Drop the objects on `tier` whose file is missing or has the wrong size."""
        lost = []
        for entry in self.cat.on(tier):
            try:
                ok = os.stat(tier.layout.object_path(entry.hash)).st_size == entry.size
            except OSError:
                ok = False
            if not ok:
                lost.append(entry)
        if lost:
            log.warning("tier %s is missing %d of its objects; forgetting them", tier.name, len(lost))
            self.drop(lost)

    def settle(self, pending: Sequence[Pending]) -> None:
        """Finish journalled file work: a WRITE is adopted if its files verify (by hash) and removed if
        not; a DROP's files are removed unless the index (again) holds the key at that place."""
        for p in pending:
            tier = self.cat.by_name.get(p.tier)
            if tier is None or not self.present(tier):
                continue
            entry = self.cat.entries.get(p.key)
            here = entry if entry is not None and entry.tier == tier.number else None
            try:
                if p.intent == WRITE:
                    self._settle_write(tier, p, here)
                elif here is None:
                    tier.layout.remove(p.hash)
            except OSError as e:
                self.charge(tier, e)
                continue
            with self.index.transaction():
                self.index.clear_pending(tier.name, p.hash)

    def _settle_write(self, tier: Tier, p: Pending, here: CatalogEntry | None) -> None:
        meta = tier.layout.read_sidecar(p.hash)
        valid = False
        if meta is not None and meta.key == p.key and key_hash(meta.key) == p.hash:
            try:
                valid = files.hash_file(tier.layout.object_path(p.hash)) == (meta.size, meta.digest)
            except FileNotFoundError:
                valid = False
        if here is not None:
            with self.index.transaction():
                self.index.delete(here.key)
            self.forget(here)
        if not valid or meta is None:
            tier.layout.remove(p.hash)
            return
        other = self.cat.entries.get(p.key)
        if other is not None:
            self.drop([other])
        entry = CatalogEntry(meta.key, p.hash, tier.number, meta.size, meta.digest, meta.stored_at, self.clock(),
                      meta.hot, meta.pinned)
        with self.index.transaction():
            self.index.put(self.cat.row(entry))
        self.cat.attach(entry)

    # ---------------------------------------------------------------- access times

    def touch(self, entry: CatalogEntry, now: float) -> None:
        self.cat.tiers[entry.tier].policy.touch(entry.key)
        self.cat.set_accessed(entry, now)
        self.accessed[entry.key] = now

    def flush_access(self) -> None:
        """Write the batched last access times in one transaction (kept for the next try on failure)."""
        if not self.accessed:
            return
        batch, self.accessed = self.accessed, {}
        try:
            with self.index.transaction():
                self.index.set_accessed(batch)
        except StorageError:
            batch.update(self.accessed)
            self.accessed = batch
            raise
