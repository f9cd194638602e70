"""Record numbers for keys: the one table in the master that maps a key to a small int, and holds the key.

Rules kept here:
- A key held gets a record number (a slot) that stays its own until it is removed; a removed key's slot is
  given to the next key added (so per-slot arrays never grow past the most keys ever held at once).
- The catalog owns the slots of a box (Entries): its packed records and the eviction policies' per-object
  state (s3fifo.Book) are arrays indexed by the same numbers, so per object there is one entry here and no
  other table keyed by the key. A policy used on its own (tests, tools) makes its own KeySlots.
- No Python object per key (issue 20: 10^7-10^8 keys in the master). A key is found through an open-addressing
  table of slots (hashtable.py) over the keys' hashes, kept per slot; a match is confirmed by comparing the
  key itself, so two keys with equal hashes are still told apart. The key is kept once, as its UTF-8 bytes in
  an arena for keys of its length: every key of n bytes has a place n bytes wide in one bytearray, and a
  place freed is reused by the next key of that length (a box's keys come in a few lengths, so no arena
  holds much more than the most keys of its length ever held at once). Per key: its bytes, 8 bytes of hash,
  8 of place, and the table's ~7-13: ~60 bytes for a 36-byte key where a str in a dict cost ~170.
- One request asks for the same key several times over (the store, the catalog, the policy, each through
  its own interface), and a lookup here is Python code where a dict's was C: the last key looked up, added or
  read back by `key` is remembered with its slot, and a lookup of that very str object (`is`, not ==)
  answers at once; so does one for the str last found missing (a miss asks for its key before it adds it).
  Removing a key forgets the one; adding any key, the other.
- The hash is Python's str hash (computed once per string and kept in it, so asking twice for the same str
  costs one hash): the table lives only in this process, and it is keyed per process (hash randomisation),
  so no client can aim keys at one bucket.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from oca.storage.hashtable import OpenTable

_FREE = -1  # a slot's place when the slot holds no key
_LENGTH = 32  # a place: its index in the arena << _LENGTH | the key's length in bytes


class KeySlots(OpenTable):
    def __init__(self) -> None:
        self._hash = array("q")  # slot -> its key's hash
        super().__init__("i", self._hash)
        self._place = array("q")  # slot -> where its key's bytes are (see _LENGTH); _FREE for a free slot
        self._free = array("i")  # free slots, the last freed given first
        self._arena: dict[int, bytearray] = {}  # key length in bytes -> keys of that length, end to end
        self._spare: dict[int, array[int]] = {}  # key length -> free places in its arena
        self._last: str | None = None  # the str object last looked up, added or read back, and its slot
        self._last_slot = -1
        self._missing: str | None = None  # the str object last looked up and not found

    def is_it(self, value: int, key: object) -> bool:
        return self._text(value) == key  # the hashes are equal: is it the key itself?

    def key(self, slot: int) -> str:
        """The key slot `slot` holds ("" for a free slot)."""
        key = self._text(slot)
        if key:
            self._last, self._last_slot = key, slot  # an eviction asks for its victims by these strs next
        return key

    def _text(self, slot: int) -> str:
        place = self._place[slot]
        if place < 0:
            return ""
        n = place & 0xFFFFFFFF
        start = (place >> _LENGTH) * n
        return self._arena[n][start:start + n].decode("utf-8", "surrogatepass") if n else ""

    def get(self, key: str) -> int | None:
        """The key's slot, or None."""
        if key is self._last:
            return self._last_slot
        if key is self._missing:
            return None
        # find() with is_it inlined: this runs several times per request the box serves
        h = hash(key)
        tab, mask, hashes = self._tab, self._mask, self._hash
        i = h & mask
        v = tab[i]
        while v:
            v -= 1
            if hashes[v] == h and self._text(v) == key:
                self._last, self._last_slot = key, v
                return v
            i = (i + 1) & mask
            v = tab[i]
        if self._old is not None:
            slot = self.find_old(key, h)
            if slot >= 0:
                self._last, self._last_slot = key, slot
                return slot
        self._missing = key
        return None

    def __getitem__(self, key: str) -> int:
        slot = self.get(key)
        if slot is None:
            raise KeyError(key)
        return slot

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def add(self, key: str) -> int:
        """A slot for a key not held yet (the last one freed if there is one, else the next new number)."""
        data = key.encode("utf-8", "surrogatepass")  # any str round-trips, even one with a lone surrogate
        n = len(data)
        spare = self._spare.get(n)
        if spare:
            at = spare.pop()
            self._arena[n][at * n:(at + 1) * n] = data
        else:
            arena = self._arena.get(n)
            if arena is None:
                arena = self._arena[n] = bytearray()
                self._spare[n] = array("q")
            at = len(arena) // n if n else 0
            arena += data
        h = hash(key)
        if self._free:
            slot = self._free.pop()
            self._hash[slot], self._place[slot] = h, at << _LENGTH | n
        else:
            slot = len(self._place)
            self._hash.append(h)
            self._place.append(at << _LENGTH | n)
        if self._old is None and self.count < self._limit:  # insert() inlined: no table to grow or move
            tab, mask = self._tab, self._mask
            i = h & mask
            while tab[i]:
                i = (i + 1) & mask
            tab[i] = slot + 1
            self.count += 1
        else:
            self.insert(slot, h)
        self._last, self._last_slot, self._missing = key, slot, None
        return slot

    def remove(self, key: str) -> int:
        """Free the key's slot (KeyError if it holds none) and return it."""
        slot = self[key]
        self._last = None
        place = self._place[slot]
        n = place & 0xFFFFFFFF
        self._spare[n].append(place >> _LENGTH)
        self.delete(slot, self._hash[slot])
        self._place[slot] = _FREE
        self._free.append(slot)
        return slot

    def items(self) -> list[tuple[str, int]]:
        """(key, slot) for every key held, in slot order: a copy, so the caller may add and remove meanwhile."""
        places, key = self._place, self._text
        return [(key(slot), slot) for slot in range(len(places)) if places[slot] >= 0]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])
