"""systemd/oca-fill.service and oca-fill.timer pass `systemd-analyze verify` (ExecStart pointed at this oca).

The service requires oca.service (the fill only asks the box), and the timer names the service: each is
verified next to the units it names, as they are installed side by side.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import needs_systemd_analyze, verified_unit


@needs_systemd_analyze
def test_service_verifies(tmp_path: Any) -> None:
    verified_unit("oca.service", tmp_path)
    unit = verified_unit("oca-fill.service", tmp_path)
    assert "Type=oneshot" in unit and "Requires=oca.service" in unit
    assert "ExecStart=/usr/bin/oca fill run --config /etc/oca/oca.yaml" in unit


@needs_systemd_analyze
def test_timer_verifies_nightly_with_a_random_delay(tmp_path: Any) -> None:
    verified_unit("oca.service", tmp_path)
    verified_unit("oca-fill.service", tmp_path)
    timer = verified_unit("oca-fill.timer", tmp_path)
    for line in ("OnCalendar=*-*-* 02:00", "RandomizedDelaySec=30m", "Persistent=true", "Unit=oca-fill.service"):
        assert line in timer
