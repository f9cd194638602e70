"""systemd/oca.service passes `systemd-analyze verify` (with ExecStart pointed at this checkout's oca)."""

from __future__ import annotations

from typing import Any

from tests.conftest import needs_systemd_analyze, verified_unit


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Any) -> None:
    unit = verified_unit("oca.service", tmp_path)
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LimitNOFILE=" in unit
    assert "/usr/bin/oca serve" in unit
