"""What a box holds, as it crosses the wire: `GET /inventory` (every object under a prefix, or with `pinned=1`
only the pinned ones), `POST /inventory/lookup` (the objects held of a list of keys: the fill job diffs its plan
with it, in `lookup_batches`) and `GET /inventory/titles?since=N` (per-title counts changed since a sequence
number: the control plane polls it to know where each title is live).

Rules kept here:
- An object's digest and tier may be absent (a box that does not know them); a reader then trusts the size.
- A title delta is either `full` (every title the box holds; the reader replaces what it knew) or the
  titles changed and removed since the sequence the reader gave.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oca.wire.codec import Fields, WireError


@dataclass(frozen=True, slots=True)
class InventoryObject:
    """One object of a box's cache (`GET /inventory`, and the answer of a stat, pin or import)."""

    key: str
    size: int
    digest: str | None = None
    pinned: bool = False
    tier: str | None = None
    hot: bool = False
    stored_at: float | None = None  # epoch seconds

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "digest": self.digest, "tier": self.tier,
                "stored_at": self.stored_at, "hot": self.hot, "pinned": self.pinned}

    @classmethod
    def from_json(cls, raw: object, what: str = "object") -> InventoryObject:
        f = Fields(raw, what)
        return cls(f.text("key", empty=False), f.count("size"), f.optional_text("digest"),
                   f.flag("pinned", default=False), f.optional_text("tier"), f.flag("hot", default=False),
                   f.number("stored_at") if f.has("stored_at") else None)


@dataclass(frozen=True, slots=True)
class Listing:
    """`GET /inventory[?prefix=P]`."""

    objects: tuple[InventoryObject, ...]

    def to_json(self) -> dict[str, Any]:
        return {"objects": [o.to_json() for o in self.objects]}

    @classmethod
    def from_json(cls, raw: object, what: str = "inventory") -> Listing:
        f = Fields(raw, what)
        objects = f.items("objects")
        return cls(tuple(InventoryObject.from_json(o, f"{what} objects[{i}]") for i, o in enumerate(objects)))


LOOKUP_MAX_KEYS = 4096  # keys a `POST /inventory/lookup` may name
LOOKUP_MAX_BYTES = 512 * 1024  # ... and the bytes of their JSON (a box's admin API reads bodies up to 1 MiB)


def lookup_batches(keys: Sequence[str]) -> Iterator[list[str]]:
    """`keys` cut into the bodies of `POST /inventory/lookup`: each at most LOOKUP_MAX_KEYS keys and
    LOOKUP_MAX_BYTES of JSON (a key alone longer than that still goes, alone)."""
    batch: list[str] = []
    size = 0
    for key in keys:
        cost = len(json.dumps(key)) + 2  # its quotes and escapes, the comma and a space
        if batch and (len(batch) == LOOKUP_MAX_KEYS or size + cost > LOOKUP_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += cost
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class TitleTotals:
    objects: int
    bytes: int

    def to_json(self) -> dict[str, int]:
        return {"objects": self.objects, "bytes": self.bytes}

    @classmethod
    def from_json(cls, raw: object, what: str = "title") -> TitleTotals:
        f = Fields(raw, what)
        return cls(f.count("objects"), f.count("bytes", default=0))


@dataclass(frozen=True, slots=True)
class TitleChanges:
    """`GET /inventory/titles?since=N`: the box's sequence after this listing and what changed since N."""

    sequence: int
    full: bool  # every title the box holds (N was before the box's boot, or 0)
    titles: Mapping[str, TitleTotals] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "full": self.full,
                "titles": {t: self.titles[t].to_json() for t in sorted(self.titles)}, "removed": list(self.removed)}

    @classmethod
    def from_json(cls, raw: object, what: str = "title inventory") -> TitleChanges:
        f = Fields(raw, what)
        titles = {}
        for title, entry in f.mapping("titles").items():
            if not title:
                raise WireError(f"{what} titles: an empty title id")
            titles[title] = TitleTotals.from_json(entry, f"{what} titles[{title!r:.40}]")
        return cls(f.count("sequence"), f.flag("full"), titles, f.texts("removed", default=()))
