"""A throwaway PostgreSQL cluster for tests: the lab's cluster code (oca/lab/postgres.py) in a temp dir.

Rules kept here:
- One cluster per test session (`postgres_cluster`, session-scoped); each test that wants a database makes
  its own (`cluster.create_database()`, a fast FILE_COPY of template1), so tests never see each other's rows.
- The server never runs as root (oca/lab/postgres.py); its directory is a fresh mkdtemp, outside pytest's
  root-only tmp dirs (in /tmp when root), so that user can enter it; the unix socket lives in it too.
- Clients authenticate over TCP with a password (scram-sha-256); the password is in `cluster.password` and
  in the file `cluster.password_file`, never in a URL.
- Any test directory gets the fixture by importing it into its conftest.py
  (`from tests.postgres import postgres_cluster`), as tests/control/conftest.py does.
- Where the binaries are missing, the tests that need them skip and say how to install them
  (`make system-deps` installs Debian's `postgresql`). fsync is off: the cluster is thrown away.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from oca.lab.postgres import SUPERUSER, PostgresCluster, server_bindir

__all__ = ["SUPERUSER", "PostgresCluster", "postgres_cluster", "server_bindir"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    bindir = server_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (make system-deps installs Debian's postgresql)")
    # as root, in /tmp: TMPDIR (like pytest's own tmp dirs) may be a root-only directory the server cannot enter
    root = tempfile.mkdtemp(prefix="oca-pg-", dir="/tmp" if os.geteuid() == 0 else None)
    cluster = PostgresCluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
