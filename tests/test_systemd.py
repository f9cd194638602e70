"""systemd/oca.service passes `systemd-analyze verify` (with ExecStart, ExecStartPre and ExecReload pointed at this
checkout's oca)."""

from __future__ import annotations

from typing import Any

from tests.conftest import needs_systemd_analyze, verified_unit


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Any) -> None:
    unit = verified_unit("oca.service", tmp_path)
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LimitNOFILE=" in unit
    assert "/usr/bin/oca serve" in unit
    # a hung box is killed whole within seconds (issue 18): its connections reset, players move on
    assert "WatchdogSec=4" in unit and "WatchdogSignal=SIGKILL" in unit and "TimeoutAbortSec=1" in unit
    # the start-up checks before the start, and before a reload is sent (then the SIGHUP)
    assert "ExecStartPre=/usr/bin/oca check-config --box /etc/oca/oca.yaml" in unit
    reloads = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert reloads == ["ExecReload=/usr/bin/oca check-config --box --reload /etc/oca/oca.yaml",
                       "ExecReload=/bin/kill -HUP $MAINPID"]
