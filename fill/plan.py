"""The fill runner's pure part: a box's plan and its inventory in, the commands to carry out and the numbers
to report out. No I/O, no clock (times of day come in as arguments). The plan, the inventory and the prefetch
items are the wire model's (oca/wire/): the fill job shares them with the control plane and the box, no code.

Rules kept here:
- A planned file is present when the box holds its key with the plan's size and digest; present files are
  kept (pinned if the plan pins them and the box does not yet), never fetched again: that is how a run
  interrupted by the end of the window or a crash resumes without refetching completed files.
- A pinned object under `titles/` that the plan no longer names is unpinned (not evicted: it keeps serving
  until the box needs the room). Unpins come first, so the room they free is there for the fetches.
- Everything missing, or held with another digest or size, is fetched in one prefetch job, in plan order
  (most popular titles first), each with the plan's source order.
- Commands are data (SetPin, Fetch), so a test asserts the exact sequence and the runner only carries it out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oca.wire.fill import BoxPlan, PlannedFile
from oca.wire.inventory import InventoryObject
from oca.wire.prefetch import PrefetchItem

SLICE_MARK = "@slice"


# --- the box's inventory (oca.wire.inventory.InventoryObject, from its GET /inventory) ---------------------


def matches(planned: PlannedFile, held: InventoryObject | None) -> bool:
    """Whether the box's copy is the catalogued file (same size and, when the box knows it, same digest)."""
    if held is None or held.size != planned.size:
        return False
    return held.digest is None or held.digest == planned.digest


# --- commands -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetPin:
    key: str
    pinned: bool


@dataclass(frozen=True, slots=True)
class Fetch:
    files: tuple[PlannedFile, ...]  # one prefetch job, in this order


Command = SetPin | Fetch


@dataclass(frozen=True, slots=True)
class Diff:
    fetch: tuple[PlannedFile, ...]  # missing or different: fetched
    keep: tuple[PlannedFile, ...]  # already present
    pin: tuple[str, ...]  # present, planned pinned, not pinned on the box
    unpin: tuple[str, ...]  # pinned on the box, no longer planned

    def commands(self) -> list[Command]:
        commands: list[Command] = [SetPin(key, False) for key in self.unpin]
        commands += [SetPin(key, True) for key in self.pin]
        if self.fetch:
            commands.append(Fetch(self.fetch))
        return commands

    @property
    def fetch_bytes(self) -> int:
        return sum(f.size for f in self.fetch)

    @property
    def keep_bytes(self) -> int:
        return sum(f.size for f in self.keep)


def diff(plan: BoxPlan, inventory: Iterable[InventoryObject]) -> Diff:
    """What to do on the box so that it holds the plan (see the module rules)."""
    held = {obj.key: obj for obj in inventory}
    fetch, keep, pin = [], [], []
    for planned in plan.files:
        copy = held.get(planned.key)
        if matches(planned, copy):
            keep.append(planned)
            if planned.pin and copy is not None and not copy.pinned:
                pin.append(planned.key)
        else:
            fetch.append(planned)
    wanted = {f.key for f in plan.files}
    unpin = sorted(obj.key for obj in held.values()
                   if obj.pinned and obj.key.startswith("titles/") and obj.key.split(SLICE_MARK, 1)[0] not in wanted)
    return Diff(tuple(fetch), tuple(keep), tuple(pin), tuple(unpin))


def prefetch_items(plan: BoxPlan, files: Sequence[PlannedFile]) -> tuple[PrefetchItem, ...]:
    """The `POST /prefetch` items of these files: key, size, digest, hot, pin and their source order."""
    return tuple(PrefetchItem(f.key, f.size, f.digest, f.hot, f.pin, tuple(plan.file_sources(f))) for f in files)


# --- what is there after a run --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    files: int
    bytes: int
    present_files: int
    present_bytes: int
    missing: tuple[str, ...]  # planned keys not present with the plan's digest

    @property
    def complete(self) -> bool:
        return self.present_files == self.files


def coverage(plan: BoxPlan, inventory: Iterable[InventoryObject]) -> Coverage:
    held = {obj.key: obj for obj in inventory}
    present = [f for f in plan.files if matches(f, held.get(f.key))]
    keys = {f.key for f in present}
    return Coverage(len(plan.files), plan.bytes, len(present), sum(f.size for f in present),
                    tuple(f.key for f in plan.files if f.key not in keys))


def failure_reasons(failures: Mapping[str, str]) -> dict[str, int]:
    """Failures of a prefetch job grouped by reason: `fail: origin: 404 ...` -> counted under its first words."""
    counts: dict[str, int] = {}
    for reason in failures.values():
        text = reason.removeprefix("fail:").strip() or reason
        text = re.sub(r"\d+(\.\d+)?(s|ms)?\b", "N", text)  # "timeout after 5s" and "after 7s" are one reason
        text = text[:120]
        counts[text] = counts.get(text, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(plan: BoxPlan) -> dict[str, Any]:
    """`oca fill plan BOX` without --json: files, bytes, by tier, by first source, titles."""
    by_tier: dict[str, dict[str, int]] = {}
    by_source: dict[str, dict[str, int]] = {}
    for f in plan.files:
        tier = by_tier.setdefault(f.tier + (" (hot)" if f.hot else ""), {"files": 0, "bytes": 0})
        tier["files"] += 1
        tier["bytes"] += f.size
        first = plan.sources[f.sources[0]]
        source = by_source.setdefault(f"{first.kind} {first.name}", {"files": 0, "bytes": 0})
        source["files"] += 1
        source["bytes"] += f.size
    return {"box": plan.box, "site": plan.site, "titles": len(plan.titles),
            "head_titles": sum(1 for t in plan.titles if t.head), "files": len(plan.files), "bytes": plan.bytes,
            "by_tier": by_tier, "by_first_source": dict(sorted(by_source.items())),
            "tiers": [t.to_json() for t in plan.tiers],
            "left_out": list(plan.left_out)}
