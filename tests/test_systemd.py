"""systemd/oca.service passes `systemd-analyze verify` (with ExecStart pointed at this checkout's oca)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import OCA, ROOT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies(tmp_path: Any) -> None:
    with open(f"{ROOT}/systemd/oca.service", encoding="utf-8") as fh:
        unit = fh.read()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LimitNOFILE=" in unit
    assert "/usr/local/bin/oca serve" in unit
    (tmp_path / "oca.service").write_text(unit.replace("/usr/local/bin/oca", OCA))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "oca.service")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "oca.service" not in result.stderr, result.stderr
