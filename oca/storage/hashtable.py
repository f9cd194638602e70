"""An open-addressing hash table of small ints, for the master's per-object tables at 10^7-10^8 objects.

A Python dict costs ~40 bytes an entry plus an int object (32 bytes) per value; this table costs 4 or 8 bytes
per bucket in one array (`typecode`), at a load of 0.3-0.6: ~7-13 bytes per entry for 'i'. What it stores are
values (ints >= 0: record numbers, places in a ring) whose 64-bit hashes the owner keeps (a subclass says how
to find a value's hash and whether a value is the one a lookup asks for).

Rules kept here:
- Linear probing; a bucket holds value + 1, 0 is empty. Deleting shifts the rest of the cluster back (Knuth's
  algorithm R), so no tombstones build up however long keys come and go.
- Growing never stops the caller for the size of the table: when an insert would pass MAX_LOAD, a table
  twice the size is made (zeroed memory, no Python per bucket) and the old one is moved into it STEP buckets
  per insert or delete (incremental rehashing, as Redis's dict does). Moving 4 buckets per insert empties the
  old table (S buckets, ~0.6 S entries) after S / 4 inserts, well before the new one (2 S buckets) can
  itself fill to MAX_LOAD (0.6 S more inserts): there are never more than two tables.
- While two tables exist, a lookup asks the new one, then the old one. A bucket of the old table that was
  moved or deleted holds GONE (-1): a probe goes on past it (its cluster may continue behind it) and stops
  only at an empty bucket, so the old table never needs shifting.
- `moved` counts buckets moved by incremental rehashing, so a test can bound what one insert moves.
"""

from __future__ import annotations

from array import array

MAX_LOAD = 0.6  # entries per bucket before doubling (linear probing: ~1.8 probes for a hit, ~3.6 for a miss)
STEP = 4  # old buckets moved per insert or delete while growing
GONE = -1  # an old table's bucket that was moved or deleted: probes go on past it
_FIRST = 16  # buckets of a new table


def _zeroed(typecode: str, buckets: int) -> array[int]:
    return array(typecode, bytes(buckets * array(typecode).itemsize))


class OpenTable:
    """The table. A value's hash is `self._hashes[value - self._base]` (the subclass's array, kept beside the
    values: read inline, as a method call per probe would cost more than the probe); a lookup whose hashes are
    equal asks `is_it(value, key)` whether it found the key (by default: equal hashes are enough)."""

    def __init__(self, typecode: str, hashes: array[int]) -> None:
        self._typecode = typecode
        self._hashes = hashes
        self._base = 0  # a subclass that drops values off the front of its arrays counts them here
        self._tab = _zeroed(typecode, _FIRST)
        self._mask = _FIRST - 1
        self._limit = int(_FIRST * MAX_LOAD)
        self._old: array[int] | None = None  # being moved into _tab while not None
        self._old_mask = 0
        self._cursor = 0  # the next old bucket to move
        self.count = 0  # entries in both tables
        self.moved = 0  # buckets moved by rehashing, ever

    def is_it(self, value: int, key: object) -> bool:
        return True

    def find(self, key: object, h: int) -> int:
        """The value stored for `key` (whose hash is `h`), or -1."""
        tab, mask, hashes, base = self._tab, self._mask, self._hashes, self._base + 1
        i = h & mask
        v = tab[i]
        while v:
            if hashes[v - base] == h and self.is_it(v - 1, key):
                return v - 1
            i = (i + 1) & mask
            v = tab[i]
        return self.find_old(key, h) if self._old is not None else -1

    def find_old(self, key: object, h: int) -> int:
        """`find` in the table being moved (call it only while there is one)."""
        old = self._old
        assert old is not None
        mask, hashes, base = self._old_mask, self._hashes, self._base + 1
        i = h & mask
        v = old[i]
        while v:
            if v > 0 and hashes[v - base] == h and self.is_it(v - 1, key):
                return v - 1
            i = (i + 1) & mask
            v = old[i]
        return -1

    def insert(self, value: int, h: int) -> None:
        """Store `value` (its key not stored yet) under hash `h`."""
        if self._old is None and self.count >= self._limit:
            self._grow()
        tab, mask = self._tab, self._mask
        i = h & mask
        while tab[i]:
            i = (i + 1) & mask
        tab[i] = value + 1
        self.count += 1
        if self._old is not None:
            self._rehash(STEP)

    def delete(self, value: int, h: int) -> None:
        """Remove `value` (stored under hash `h`; KeyError if it is not)."""
        tab, mask, stored = self._tab, self._mask, value + 1
        i = h & mask
        v = tab[i]
        while v:
            if v == stored:
                self._shift_back(i)
                break
            i = (i + 1) & mask
            v = tab[i]
        else:
            self._delete_old(stored, h)
        self.count -= 1
        if self._old is not None:
            self._rehash(STEP)

    def pop(self, key: object, h: int) -> int:
        """Remove the value stored for `key` and return it (-1 if there is none): `find` and `delete` in one
        probe."""
        tab, mask, hashes, base = self._tab, self._mask, self._hashes, self._base + 1
        i = h & mask
        v = tab[i]
        while v:
            if hashes[v - base] == h and self.is_it(v - 1, key):
                self._shift_back(i)
                self.count -= 1
                if self._old is not None:
                    self._rehash(STEP)
                return v - 1
            i = (i + 1) & mask
            v = tab[i]
        if self._old is None:
            return -1
        value = self.find_old(key, h)
        if value >= 0:
            self.delete(value, h)
        return value

    def put(self, value: int, key: object, h: int) -> int:
        """Store `value` for `key`, in place of the value stored for it if any, and return that (else -1):
        `find` and `insert` in one probe."""
        if self._old is not None or self.count >= self._limit:
            old = self.find(key, h)
            if old >= 0:
                self.delete(old, h)
            self.insert(value, h)
            return old
        tab, mask, hashes, base = self._tab, self._mask, self._hashes, self._base + 1
        i = h & mask
        v = tab[i]
        while v:
            if hashes[v - base] == h and self.is_it(v - 1, key):
                tab[i] = value + 1
                return v - 1
            i = (i + 1) & mask
            v = tab[i]
        tab[i] = value + 1
        self.count += 1
        return -1

    def __len__(self) -> int:
        return self.count

    def buckets(self) -> int:
        """Buckets held, both tables counted while growing (what the table costs: buckets x itemsize)."""
        return len(self._tab) + (len(self._old) if self._old is not None else 0)

    def _delete_old(self, stored: int, h: int) -> None:
        old = self._old
        if old is None:
            raise KeyError(stored - 1)
        mask = self._old_mask
        i = h & mask
        v = old[i]
        while v:
            if v == stored:
                old[i] = GONE
                return
            i = (i + 1) & mask
            v = old[i]
        raise KeyError(stored - 1)

    def _shift_back(self, hole: int) -> None:
        """Empty bucket `hole` of the current table, moving back each later entry of its cluster whose probe
        would otherwise no longer reach it (algorithm R: an entry stays when its home is cyclically within
        (hole, where it is])."""
        tab, mask, hashes, base = self._tab, self._mask, self._hashes, self._base + 1
        j = hole
        while True:
            j = (j + 1) & mask
            v = tab[j]
            if not v:
                break
            home = hashes[v - base] & mask
            if (hole < home <= j) if hole <= j else (home > hole or home <= j):
                continue
            tab[hole] = v
            hole = j
        tab[hole] = 0

    def _grow(self) -> None:
        self._old, self._old_mask, self._cursor = self._tab, self._mask, 0
        size = 2 * len(self._tab)
        self._tab = _zeroed(self._typecode, size)
        self._mask = size - 1
        self._limit = int(size * MAX_LOAD)

    def _rehash(self, steps: int) -> None:
        old = self._old
        assert old is not None
        tab, mask, hashes, base = self._tab, self._mask, self._hashes, self._base + 1
        cursor = self._cursor
        end = min(cursor + steps, len(old))
        while cursor < end:
            v = old[cursor]
            if v > 0:
                i = hashes[v - base] & mask
                while tab[i]:
                    i = (i + 1) & mask
                tab[i] = v
                old[cursor] = GONE
                self.moved += 1
            cursor += 1
        self._cursor = cursor
        if cursor == len(old):
            self._old = None
