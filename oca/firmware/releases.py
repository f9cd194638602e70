"""Release slots on a box: `<releases_dir>/<version>/` holds one release, unpacked from its wheel.

Rules kept here:
- `state.json` names the current release (the one the workers run) and the previous one; it is replaced
  atomically (write, fsync, rename), only after a new release passed its health gate.
- A release without a slot (`path` null) is the code the master itself runs (the installed package): the
  box's first release, until a bundle is installed.
- Only the current and previous slots are kept, and the staged one (unpacked, waiting for `activate`; kept
  in memory only, so a restart forgets it); others are deleted after each switch. The current slot is never
  unpacked over (its workers import from it).
- One release at most is staged: staging another discards the earlier one, and committing any release drops
  it (its slot goes, unless it is the release committed).
- A wheel is a zip: unpacking is extracting it, refusing any member whose name could land outside the slot.
  Unpacking goes to a hidden temporary directory renamed into place, so a crash leaves no half slot.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

from oca.firmware.errors import BundleRejected, VersionRefused

STATE = "state.json"


@dataclass(frozen=True)
class Release:
    version: str
    path: str | None = None  # the slot; None = the master's own, installed code

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "path": self.path}


class Releases:
    def __init__(self, root: str, builtin_version: str) -> None:
        self.root = root
        self.builtin = Release(builtin_version)
        self.problem: str | None = None  # why state.json was not usable (the box then runs the builtin release)
        self.current, self.previous = self._load()
        self.staged: Release | None = None  # verified and unpacked, not yet switched to

    def _load(self) -> tuple[Release, Release | None]:
        try:
            with open(os.path.join(self.root, STATE), encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError:
            return self.builtin, None
        except (OSError, ValueError) as exc:
            self.problem = f"{self.root}/{STATE} is unreadable ({exc})"
            return self.builtin, None
        if not isinstance(raw, dict):
            self.problem = f"{self.root}/{STATE} is not a JSON object"
            return self.builtin, None

        def release(item: Any) -> Release | None:
            if not isinstance(item, dict) or not isinstance(item.get("version"), str):
                return None
            path = item.get("path")
            if isinstance(path, str) and os.path.isdir(path):
                return Release(item["version"], path)
            return Release(item["version"]) if path is None else None  # a slot that is gone: not a release

        current = release(raw.get("current")) or self.builtin
        return current, release(raw.get("previous"))

    def slot(self, version: str) -> str:
        return os.path.join(self.root, version)

    def kept(self) -> list[str]:
        """The versions kept (current first)."""
        return [r.version for r in (self.current, self.previous) if r is not None]

    def unpack(self, wheel: str, version: str) -> Release:
        """Extract `wheel` (a release of `version`) into its slot; the release, not yet current."""
        try:
            name, wheel_version, _, _ = parse_wheel_filename(os.path.basename(wheel))
        except InvalidWheelFilename as exc:
            raise BundleRejected(f"payload is not a wheel: {exc}") from None
        if name != "oca" or wheel_version != Version(version):
            raise BundleRejected(f"payload is a wheel of {name} {wheel_version}, the manifest says oca {version}")
        target = self.slot(version)
        if self.current.path is not None and os.path.realpath(self.current.path) == os.path.realpath(target):
            raise VersionRefused(f"release {version} is the one running: it is not unpacked over itself")
        os.makedirs(self.root, exist_ok=True)
        partial = os.path.join(self.root, f".{version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _extract(wheel, partial)
            if not os.path.isfile(os.path.join(partial, "oca", "serve", "worker.py")):
                raise BundleRejected("the wheel has no oca/serve/worker.py: not a release of this project")
            shutil.rmtree(target, ignore_errors=True)  # a slot of this version that is not running
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return Release(version, target)

    def commit(self, release: Release) -> None:
        """`release` is now the current one (it passed its gate); the old current becomes previous."""
        if release != self.current:
            self.current, self.previous = release, self.current
        state = {"current": self.current.to_json(),
                 "previous": self.previous.to_json() if self.previous else None}
        os.makedirs(self.root, exist_ok=True)
        partial = os.path.join(self.root, STATE + ".partial")
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, os.path.join(self.root, STATE))
        self.staged = None  # activated, or dropped: the box moved to another release than the one staged
        self.prune()

    def stage(self, release: Release) -> None:
        """`release` (just unpacked) waits for its switch; an earlier staged release is discarded."""
        earlier, self.staged = self.staged, release
        if earlier is not None and earlier != release:
            self.discard(earlier)

    def discard(self, release: Release) -> None:
        """Delete the slot of a release that failed its gate or is no longer staged (never the current,
        previous or staged one's); a discarded staged release is no longer staged."""
        if release == self.staged:
            self.staged = None
        if release.path is not None and os.path.realpath(release.path) not in self._kept_paths():
            shutil.rmtree(release.path, ignore_errors=True)

    def _kept_paths(self) -> set[str]:
        return {os.path.realpath(r.path) for r in (self.current, self.previous, self.staged)
                if r is not None and r.path}

    def prune(self) -> None:
        keep = self._kept_paths()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".") \
                        and os.path.realpath(entry.path) not in keep:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _extract(wheel: str, dest: str) -> None:
    os.makedirs(dest)
    root = os.path.realpath(dest)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                name = info.filename
                target = os.path.realpath(os.path.join(dest, name))
                if name.startswith("/") or "\\" in name or not target.startswith(root + os.sep):
                    raise BundleRejected(f"the wheel has a member outside the release: {name!r}")
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise BundleRejected(f"the payload is not a readable wheel: {exc}") from None
