"""The values the storage package hands out: what an object is, and what state a tier is in.

Rules kept here:
- `ObjectInfo` is a frozen snapshot; holding one never pins or locks anything on disk.
- `ObjectInfo.digest` is the xxh3_128 hex digest of the object's bytes, so `f'"{digest}"'` is a strong ETag.
- `TierState` values are the strings stored in the index and shown in status JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    tier: str
    path: str  # absolute path of the object file
    size: int
    digest: str  # xxh3_128 hex of the content; the server's strong ETag is f'"{digest}"'
    stored_at: float  # epoch seconds; the server's Last-Modified
    hot: bool
    pinned: bool

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


class TierState(enum.StrEnum):
    """A tier's health as the owner last saw it.

    UP: serves and takes new objects. FULL: the filesystem said ENOSPC; keeps serving, takes nothing
    new until a health check finds space. FAILED: I/O error, directory gone or not writable; nothing on
    it is served.
    """

    UP = "up"
    FULL = "full"
    FAILED = "failed"

    # the members by module name, not TierState.X: an enum's class attribute costs a look-up through its
    # metaclass, and every miss asks several tiers whether they accept
    @property
    def serves(self) -> bool:
        return self is not _FAILED

    @property
    def accepts(self) -> bool:
        return self is _UP


_UP, _FAILED = TierState.UP, TierState.FAILED
