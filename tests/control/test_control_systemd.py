"""systemd/oca-control.service passes `systemd-analyze verify` (with ExecStart pointed at this checkout's oca)."""

from __future__ import annotations

import subprocess
from typing import Any

from tests.conftest import OCA, needs_systemd_analyze, verified_unit


@needs_systemd_analyze
def test_unit_verifies(tmp_path: Any) -> None:
    unit = verified_unit("oca-control.service", tmp_path)
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "LimitNOFILE=" in unit
    assert "/usr/bin/oca control serve --config /etc/oca/control.yaml" in unit
    assert "ExecStartPre=/usr/bin/oca check-config --control /etc/oca/control.yaml" in unit


def test_serve_with_a_bad_config_says_so_in_one_line(tmp_path: Any) -> None:
    (tmp_path / "control.yaml").write_text("listen: nowhere\nfleet: {origin_url: http://o, sites: [], boxes: []}\n")
    result = subprocess.run([OCA, "control", "serve", "--config", str(tmp_path / "control.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"oca: {tmp_path}/control.yaml: listen: expected HOST:PORT such as 127.0.0.1:8080, " \
                            "got 'nowhere'\n"


def test_serve_with_a_bad_prefix_file_line_names_file_and_line(tmp_path: Any) -> None:
    (tmp_path / "control.yaml").write_text(
        "listen: 127.0.0.1:0\nfleet:\n  origin_url: http://o\n  prefixes_file: prefixes.csv\n"
        "  sites: [{id: s, latitude: 0, longitude: 0, country: NL}]\n"
        "  boxes: [{id: b1, site: s, data_url: 'http://127.0.0.1:1', admin_url: 'http://127.0.0.1:1'}]\n")
    (tmp_path / "prefixes.csv").write_text("prefix,box\n192.0.2.0/24,b1\n198.51.100.0/33,b1\n")
    result = subprocess.run([OCA, "control", "serve", "--config", str(tmp_path / "control.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"oca: {tmp_path}/prefixes.csv: line 3: not a CIDR prefix: ")
    assert result.stderr.count("\n") == 1
