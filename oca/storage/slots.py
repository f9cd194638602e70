"""Record numbers for keys: the one table in the master that maps a key's string to a small int.

Rules kept here:
- A key held gets a record number (a slot) that stays its own until it is removed; a removed key's slot is
  given to the next key added (so per-slot arrays never grow past the most keys ever held at once).
- The catalog owns the slots of a box (Entries): its packed records and the eviction policies' per-object
  state (s3fifo.Book) are arrays indexed by the same numbers, so per object there is one dict entry and one
  list entry here and no other table keyed by the key's string. A policy used on its own (tests, tools)
  makes its own KeySlots.
"""

from __future__ import annotations


class KeySlots:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # key -> slot
        self.keys: list[str] = []  # slot -> key; "" for a free slot (its string is not kept alive)
        self._free: list[int] = []

    def add(self, key: str) -> int:
        """A slot for a key not held yet (a freed one if there is one, else the next new number)."""
        if self._free:
            slot = self._free.pop()
            self.keys[slot] = key
        else:
            slot = len(self.keys)
            self.keys.append(key)
        self.index[key] = slot
        return slot

    def remove(self, key: str) -> int:
        """Free the key's slot (KeyError if it holds none) and return it."""
        slot = self.index.pop(key)
        self.keys[slot] = ""
        self._free.append(slot)
        return slot

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: object) -> bool:
        return key in self.index
