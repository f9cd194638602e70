"""Fixtures of the live roll-out tests: a fresh lab of five boxes per test (the V+1 wheel is
tests/conftest.py's `next_wheel`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oca.lab import Lab, LabConfig


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Origin, control plane and five boxes (three in site A, two in site B, one worker each), one short
    synthetic title on one box per site; every box at the running version. Logs under tmp_path/lab."""
    config = LabConfig(workdir=str(tmp_path / "lab"), titles=1, boxes=5, duration=12, synthetic=True,
                       control_port=0, box_ports=0)
    with Lab(config) as running:
        yield running
