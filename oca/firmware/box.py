"""A box's firmware installer: verify an uploaded bundle, unpack it into a slot, have the master switch.

Rules kept here:
- One install at a time, from the first byte of the upload to the end of the switch (a second one is
  FirmwareBusy, 409). The state shown in /status moves idle → installing → switching → idle, or to
  failed with the reason, which stays until the next install.
- The trusted keys are read at each install (rotating them needs no restart); no
  `firmware.trusted_keys_file` means no firmware is accepted at all (403).
- Reading, hashing and unpacking run in a thread (a bundle is up to max_bundle_size); the switch itself
  is the master's (`switch_release`): the box is unchanged unless the new release passed its gate.
- Uploads land in `<releases_dir>/.incoming/`, emptied before and after each install.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from typing import Any, Protocol

from oca.config.model import FirmwareConfig
from oca.errors import OcaError
from oca.firmware.bundle import read_bundle
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

    @property
    def version(self) -> str:
        """The release the workers run."""
        return self.releases.current.version

    def status(self) -> dict[str, Any]:
        previous = self.releases.previous
        return {"version": self.version, "previous_version": previous.version if previous else None,
                "releases": self.releases.kept(), "firmware": {"state": self.state, "reason": self.reason}}

    @contextlib.contextmanager
    def receiving(self) -> Iterator[str]:
        """The box's one install: yields the file the upload is written to, then given to install()."""
        if self._busy:
            raise FirmwareBusy(f"an install is already under way ({self.state})")
        self.trusted_keys_file()  # refuse before reading a byte when the box takes no firmware
        self._busy = True
        self.state, self.reason = "installing", None
        try:
            shutil.rmtree(self.incoming, ignore_errors=True)
            os.makedirs(self.incoming)
            yield os.path.join(self.incoming, "bundle.tar")
        except OcaError as exc:
            self.state, self.reason = "failed", str(exc)
            log.error("firmware install refused: %s", exc)
            raise
        finally:
            self._busy = False
            if self.state != "failed":
                self.state = "idle"
            shutil.rmtree(self.incoming, ignore_errors=True)

    def trusted_keys_file(self) -> str:
        if self.config.trusted_keys_file is None:
            raise FirmwareDisabled("firmware.trusted_keys_file is not set: this box installs no firmware")
        return self.config.trusted_keys_file

    async def install(self, bundle: str, master: Switcher) -> dict[str, Any]:
        """Verify and install the bundle at `bundle` (inside `receiving()`), switching the workers to it;
        the new status."""
        assert self._busy, "install() runs inside receiving()"
        manifest, release = await asyncio.to_thread(self._unpack, bundle)
        log.info("firmware %s verified and unpacked into %s: switching", manifest.version, release.path)
        self.state = "switching"
        try:
            await master.switch_release(release, self.config.health_timeout)
        except OcaError:
            self.releases.discard(release)
            raise
        self.state = "idle"
        log.info("firmware %s is serving (previous %s)", self.version,
                 self.releases.previous.version if self.releases.previous else None)
        return self.status()

    def _unpack(self, bundle: str) -> tuple[Manifest, Release]:
        trusted = load_trusted_keys(self.trusted_keys_file())
        wheel = os.path.join(self.incoming, "payload.whl")
        with open(bundle, "rb") as source, open(wheel, "wb") as sink:
            unverified = read_bundle(source, self.config.max_bundle_size, sink)
        manifest = verify(unverified, trusted, self.version)
        named = os.path.join(self.incoming, manifest.payload_name)
        os.replace(wheel, named)
        return manifest, self.releases.unpack(named, manifest.version)
