"""The master-worker protocol's version, and the rule for which versions two releases have in common.

Rules kept here:
- `VERSION` is one integer literal on one line: the master reads it from a release slot's copy of this
  file without importing the release (oca.protocol.releases), and the firmware build's tests rewrite it.
- A release of protocol V speaks V and V-1 (never below 1). Two sides talk in the highest version both speak;
  so a release may differ from the running master by one protocol version and no more, which is what lets a
  zero-downtime switch go one release at a time in either direction (upgrade and revert).
- Version 1 is the protocol of releases that predate this module (untyped JSON, no handshake): the master
  still speaks it while VERSION is 2, and recognises such a release by the missing file.
"""

from __future__ import annotations

from collections.abc import Iterable

VERSION = 2
LEGACY = 1  # the releases that predate the handshake


def speaks(version: int) -> tuple[int, ...]:
    """The versions a release of protocol `version` can talk in, newest first."""
    return tuple(v for v in (version, version - 1) if v >= LEGACY)


def negotiate(ours: Iterable[int], theirs: Iterable[int]) -> int | None:
    """The highest version both sides speak; None when they have none in common."""
    common = set(ours) & set(theirs)
    return max(common) if common else None
