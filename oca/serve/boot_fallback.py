"""Which release a box serves after its start-up, when the current one did not come up. Pure.

Rules kept here:
- A box restarted into a release none of whose workers came up (a release that no longer starts here:
  a dependency gone, a disk layout it cannot read) falls back to the previous release, as A/B firmware
  falls back at boot: a box that serves the release before is better than one that serves nothing.
- One worker serving is enough to stay: a slot that failed is the supervisor's to restart, not a reason
  to leave a release that serves.
- With no previous release there is nothing to fall back to: the box stays on the current one (its
  workers keep being restarted, with backoff).
"""

from __future__ import annotations

from dataclasses import dataclass

from oca.firmware.releases import Release


@dataclass(frozen=True)
class Fallback:
    release: Release  # the release to switch to
    why: str  # what the firmware state and the log say


def boot_fallback(current: Release, previous: Release | None, serving_workers: int) -> Fallback | None:
    """The release to switch to once the start-up generation of `current` came up with `serving_workers`
    workers serving; None: stay on `current`."""
    if serving_workers > 0 or previous is None:
        return None
    return Fallback(previous, f"release {current.version} did not start (no worker came up)")
