"""Fixtures of the live roll-out tests: a fresh lab of five boxes per test, with one control plane (`lab`) or
two replicas on the lab's PostgreSQL behind HAProxy (`replicated_lab`); the V+1 wheel is tests/conftest.py's
`next_wheel`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oca.lab import Lab, LabConfig


def _lab(tmp_path: Path, control_replicas: int) -> Iterator[Lab]:
    config = LabConfig(workdir=str(tmp_path / "lab"), titles=1, boxes=5, duration=12, synthetic=True,
                       control_port=0, box_ports=0, control_replicas=control_replicas)
    with Lab(config) as running:
        yield running


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Origin, control plane and five boxes (three in site A, two in site B, one worker each), one short
    synthetic title on one box per site; every box at the running version. Logs under tmp_path/lab."""
    yield from _lab(tmp_path, 1)


@pytest.fixture
def replicated_lab(tmp_path: Path) -> Iterator[Lab]:
    """The same lab, but with two control-plane replicas (r1, r2) sharing the lab's PostgreSQL, HAProxy on
    the lab's control URL, and the lab's short roll-out lease (oca/lab/layout.py's REPLICA_LEASE)."""
    yield from _lab(tmp_path, 2)
