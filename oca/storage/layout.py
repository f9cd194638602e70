"""Where an object's bytes and its sidecar live inside one tier directory.

Rules kept here:
- A file name is derived from the xxh3_128 hash of the key, never from the key's text, so no request can
  name a file outside the tier: `<tier>/objects/<h[0:2]>/<h[2:4]>/<h>` plus the sidecar `<h>.meta`.
- The sidecar (JSON: key, size, digest, stored_at, hot, pinned) is what makes a scan able to rebuild the
  index; an object without a readable sidecar whose key hashes to its name, or whose size differs, is junk.
- Temporary files live only in `<tier>/tmp/`; `prepare()` empties it, so anything there after a crash
  is discarded at the next open.
- Removal is tolerant: a file already gone is not an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import xxhash

_HASH_RE = re.compile(r"[0-9a-f]{32}")
META_SUFFIX = ".meta"


def key_hash(key: str) -> str:
    return xxhash.xxh3_128_hexdigest(key.encode())


@dataclass(frozen=True, slots=True)
class Sidecar:
    key: str
    size: int
    digest: str
    stored_at: float
    hot: bool
    pinned: bool

    def to_bytes(self) -> bytes:
        # the fields by hand: dataclasses.asdict deep-copies each one, a tenth of an import's time
        return json.dumps({"key": self.key, "size": self.size, "digest": self.digest, "stored_at": self.stored_at,
                           "hot": self.hot, "pinned": self.pinned}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Sidecar | None:
        """The sidecar in `data`, or None if it is not a well-formed one."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(raw, dict):
            return None
        key, size, digest = raw.get("key"), raw.get("size"), raw.get("digest")
        stored_at, hot, pinned = raw.get("stored_at"), raw.get("hot"), raw.get("pinned")
        if not (isinstance(key, str) and isinstance(digest, str) and _HASH_RE.fullmatch(digest)):
            return None
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            return None
        if not (isinstance(stored_at, int | float) and not isinstance(stored_at, bool)):
            return None
        if not (isinstance(hot, bool) and isinstance(pinned, bool)):
            return None
        return cls(key, size, digest, float(stored_at), hot, pinned)


@dataclass(frozen=True, slots=True)
class ScanEntry:
    """One hash found by a scan: its object and sidecar paths (None when missing)."""

    hash: str
    object_path: str | None
    meta_path: str | None


class TierLayout:
    """File names inside one tier root. Holds no state beyond the root path."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.objects_dir = os.path.join(self.root, "objects")
        self.tmp_dir = os.path.join(self.root, "tmp")
        # fan-out directories known to exist (at most 65,536 + 256): an import does not ask mkdir twice per
        # object; forgotten by `forget_directories` when the tier fails (its directories may be gone)
        self._made: set[str] = set()

    def fanout_dir(self, h: str) -> str:
        return os.path.join(self.objects_dir, h[0:2], h[2:4])

    def object_path(self, h: str) -> str:
        # what os.path.join gives (objects_dir is absolute, h is hex), at a third of its cost: every get asks
        return f"{self.objects_dir}/{h[0:2]}/{h[2:4]}/{h}"

    def meta_path(self, h: str) -> str:
        return self.object_path(h) + META_SUFFIX

    def prepare(self) -> None:
        """Create objects/ and tmp/ and empty tmp/. Raises OSError if the tier cannot be used."""
        self.forget_directories()
        os.makedirs(self.objects_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.clear_tmp()

    def clear_tmp(self) -> None:
        with os.scandir(self.tmp_dir) as it:
            for entry in it:
                remove_any(entry.path)

    def ensure_fanout(self, h: str) -> list[str]:
        """Create the fan-out directories for `h`; returns the parents whose entries changed (to fsync)."""
        changed: list[str] = []
        leaf = self.fanout_dir(h)
        if leaf in self._made:
            return changed
        first = os.path.join(self.objects_dir, h[0:2])
        for parent, child in ((self.objects_dir, first), (first, leaf)):
            try:
                os.mkdir(child)
                changed.append(parent)
            except FileExistsError:
                pass
        self._made.add(leaf)
        return changed

    def forget_directories(self) -> None:
        """The tier failed or was prepared again: its fan-out directories may be gone, so ask mkdir again."""
        self._made.clear()

    def remove(self, h: str) -> None:
        """Remove the sidecar, then the object (so a half-done removal never leaves a valid pair)."""
        unlink_quiet(self.meta_path(h))
        unlink_quiet(self.object_path(h))

    def read_sidecar(self, h: str) -> Sidecar | None:
        try:
            with open(self.meta_path(h), "rb") as f:
                return Sidecar.from_bytes(f.read(64 * 1024))
        except FileNotFoundError:
            return None

    def scan(self) -> Iterator[ScanEntry | str]:
        """Everything under objects/: a ScanEntry per hash, and the path of each file that is neither an
        object nor a sidecar name (to delete). Raises OSError if the tier cannot be read."""
        for d1 in self.scan_tops():
            yield from self.scan_top(d1)

    def scan_tops(self) -> list[str]:
        """The names under objects/, each to be scanned with `scan_top` (a part of the tier on its own, so
        a rebuild can read several at once). Raises OSError if the tier cannot be read."""
        return _listdir(self.objects_dir)

    def scan_top(self, d1: str) -> Iterator[ScanEntry | str]:
        """`scan` of one name under objects/ (itself junk unless a fan-out directory)."""
        p1 = os.path.join(self.objects_dir, d1)
        if not (len(d1) == 2 and os.path.isdir(p1)):
            yield p1
        else:
            for d2 in _listdir(p1):
                p2 = os.path.join(p1, d2)
                if not (len(d2) == 2 and os.path.isdir(p2)):
                    yield p2
                    continue
                yield from self._scan_leaf(p2, d1 + d2)

    def _scan_leaf(self, leaf: str, prefix: str) -> Iterator[ScanEntry | str]:
        objects: dict[str, str] = {}
        metas: dict[str, str] = {}
        for name in _listdir(leaf):
            path = os.path.join(leaf, name)
            base = name.removesuffix(META_SUFFIX)
            if not (_HASH_RE.fullmatch(base) and base.startswith(prefix)) or os.path.isdir(path):
                yield path
            elif name.endswith(META_SUFFIX):
                metas[base] = path
            else:
                objects[base] = path
        for h in sorted(objects.keys() | metas.keys()):
            yield ScanEntry(h, objects.get(h), metas.get(h))


def unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_any(path: str) -> None:
    """Remove a file or a whole directory tree; already gone is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        _remove_tree(path)
    else:
        unlink_quiet(path)


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path))


def _remove_tree(path: str) -> None:
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            unlink_quiet(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)
