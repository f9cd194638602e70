"""A box's firmware installer: verify an uploaded bundle, unpack it into a slot, have the master switch.

Rules kept here:
- Four steps, one at a time (a second one is FirmwareBusy, 409): `install` (upload, verify, unpack, switch),
  or, for the control plane's roll-outs, `stage` (upload, verify, unpack) then `activate` (switch to the
  staged release), and `revert` (switch back to the previous release). An upload's step runs from its first
  byte to the end of its switch. The state shown in /status moves idle → installing → switching → idle, or
  to failed with the reason, which stays until the next step.
- `activate` and `revert` naming the release already running answer its status and change nothing: the
  control plane repeats a step after its own restart.
- The trusted keys are read at each upload (rotating them needs no restart); no
  `firmware.trusted_keys_file` means no firmware is accepted at all (403).
- Reading, hashing and unpacking run in a thread (a bundle is up to max_bundle_size); the switch itself
  is the release switcher's (oca.serve.release_switch): the box is unchanged unless the new release passed its gate.
- Uploads land in `<releases_dir>/.incoming/`, emptied before and after each upload.
- The current release's counters (`release_stats`) start from zero at each switch (the master feeds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any, Protocol

from oca.config.model import FirmwareConfig
from oca.errors import Conflict, OcaError
from oca.firmware.bundle import read_bundle
from oca.firmware.counters import ReleaseCounters
from oca.firmware.errors import FirmwareBusy, FirmwareDisabled
from oca.firmware.keys import load_trusted_keys
from oca.firmware.releases import Release, Releases
from oca.firmware.verify import Manifest, verify

log = logging.getLogger("oca.firmware")


class Switcher(Protocol):
    async def switch_release(self, release: Release, health_timeout: float) -> None: ...


class BoxFirmware:
    def __init__(self, config: FirmwareConfig, state_dir: str, builtin_version: str) -> None:
        self.config = config
        self.root = config.releases_dir or os.path.join(state_dir, "releases")
        self.incoming = os.path.join(self.root, ".incoming")
        self.releases = Releases(self.root, builtin_version)
        if self.releases.problem:
            log.error("%s: running the installed release %s", self.releases.problem, builtin_version)
        self.state = "idle"
        self.reason: str | None = None
        self._busy = False
        self.counters = ReleaseCounters(self.version, time.time())

    @property
    def version(self) -> str:
        """The release the workers run."""
        return self.releases.current.version

    def status(self) -> dict[str, Any]:
        previous, staged = self.releases.previous, self.releases.staged
        return {"version": self.version, "previous_version": previous.version if previous else None,
                "staged": staged.version if staged else None, "releases": self.releases.kept(),
                "firmware": {"state": self.state, "reason": self.reason},
                "release_stats": self.counters.to_json()}

    def commit(self, release: Release) -> None:
        """`release` passed its gate and serves alone (the master's switch): it is current, counted afresh."""
        self.releases.commit(release)
        self.counters = ReleaseCounters(release.version, time.time())

    # -- one step at a time -----------------------------------------------------------------------------

    def _not_busy(self) -> None:
        if self._busy:
            raise FirmwareBusy(f"a firmware step is already under way ({self.state})")

    @contextlib.contextmanager
    def _step(self, state: str) -> Iterator[None]:
        """The box's one firmware step: the state it shows, and failed with the reason if it is refused."""
        self._not_busy()
        self._busy = True
        self.state, self.reason = state, None
        try:
            yield
        except OcaError as exc:
            self.state, self.reason = "failed", str(exc)
            log.error("firmware %s refused: %s", state, exc)
            raise
        finally:
            self._busy = False
            if self.state != "failed":
                self.state = "idle"

    @contextlib.contextmanager
    def receiving(self) -> Iterator[str]:
        """An upload's step: yields the file the upload is written to, then given to install() or stage()."""
        self._not_busy()  # a busy box says so before it says anything about keys
        self.trusted_keys_file()  # refuse before reading a byte when the box takes no firmware
        with self._step("installing"):
            try:
                shutil.rmtree(self.incoming, ignore_errors=True)
                os.makedirs(self.incoming)
                yield os.path.join(self.incoming, "bundle.tar")
            finally:
                shutil.rmtree(self.incoming, ignore_errors=True)

    def trusted_keys_file(self) -> str:
        if self.config.trusted_keys_file is None:
            raise FirmwareDisabled("firmware.trusted_keys_file is not set: this box installs no firmware")
        return self.config.trusted_keys_file

    # -- the steps ----------------------------------------------------------------------------------------

    async def install(self, bundle: str, master: Switcher) -> dict[str, Any]:
        """Verify and install the bundle at `bundle` (inside `receiving()`), switching the workers to it;
        the new status."""
        assert self._busy, "install() runs inside receiving()"
        manifest, release = await asyncio.to_thread(self._unpack, bundle)
        log.info("firmware %s verified and unpacked into %s: switching", manifest.version, release.path)
        await self._switch(release, master)
        return self.status()

    async def stage(self, bundle: str) -> dict[str, Any]:
        """Verify and unpack the bundle at `bundle` (inside `receiving()`) without switching: it is the
        staged release, until activated or replaced; the new status."""
        assert self._busy, "stage() runs inside receiving()"
        manifest, release = await asyncio.to_thread(self._unpack, bundle)
        self.releases.stage(release)
        self.state = "idle"  # the answer shows the step done
        log.info("firmware %s verified and unpacked into %s: staged", manifest.version, release.path)
        return self.status()

    async def activate(self, version: str, master: Switcher) -> dict[str, Any]:
        """Switch to the staged release `version` (a no-op if it is already running); the new status. If it
        fails its gate, its slot is discarded: the control plane uploads it again."""
        self._not_busy()
        if version == self.version:
            return self.status()
        with self._step("switching"):
            staged = self.releases.staged
            if staged is None or staged.version != version:
                raise Conflict(f"release {version} is not staged (staged: {staged.version if staged else 'none'})")
            await self._switch(staged, master)
        return self.status()

    async def revert(self, version: str, master: Switcher) -> dict[str, Any]:
        """Switch back to the previous release, `version` (a no-op if it is already running); the new status.

        No signed bundle is asked for, and this does not get round anti-rollback (verify: only newer versions,
        or a signed rollback): the previous slot was verified when it was installed and is the release this
        box ran just before; no other, older release is reachable this way (the release reverted from becomes
        the previous one), so an old, perhaps vulnerable version still needs a signed rollback bundle."""
        self._not_busy()
        if version == self.version:
            return self.status()
        with self._step("switching"):
            previous = self.releases.previous
            if previous is None or previous.version != version:
                raise Conflict(f"release {version} is not the previous release "
                               f"(previous: {previous.version if previous else 'none'})")
            await self._switch(previous, master)
        return self.status()

    async def _switch(self, release: Release, master: Switcher) -> None:
        self.state = "switching"
        try:
            await master.switch_release(release, self.config.health_timeout)
        except OcaError:
            self.releases.discard(release)  # a failed new release's slot (Releases keeps the previous one's)
            raise
        self.state = "idle"
        log.info("firmware %s is serving (previous %s)", self.version,
                 self.releases.previous.version if self.releases.previous else None)

    def _unpack(self, bundle: str) -> tuple[Manifest, Release]:
        trusted = load_trusted_keys(self.trusted_keys_file())
        wheel = os.path.join(self.incoming, "payload.whl")
        with open(bundle, "rb") as source, open(wheel, "wb") as sink:
            unverified = read_bundle(source, self.config.max_bundle_size, sink)
        manifest = verify(unverified, trusted, self.version)
        named = os.path.join(self.incoming, manifest.payload_name)
        os.replace(wheel, named)
        return manifest, self.releases.unpack(named, manifest.version)
