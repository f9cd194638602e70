"""oca.serve.boot_fallback: which release a box serves after its start-up (pure, no loop)."""

from __future__ import annotations

import pytest

from oca.firmware.releases import Release
from oca.serve.boot_fallback import Fallback, boot_fallback

NEW = Release("2.0", "/var/lib/oca/releases/2.0")
OLD = Release("1.0", "/var/lib/oca/releases/1.0")
BUILTIN = Release("1.0")


@pytest.mark.parametrize("current, previous, serving, expected", [
    (NEW, OLD, 4, None),  # every worker came up
    (NEW, OLD, 1, None),  # one is enough: the others are the supervisor's to restart
    (NEW, None, 0, None),  # nothing to fall back to: stay, workers keep being restarted
    (BUILTIN, None, 0, None),  # a box that never installed a release
    (NEW, OLD, 0, Fallback(OLD, "release 2.0 did not start (no worker came up)")),
    (NEW, BUILTIN, 0, Fallback(BUILTIN, "release 2.0 did not start (no worker came up)")),  # the installed code
])
def test_boot_fallback(current: Release, previous: Release | None, serving: int, expected: Fallback | None) -> None:
    assert boot_fallback(current, previous, serving) == expected
