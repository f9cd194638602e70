"""Where an object's bytes and its sidecar live inside one tier directory.

Rules kept here:
- A file name is derived from the xxh3_128 hash of the key, never from the key's text, so no request can
  name a file outside the tier: `<tier>/objects/<h[0:2]>/<h[2:4]>/<h>` plus the sidecar `<h>.meta`.
- The sidecar (JSON: key, size, digest, stored_at, hot, pinned) is what makes a scan able to rebuild the
  index; an object without a readable sidecar whose key hashes to its name is junk, and so is a sidecar
  without its object.
- A sidecar exists only beside the whole bytes it describes: every write makes the object durable before its
  sidecar gets its name (a verified, fsynced temp file renamed first; an import batch flushes its objects
  before it writes their sidecars), and removes an old sidecar at that name before the new bytes arrive (a
  filesystem's journal replays metadata changes in order, so a crash never pairs new bytes with an old
  sidecar; a removal unlinks the sidecar first, so one is left over only beside its object). So a scan
  trusts the sidecar's size and never stats the object: the stat was a second path lookup and inode read per
  object, ~18% of a 10^7 rebuild's scan. Bytes damaged afterwards are found as an indexed object's are, by
  the read that meets them (a hit cut short drops the object).
- Temporary files live only in `<tier>/tmp/`; `prepare()` empties it, so anything there after a crash
  is discarded at the next open.
- Removal is tolerant: a file already gone is not an error.
- A scan costs what a rebuild of 10^7 objects can afford: one directory listing per fan-out directory (file
  types from the listing, no stat per name), and per object one open and read of its sidecar, relative to the
  open directory (no path walk per file) and with O_NOATIME; sidecars are decoded and checked in one msgspec
  call.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Annotated

import msgspec
import xxhash

_HASH_RE = re.compile(r"[0-9a-f]{32}")
_FANOUT_RE = re.compile(r"[0-9a-f]{2}")
META_SUFFIX = ".meta"
SIDECAR_LIMIT = 64 * 1024  # bytes of a sidecar read; a longer one is not well-formed
# A scan's reads are not accesses: without O_NOATIME the first read of each sidecar since it was written changes
# its inode (relatime), a metadata write per object on the disk being scanned. Only the files' owner (or
# CAP_FOWNER) may ask for it; anyone else gets EPERM, and reads without it.
_NOATIME = getattr(os, "O_NOATIME", 0)


def key_hash(key: str) -> str:
    return xxhash.xxh3_128_hexdigest(key.encode())


class Sidecar(msgspec.Struct, frozen=True, gc=False):
    """What a sidecar says. The annotations are what `from_bytes` checks (msgspec validates while decoding:
    an int that is not a bool and not negative, a digest of 32 lowercase hex digits); gc=False because a scan
    makes one per object and none holds a reference cycle."""

    key: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    digest: Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{32}\Z")]
    stored_at: float  # a JSON integer is taken as a float; a bool is not
    hot: bool
    pinned: bool

    def to_bytes(self) -> bytes:
        # msgspec's encoder: the same JSON object (fields in this order, UTF-8), ~1 µs instead of json.dumps' ~8
        return _encode_sidecar(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sidecar | None:
        """The sidecar in `data`, or None if it is not a well-formed one."""
        try:
            return _decode_sidecar(data)
        except msgspec.DecodeError:  # malformed JSON, not UTF-8, a field missing or of the wrong type
            return None


_decode_sidecar = msgspec.json.Decoder(Sidecar).decode
_encode_sidecar = msgspec.json.Encoder().encode


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
        # the leaf first: once 256 first-level directories exist (after a few hundred objects) that is one
        # mkdir per new leaf, not two; only a missing parent costs the second try
        try:
            os.mkdir(leaf)
            changed.append(first)
        except FileExistsError:
            pass
        except FileNotFoundError:
            try:
                os.mkdir(first)
                changed.append(self.objects_dir)
            except FileExistsError:
                pass
            try:
                os.mkdir(leaf)
                changed.append(first)
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
                return Sidecar.from_bytes(f.read(SIDECAR_LIMIT))
        except FileNotFoundError:
            return None

    def scan_leaves(self) -> Iterator[str]:
        """The fan-out directories under objects/ that hold objects (`ab/cd`), in order; every other name met
        on the way (a stray file, a directory that is not a fan-out name) is deleted. Each leaf is then read
        with `read_leaf`, on its own, so a rebuild reads several at once. Raises OSError if the tier cannot
        be read."""
        for d1 in _fanout_names(self.objects_dir):
            for d2 in _fanout_names(os.path.join(self.objects_dir, d1)):
                yield f"{d1}/{d2}"

    def read_leaf(self, leaf: str) -> list[Sidecar]:
        """The sidecars of the valid objects in one fan-out directory (`ab/cd`, from `scan_leaves`): each names
        a key that hashes to its file name, beside an object file of that name (its size is the sidecar's:
        see the rules above). Junk there is deleted: names that are not this leaf's hashes, an object without
        a sidecar or a sidecar without an object, a sidecar that is not well-formed or names another key.
        Raises OSError if the directory cannot be read."""
        prefix = leaf[0:2] + leaf[3:5]
        folder = f"{self.objects_dir}/{leaf}"
        fd = _open_noatime(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            objects: list[str] = []
            metas: set[str] = set()
            junk: list[str] = []
            with os.scandir(fd) as listing:
                for entry in listing:
                    name = entry.name
                    base = name[:-len(META_SUFFIX)] if name.endswith(META_SUFFIX) else name
                    if entry.is_dir():  # from the listing's file type: no stat
                        remove_any(f"{folder}/{name}")
                    elif not (base.startswith(prefix) and _HASH_RE.fullmatch(base)):
                        junk.append(name)
                    elif len(base) < len(name):
                        metas.add(base)
                    else:
                        objects.append(base)
            found: list[Sidecar] = []
            for h in objects:
                sidecar = _read_sidecar_at(fd, h + META_SUFFIX) if h in metas else None
                metas.discard(h)
                if sidecar is None or key_hash(sidecar.key) != h:
                    junk += (h + META_SUFFIX, h)  # the sidecar first: a half-done removal leaves no valid pair
                else:
                    found.append(sidecar)
            junk += (h + META_SUFFIX for h in metas)  # sidecars without objects
            for name in junk:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
        return found


def _fanout_names(path: str) -> list[str]:
    """The fan-out directory names in `path`, sorted; anything else there is deleted. Raises OSError."""
    names: list[str] = []
    with os.scandir(path) as listing:
        for entry in listing:
            if _FANOUT_RE.fullmatch(entry.name) and entry.is_dir():
                names.append(entry.name)
            else:
                remove_any(entry.path)
    return sorted(names)


def _open_noatime(path: str, flags: int, dir_fd: int | None = None) -> int:
    try:
        return os.open(path, flags | _NOATIME, dir_fd=dir_fd)
    except PermissionError:  # not the files' owner: O_NOATIME is refused (EPERM), the read is not
        return os.open(path, flags, dir_fd=dir_fd)


def _read_sidecar_at(fd: int, name: str) -> Sidecar | None:
    try:
        meta = _open_noatime(name, os.O_RDONLY, fd)
    except FileNotFoundError:
        return None
    try:
        # one read: a regular file gives all it has up to the limit (short only at its end)
        return Sidecar.from_bytes(os.read(meta, SIDECAR_LIMIT))
    finally:
        os.close(meta)


def unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_any(path: str) -> None:
    """Remove a file or a whole directory tree; already gone is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        _remove_tree(path)
    else:
        unlink_quiet(path)


def _remove_tree(path: str) -> None:
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            unlink_quiet(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)
