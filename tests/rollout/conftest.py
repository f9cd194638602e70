"""Fixtures of the live roll-out tests: a fresh lab of five boxes per test, with one control plane (`lab`) or
two replicas on the lab's PostgreSQL behind HAProxy (`replicated_lab`); the V+1 wheel is tests/conftest.py's
`next_wheel`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from oca.lab import Lab, LabConfig
from oca.lab.postgres import server_bindir


def _lab(workdir: str, control_replicas: int) -> Iterator[Lab]:
    config = LabConfig(workdir=workdir, titles=1, boxes=5, duration=12, synthetic=True,
                       control_port=0, box_ports=0, control_replicas=control_replicas)
    with Lab(config) as running:
        yield running


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Origin, control plane and five boxes (three in site A, two in site B, one worker each), one short
    synthetic title on one box per site; every box at the running version. Logs under tmp_path/lab."""
    yield from _lab(str(tmp_path / "lab"), 1)


@pytest.fixture
def replicated_lab(tmp_path: Path) -> Iterator[Lab]:
    """The same lab, but with two control-plane replicas (r1, r2) sharing the lab's PostgreSQL, HAProxy on
    the lab's control URL, and the lab's short roll-out lease (oca/lab/layout.py's REPLICA_LEASE). Its workdir
    is one PostgreSQL (running as postgres) can enter: as root, pytest's tmp dirs are root-only."""
    if server_bindir() is None:
        pytest.skip("PostgreSQL server binaries missing: make system-deps")
    if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
        pytest.skip("haproxy missing: make system-deps")
    workdir = tempfile.mkdtemp(prefix="oca-lab-rollout-", dir="/tmp" if os.geteuid() == 0 else None)
    os.chmod(workdir, 0o755)
    try:
        yield from _lab(workdir, 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
