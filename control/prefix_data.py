"""The control plane's prefix data: the announced-prefix file and the coverage file, read into a steering
index at start and again whenever they change, without a restart.

Boxes and sites stay in the fleet YAML; prefixes (10^6 of them in a real fleet) are in files made for
them. The announced-prefix file (`fleet.prefixes_file`) is CSV, one prefix per line:
- `prefix,box` (a header line `prefix,box`, or no header): the box announces the prefix;
- `prefix,site` (the header line says so): every box of the site announces it.
`#` lines and blank lines are skipped; a prefix may be listed on several lines (several announcers). A
box's inline `prefixes:` in the fleet YAML are still read, before the file's.

Rules kept here:
- A bad line is one ConfigError naming the file, the line and the problem (`prefixes.csv: line 7: unknown
  box 'b9'`): at start that is exit 2; on a reload it is logged and changes nothing (the old index keeps
  serving).
- `PrefixFiles.signature()` is what a reload compares (each file's inode, size and mtime): a file replaced
  by a rename (the safe way to update it) or rewritten in place both count as changed.
- Loading is pure CPU over the files' text and never touches the event loop: the plane runs it in a
  thread and swaps the finished index in at once, so a decision sees the old index or the new one, never
  half of each.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from control.fleet import canonical_prefix, csv_rows, load_coverage
from control.model import CoverageArea, Fleet
from control.prefixes import fast_cidr
from control.steering import SteeringIndex
from oca.errors import ConfigError

log = logging.getLogger("oca.control.prefixes")

Signature = tuple[tuple[str, int, int, int] | None, ...]


@dataclass(frozen=True)
class PrefixFiles:
    prefixes_file: str | None  # fleet.prefixes_file, resolved
    coverage_file: str | None  # coverage_file, resolved

    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.prefixes_file, self.coverage_file) if p is not None)

    def signature(self) -> Signature:
        """(path, inode, size, mtime in ns) of each file, None for one that cannot be stat'ed."""
        found: list[tuple[str, int, int, int] | None] = []
        for path in self.paths():
            try:
                st = os.stat(path)
            except OSError:
                found.append(None)
            else:
                found.append((path, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(found)


def announced_rows(path: str, fleet: Fleet) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(canonical prefix, announcing box ids) per line of the prefix file; ConfigError naming the line."""
    site_boxes: dict[str, tuple[str, ...]] | None = None
    for where, cells in csv_rows(path, "prefix", report_header=True):
        if where == "header":
            column = cells[1].lower() if len(cells) == 2 else ""
            if column not in ("box", "site"):
                raise ConfigError(path, "line 1", f"expected the header prefix,box or prefix,site, got "
                                  f"{','.join(cells)!r}")
            if column == "site":
                site_boxes = {}
                for box in fleet.boxes.values():
                    site_boxes[box.site] = (*site_boxes.get(box.site, ()), box.id)
            continue
        if len(cells) != 2:
            what = "prefix,site" if site_boxes is not None else "prefix,box"
            raise ConfigError(path, where, f"expected 2 columns ({what}), got {len(cells)}")
        prefix, name = cells
        found = fast_cidr(prefix)
        canonical = found[3] if found is not None else canonical_prefix(prefix, path, where)
        if site_boxes is not None:
            if name not in fleet.sites:
                raise ConfigError(path, where, f"unknown site {name!r}")
            boxes = site_boxes.get(name, ())
            if not boxes:
                raise ConfigError(path, where, f"site {name!r} has no boxes")
            yield canonical, boxes
        else:
            if name not in fleet.boxes:
                raise ConfigError(path, where, f"unknown box {name!r}")
            yield canonical, (name,)


def build_index(fleet: Fleet, files: PrefixFiles, default_site: str | None, *,
                coverage: tuple[CoverageArea, ...] | None = None) -> SteeringIndex:
    """The steering index over the fleet's inline prefixes, the prefix file and the coverage (`coverage`,
    else read from the coverage file, else none). ConfigError for a bad file line, ValueError for a
    duplicated coverage prefix or an unknown default site."""
    announcers: dict[str, list[str]] = {}
    for box in fleet.boxes.values():
        for prefix in box.prefixes:
            announcers.setdefault(prefix, []).append(box.id)
    if files.prefixes_file is not None:
        for prefix, boxes in announced_rows(files.prefixes_file, fleet):
            listed = announcers.get(prefix)
            if listed is None:
                announcers[prefix] = list(boxes)
            else:
                listed.extend(b for b in boxes if b not in listed)
    if coverage is None:
        coverage = load_coverage(files.coverage_file) if files.coverage_file else ()
    return SteeringIndex.build_from(fleet, announcers, coverage, default_site=default_site)


@dataclass
class PrefixState:
    """The prefix data a replica serves from, and how its last reload went (`/v1/status` shows it)."""

    files: PrefixFiles
    signature: Signature
    loaded_at: float  # when the index in use was built (the injected clock)
    announced: int
    coverage: int
    error: str | None = None  # the last reload's problem; None once a reload worked
    reloads: int = 0

    def as_json(self) -> dict[str, object]:
        return {"prefixes_file": self.files.prefixes_file, "coverage_file": self.files.coverage_file,
                "announced": self.announced, "coverage": self.coverage, "loaded_at": self.loaded_at,
                "reloads": self.reloads, "error": self.error}


def reload_index(fleet: Fleet, state: PrefixState, default_site: str | None, now: Callable[[], float], *,
                 force: bool = False) -> SteeringIndex | None:
    """A new index when the files changed since `state` (or `force`), else None; a bad file leaves `state`
    with its error and returns None (logged once per change of the files). Runs in a thread."""
    signature = state.files.signature()
    if signature == state.signature and not force:
        return None
    try:
        index = build_index(fleet, state.files, default_site)
    except (ConfigError, ValueError) as exc:
        if state.error != str(exc):
            log.error("prefix data not reloaded, still serving the data loaded before: %s", exc)
        state.error, state.signature = str(exc), signature
        return None
    state.signature, state.loaded_at, state.error = signature, now(), None
    state.announced, state.coverage, state.reloads = len(index.announced), len(index.coverage), state.reloads + 1
    log.info("prefix data reloaded: %d announced and %d coverage prefixes", state.announced, state.coverage)
    return index
