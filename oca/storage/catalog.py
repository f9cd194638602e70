"""What the owner holds in memory: an entry per stored object, and per tier its state, policy and bytes.

Rules kept here:
- No I/O. `attach` and `detach` are the only ways an entry enters or leaves, and they keep each tier's
  byte count, object count and eviction policy in step with the entries.
- Entries mirror the index rows (the index is written first; see store.py). Only `last_access` may run
  ahead of the index, which is written in batches.
- An entry on a FAILED tier is kept (the tier may come back) but is not servable.
- `titles` counts objects and bytes per title as entries come and go (see titles.py), so what a title
  holds is known without listing the entries.
- Each tier counts its pinned bytes (`set_pinned` is the only way a stored entry's pin changes), so whether a
  tier can make room for an object is known without planning the evictions (`can_place`): a put plans once,
  when it commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oca.config.model import TierConfig
from oca.errors import InsufficientStorage
from oca.storage.index import Row
from oca.storage.layout import Sidecar, TierLayout
from oca.storage.model import ObjectInfo, TierState
from oca.storage.policy import EvictionPolicy, Move, TierSpace, plan_placement
from oca.storage.titles import TitleCounts


@dataclass(slots=True)
class CatalogEntry:
    """The owner's in-memory record of one stored object: its index row, with the tier by number and the key's
    file-name hash."""

    key: str
    hash: str
    tier: int
    size: int
    digest: str
    stored_at: float
    last_access: float
    hot: bool
    pinned: bool

    def sidecar(self) -> Sidecar:
        return Sidecar(self.key, self.size, self.digest, self.stored_at, self.hot, self.pinned)

    def moved_to(self, tier: int) -> CatalogEntry:
        return CatalogEntry(self.key, self.hash, tier, self.size, self.digest, self.stored_at, self.last_access,
                     self.hot, self.pinned)


class Tier:
    def __init__(self, number: int, config: TierConfig, policy: EvictionPolicy) -> None:
        self.number, self.name, self.capacity, self.policy = number, config.name, config.capacity, policy
        self.admission = config.admission
        self.layout = TierLayout(config.path)
        self.used = 0
        self.objects = 0
        self.state = TierState.UP
        self.error = ""
        self.full_need = 0  # free bytes a health check must see before a FULL tier takes objects again
        self.sticky = False  # FAILED by a media error: health checks do not bring it back (a reopen does)
        self.evictions = 0
        self.pinned = 0  # bytes of pinned objects: the part of the capacity no eviction can free


class Catalog:
    def __init__(self, tiers: Sequence[TierConfig], policy: Callable[[], EvictionPolicy]) -> None:
        self.tiers = [Tier(i, t, policy()) for i, t in enumerate(tiers)]
        self.by_name = {t.name: t for t in self.tiers}
        self.entries: dict[str, CatalogEntry] = {}
        self.titles = TitleCounts(len(self.tiers))
        entries = self.entries
        # made once: a plan asks these for every victim
        self._size_of: Callable[[str], int] = lambda k: entries[k].size
        self._is_pinned: Callable[[str], bool] = lambda k: entries[k].pinned

    def attach(self, entry: CatalogEntry) -> None:
        assert entry.key not in self.entries, entry.key
        tier = self.tiers[entry.tier]
        self.entries[entry.key] = entry
        tier.policy.add(entry.key, entry.size)
        tier.used += entry.size
        tier.objects += 1
        self.titles.add(entry.key, entry.tier, entry.size)
        if entry.pinned:
            tier.pinned += entry.size

    def detach(self, entry: CatalogEntry) -> bool:
        """Remove the entry if it is the current one for its key; False if it was not."""
        if self.entries.get(entry.key) is not entry:
            return False
        tier = self.tiers[entry.tier]
        del self.entries[entry.key]
        tier.policy.remove(entry.key)
        tier.used -= entry.size
        tier.objects -= 1
        self.titles.remove(entry.key, entry.tier, entry.size)
        if entry.pinned:
            tier.pinned -= entry.size
        return True

    def set_pinned(self, entry: CatalogEntry, pinned: bool) -> None:
        if entry.pinned != pinned and self.current(entry):
            self.tiers[entry.tier].pinned += entry.size if pinned else -entry.size
        entry.pinned = pinned

    def current(self, entry: CatalogEntry) -> bool:
        return self.entries.get(entry.key) is entry

    def servable(self, entry: CatalogEntry) -> bool:
        return self.tiers[entry.tier].state.serves

    def on(self, tier: Tier) -> list[CatalogEntry]:
        return [e for e in self.entries.values() if e.tier == tier.number]

    def info(self, entry: CatalogEntry) -> ObjectInfo:
        tier = self.tiers[entry.tier]
        return ObjectInfo(entry.key, tier.name, tier.layout.object_path(entry.hash), entry.size,
                          entry.digest, entry.stored_at, entry.hot, entry.pinned)

    def row(self, entry: CatalogEntry) -> Row:
        return Row(entry.key, self.tiers[entry.tier].name, entry.size, entry.digest, entry.stored_at,
                   entry.last_access, entry.hot, entry.pinned)

    def refusal(self, target: Tier, size: int, key: str | None) -> InsufficientStorage | None:
        """Why `plan(target, size, key, replacing=True)` would raise InsufficientStorage, or None if it would
        succeed (`target` takes new objects), without planning: the free bytes plus every unpinned object's
        (the policy's victims when it cannot free enough: see EvictionPolicy.victims) must reach `size`, and the
        key's own copy counts as free (it goes away first), pinned or not."""
        if size > target.capacity:
            return InsufficientStorage(
                f"object of {size} bytes is larger than tier {target.name} ({target.capacity} bytes)")
        stuck = target.pinned
        own = self.entries.get(key) if key is not None else None
        if own is not None and own.pinned and own.tier == target.number:
            stuck -= own.size
        if target.capacity - stuck >= size:
            return None
        return InsufficientStorage(
            f"tier {target.name} cannot free {size} bytes: the rest of its {target.capacity} bytes is pinned")

    def plan(self, target: Tier, size: int, key: str | None = None, *, replacing: bool = False) -> list[Move]:
        """plan_placement over the current tiers. With `replacing`, the key's existing copy counts as gone."""
        current = self.entries.get(key) if key is not None and replacing else None
        spaces = [TierSpace(t.name, t.capacity, t.used, t.state.accepts, t.policy) for t in self.tiers]
        return plan_placement(spaces, size, target.number, size_of=self._size_of, is_pinned=self._is_pinned,
                              key=key, current=current.tier if current else None)
