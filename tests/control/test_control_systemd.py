"""systemd/oca-control.service passes `systemd-analyze verify` (with ExecStart pointed at this checkout's oca)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import OCA, ROOT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies(tmp_path: Any) -> None:
    with open(f"{ROOT}/systemd/oca-control.service", encoding="utf-8") as fh:
        unit = fh.read()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LimitNOFILE=" in unit
    assert "/usr/local/bin/oca control serve --config /etc/oca/control.yaml" in unit
    (tmp_path / "oca-control.service").write_text(unit.replace("/usr/local/bin/oca", OCA))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "oca-control.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "oca-control.service" not in result.stderr, result.stderr


def test_serve_with_a_bad_config_says_so_in_one_line(tmp_path: Any) -> None:
    (tmp_path / "control.yaml").write_text("listen: nowhere\nfleet: {origin_url: http://o, sites: [], boxes: []}\n")
    result = subprocess.run([OCA, "control", "serve", "--config", str(tmp_path / "control.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"oca: {tmp_path}/control.yaml: listen: expected HOST:PORT such as 127.0.0.1:8080, " \
                            "got 'nowhere'\n"
