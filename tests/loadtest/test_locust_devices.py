"""A bounded headless locust run of the simulated devices against a small lab: 0 failures, startup recorded."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                       reason="locust is not installed (pip install -e '.[test]')"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_locust_devices_against_the_lab(tmp_path: Path) -> None:
    from oca.lab import Lab, LabConfig

    cfg = LabConfig(workdir=str(tmp_path / "lab"), titles=1, boxes=2, duration=12, synthetic=True,
                    control_port=0, box_ports=0)
    with Lab(cfg) as lab:
        env = dict(os.environ, OCA_LOCUST_TITLES=",".join(lab.titles),
                   OCA_LOCUST_CLIENTS=",".join(lab.site_clients.values()), OCA_LOCUST_HEADER=lab.client_header)
        prefix = tmp_path / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
             "-u", "5", "-r", "5", "-t", "10s", "--host", lab.control_url, "--csv", str(prefix),
             "--only-summary", "--stop-timeout", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    total = by_name[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0, out
    assert int(by_name[("startup", "startup")]["Request Count"]) >= 1, out
    assert int(by_name[("GET", "master")]["Request Count"]) >= 5, out
    assert any(name.startswith("segment ") for _, name in by_name), out
    assert "OCA devices" in out and "startup" in out, out
    print(out[out.index("OCA devices"):][:600])
