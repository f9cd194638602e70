"""What the owner holds in memory: a packed record per stored object, and per tier its state, policy and bytes.

Rules kept here:
- No I/O. `attach` and `detach` are the only ways an object enters or leaves, `relocate` the only way it
  changes tier (keeping its record: a demotion per miss on a full box), and they keep each tier's byte count,
  object count and eviction policy in step with the records.
- Records mirror the index rows (the index is written first; see store.py). Only the last access may run
  ahead of the index, which is written in batches.
- An object on a FAILED tier is kept (the tier may come back) but is not servable.
- `titles` counts objects and bytes per title as objects come and go (see titles.py), so what a title
  holds is known without listing them.
- Each tier counts its pinned bytes (`set_pinned` is the only way a stored object's pin changes), so whether a
  tier can make room for an object is known without planning the evictions (`refusal`): a put plans once,
  when it commits.
- The keys of the pinned objects are kept as a set (`pinned_keys`), so what is pinned is known in O(pinned),
  not by walking every record: the nightly fill asks for it to unpin what its plan dropped.
- Memory per object is what a box of 10^7 objects can afford (see Entries): the key and its record number in
  one compact table (slots.py: no str, dict entry or int per key), and the record packed in arrays (no Python
  object per field). A CatalogEntry is a copy made
  on demand; `current` tells whether the object it was made from is still the one stored (each attach gets a
  new serial), so an entry held across a lock release is never mistaken for its replacement.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from oca.config.model import TierConfig
from oca.errors import InsufficientStorage
from oca.storage.index import Row
from oca.storage.layout import Sidecar, TierLayout, key_hash
from oca.storage.model import ObjectInfo, TierState
from oca.storage.policy import EvictionPolicy, Move, plan_placement, policy_factory
from oca.storage.slots import KeySlots
from oca.storage.titles import TitleCounts

HOT, PINNED = 1, 2  # Entries.flags bits
_UP = TierState.UP  # by module name: an enum class attribute costs a metaclass look-up, a plan asks per tier
_DIGEST_BYTES = 16  # an xxh3_128 hex digest packed as bytes


@dataclass(slots=True)
class CatalogEntry:
    """One stored object as the owner knows it: its index row, with the tier by number and the key's file-name
    hash. A copy: changing it changes nothing stored (Catalog's methods do). `serial` is set by attach."""

    key: str
    hash: str
    tier: int
    size: int
    digest: str
    stored_at: float
    last_access: float
    hot: bool
    pinned: bool
    serial: int = 0

    def sidecar(self) -> Sidecar:
        return Sidecar(self.key, self.size, self.digest, self.stored_at, self.hot, self.pinned)

    def moved_to(self, tier: int) -> CatalogEntry:
        return CatalogEntry(self.key, self.hash, tier, self.size, self.digest, self.stored_at, self.last_access,
                            self.hot, self.pinned)


class Entries:
    """key -> CatalogEntry, read like a dict, held as one record per object in packed arrays.

    Per object: its KeySlots entry (the key's UTF-8 bytes, 16 bytes of hash and place, a table bucket: the record
    number; the eviction policies find their state by the same number), and 1 + 1 + 8 + 8 + 8 + 4 + 16 = 46 bytes of
    arrays (tier, flags, size, stored_at, last access, serial, digest); the file-name hash is recomputed when
    an entry is made (xxh3 of a short key costs well under a microsecond). A freed record is reused by the
    next object."""

    def __init__(self, numbers: KeySlots | None = None) -> None:
        self.numbers = numbers if numbers is not None else KeySlots()  # shared with the tiers' policies
        self.slots = self.numbers  # key -> record number
        self.tier = bytearray()
        self.flags = bytearray()
        self.size = array("q")
        self.stored_at = array("d")
        self.access = array("d")
        self.serial = array("I")
        self._digest = bytearray()
        self._odd_digest: dict[int, str] = {}  # a digest that is not 32 lowercase hex digits, as given
        self._serials = 0

    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, key: object) -> bool:
        return key in self.slots

    def __iter__(self) -> Iterator[str]:
        return iter(self.slots)

    def get(self, key: str) -> CatalogEntry | None:
        slot = self.slots.get(key)
        return None if slot is None else self.entry(key, slot)

    def __getitem__(self, key: str) -> CatalogEntry:
        return self.entry(key, self.slots[key])

    def items(self) -> Iterator[tuple[str, CatalogEntry]]:
        for key, slot in list(self.slots.items()):
            yield key, self.entry(key, slot)

    def values(self) -> Iterator[CatalogEntry]:
        for key, slot in list(self.slots.items()):
            yield self.entry(key, slot)

    def entry(self, key: str, slot: int) -> CatalogEntry:
        flags = self.flags[slot]
        return CatalogEntry(key, key_hash(key), self.tier[slot], self.size[slot], self.digest(slot),
                            self.stored_at[slot], self.access[slot], bool(flags & HOT), bool(flags & PINNED),
                            self.serial[slot])

    def digest(self, slot: int) -> str:
        odd = self._odd_digest.get(slot) if self._odd_digest else None
        if odd is not None:
            return odd
        return self._digest[slot * _DIGEST_BYTES:(slot + 1) * _DIGEST_BYTES].hex()

    def next_serial(self) -> int:
        self._serials = (self._serials + 1) & 0xFFFFFFFF
        return self._serials

    def add(self, entry: CatalogEntry) -> None:
        """Store a record for `entry` (its key not held yet) and set its serial."""
        self._serials = (self._serials + 1) & 0xFFFFFFFF  # next_serial, inline: an add per miss
        entry.serial = self._serials
        packed = _pack_digest(entry.digest)
        flags = (HOT if entry.hot else 0) | (PINNED if entry.pinned else 0)
        slot = self.numbers.add(entry.key)
        if slot < len(self.tier):
            self.tier[slot], self.flags[slot], self.size[slot] = entry.tier, flags, entry.size
            self.stored_at[slot], self.access[slot] = entry.stored_at, entry.last_access
            self.serial[slot] = entry.serial
            if packed is not None:
                self._digest[slot * _DIGEST_BYTES:(slot + 1) * _DIGEST_BYTES] = packed
        else:
            self.tier.append(entry.tier)
            self.flags.append(flags)
            self.size.append(entry.size)
            self.stored_at.append(entry.stored_at)
            self.access.append(entry.last_access)
            self.serial.append(entry.serial)
            self._digest += packed if packed is not None else bytes(_DIGEST_BYTES)
        if packed is None:
            self._odd_digest[slot] = entry.digest

    def remove(self, key: str) -> None:
        self._odd_digest.pop(self.numbers.remove(key), None)

    def current(self, entry: CatalogEntry) -> bool:
        slot = self.slots.get(entry.key)
        return slot is not None and self.serial[slot] == entry.serial

    def set_flag(self, slot: int, flag: int, on: bool) -> None:
        self.flags[slot] = self.flags[slot] | flag if on else self.flags[slot] & ~flag


def _pack_digest(digest: str) -> bytes | None:
    """The 16 bytes of a 32-digit lowercase hex digest, or None for any other text (kept as given)."""
    if len(digest) != 2 * _DIGEST_BYTES:
        return None
    try:
        packed = bytes.fromhex(digest)
    except ValueError:
        return None
    return packed if packed.hex() == digest else None


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

    @property
    def accepts(self) -> bool:
        """Takes new objects (what the planner asks: policy.TierView)."""
        return self.state is _UP


class Catalog:
    def __init__(self, tiers: Sequence[TierConfig], policy: Callable[[], EvictionPolicy],
                 slots: KeySlots | None = None) -> None:
        """`slots`: the record numbers `policy`'s policies were made with (policy_factory's), if any."""
        self.tiers = [Tier(i, t, policy()) for i, t in enumerate(tiers)]
        self.by_name = {t.name: t for t in self.tiers}
        self.entries = Entries(slots)
        self.titles = TitleCounts(len(self.tiers))
        self.pinned_keys: set[str] = set()  # the keys' own strings: a set slot per pinned object
        # While a background load runs (Store._load): the policy adds of objects that arrive other than by the
        # load, (tier, key, size, serial) in order, made when it ends (`release_held_back`), so that every
        # loaded object stays ahead of them in the eviction order, as when they arrive after the load.
        self.held_back: list[tuple[int, str, int, int]] | None = None
        numbers, sizes = self.entries.slots, self.entries.size
        # made once: a plan asks these for every victim
        self._size_of: Callable[[str], int] = lambda k: sizes[numbers[k]]
        # the pinned set answers for the records' PINNED flags (attach, detach and set_pinned keep the two in
        # step), in C: a plan asks for every victim it looks at, and a look-up of the key's record costs ~30
        # bytecodes. So pinned_keys is never replaced, only changed.
        self._is_pinned: Callable[[str], bool] = self.pinned_keys.__contains__

    @classmethod
    def with_policy(cls, tiers: Sequence[TierConfig], name: str) -> Catalog:
        """A catalog whose tiers' policies (policy_factory's `name`) keep their per-object state by the
        catalog's record numbers."""
        slots = KeySlots()
        return cls(tiers, policy_factory(name, [t.capacity for t in tiers], slots), slots)

    def attach(self, entry: CatalogEntry, *, counted: bool = False, loaded: bool = False,
               unranked: bool = False) -> None:
        """`counted`: the tier's bytes (and pinned bytes) already include the object's (a background load adds
        the whole index's up front: see Store._load), so only its record, object count and title count change.
        `loaded`: a row of a background load, whose policy add is never held back. `unranked`: no policy add
        now or held back: the caller makes it (`add_held`) when the object's turn comes."""
        assert entry.key not in self.entries.slots, entry.key
        tier = self.tiers[entry.tier]
        self.entries.add(entry)
        if unranked:
            pass
        elif self.held_back is None or loaded:
            tier.policy.add(entry.key, entry.size)
        else:
            self.held_back.append((tier.number, entry.key, entry.size, entry.serial))
        tier.objects += 1
        self.titles.add(entry.key, entry.tier, entry.size)
        if not counted:
            tier.used += entry.size
        if entry.pinned:
            if not counted:
                tier.pinned += entry.size
            self.pinned_keys.add(entry.key)

    def detach(self, entry: CatalogEntry) -> bool:
        """Remove the object if `entry` is the current one for its key; False if it was not."""
        entries = self.entries
        slot = entries.slots.get(entry.key)
        if slot is None or entries.serial[slot] != entry.serial:
            return False
        tier = self.tiers[entry.tier]
        pinned = entries.flags[slot] & PINNED  # the record's, not the copy's: a pin may have changed since
        tier.policy.remove(entry.key)  # first: the policy finds its state by the record number freed next
        entries.remove(entry.key)
        tier.used -= entry.size
        tier.objects -= 1
        self.titles.remove(entry.key, entry.tier, entry.size)
        if pinned:
            tier.pinned -= entry.size
        self.pinned_keys.discard(entry.key)  # whatever the copy says: the set holds only keys held (_is_pinned)
        return True

    def relocate(self, entry: CatalogEntry, dst: Tier) -> bool:
        """The object `entry` names now lives on `dst` (its files and index row were moved): the same record
        with a new tier and a new serial, as a detach then an attach of the moved copy would leave it, without
        freeing and refilling the record, its dict slot and its digest (a demotion per miss on a full box).
        The policies hear a removal from the old tier and an add to the new one, as for any move. Sets
        `entry`'s tier and serial; False (nothing changed) if `entry` is not the current copy."""
        entries = self.entries
        slot = entries.slots.get(entry.key)
        if slot is None or entries.serial[slot] != entry.serial:
            return False
        src, key, size = self.tiers[entry.tier], entry.key, entry.size
        src.policy.remove(key)  # first, as detach does: the policies' per-object state is by record number
        src.used -= size
        src.objects -= 1
        if entries.flags[slot] & PINNED:
            src.pinned -= size
            dst.pinned += size
        entries.tier[slot] = entry.tier = dst.number
        entries.serial[slot] = entry.serial = entries.next_serial()
        if self.held_back is None:
            dst.policy.add(key, size)
        else:
            self.held_back.append((dst.number, key, size, entry.serial))
        dst.used += size
        dst.objects += 1
        self.titles.move(key, src.number, dst.number, size)
        return True

    def stop_holding_back(self) -> list[tuple[int, str, int, int]]:
        """The policy adds held back so far, in order (make each with `add_held`); none are held from now on."""
        held, self.held_back = self.held_back or [], None
        return held

    def add_held(self, held: tuple[int, str, int, int]) -> None:
        """Make a held-back policy add if its object is still where it was then (same key, serial, tier)."""
        number, key, size, serial = held
        entries = self.entries
        slot = entries.slots.get(key)
        if slot is not None and entries.serial[slot] == serial and entries.tier[slot] == number:
            self.tiers[number].policy.add(key, size)

    def set_pinned(self, entry: CatalogEntry, pinned: bool) -> None:
        entries = self.entries
        slot = entries.slots.get(entry.key)
        # the record's flag decides, not the copy's (a pin may have changed since the copy was taken)
        if slot is not None and entries.serial[slot] == entry.serial and bool(entries.flags[slot] & PINNED) != pinned:
            self.tiers[entry.tier].pinned += entry.size if pinned else -entry.size
            entries.set_flag(slot, PINNED, pinned)
            if pinned:
                self.pinned_keys.add(entry.key)
            else:
                self.pinned_keys.discard(entry.key)
        entry.pinned = pinned

    def set_accessed(self, entry: CatalogEntry, when: float) -> None:
        if self.current(entry):
            self.entries.access[self.entries.slots[entry.key]] = when
        entry.last_access = when

    def current(self, entry: CatalogEntry) -> bool:
        return self.entries.current(entry)

    def servable(self, entry: CatalogEntry) -> bool:
        return self.tiers[entry.tier].state.serves

    def on(self, tier: Tier) -> list[CatalogEntry]:
        number, tiers, entries = tier.number, self.entries.tier, self.entries
        return [entries.entry(k, s) for k, s in list(entries.slots.items()) if tiers[s] == number]

    def matching(self, prefix: str) -> list[CatalogEntry]:
        """Every object whose key starts with `prefix` (entries made only for those)."""
        entries = self.entries
        return [entries.entry(k, s) for k, s in list(entries.slots.items()) if k.startswith(prefix)]

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
        slot = self.entries.slots.get(key) if key is not None and replacing else None
        return plan_placement(self.tiers, size, target.number, size_of=self._size_of, is_pinned=self._is_pinned,
                              key=key, current=None if slot is None else self.entries.tier[slot])
