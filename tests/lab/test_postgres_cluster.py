"""The lab's PostgreSQL cluster (oca/lab/postgres.py): made once in its directory, reused with its data and
port by the next start, a server left running by a killed lab restarted, and a directory its user cannot
enter named in one line."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from oca.lab.postgres import ClusterError, PostgresCluster, server_bindir

pytestmark = pytest.mark.skipif(server_bindir() is None, reason="PostgreSQL server binaries missing: make system-deps")


@pytest.fixture
def root() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="oca-pg-lab-", dir="/tmp" if os.geteuid() == 0 else None)
    os.chmod(base, 0o755)
    try:
        yield os.path.join(base, "postgres")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_cluster_is_reused_with_its_data_port_and_password(root: str) -> None:
    bindir = server_bindir()
    assert bindir is not None
    first = PostgresCluster(bindir, root, socket=False)
    assert first.open() is False
    first.start()
    try:
        assert first.ensure_database("oca") is True and first.ensure_database("oca") is False
        first.execute("CREATE TABLE kept (n int)", "oca")
        first.execute("INSERT INTO kept VALUES (42)", "oca")
        # a lab killed with SIGKILL leaves pg_ctl's server running: the next start stops it first
        second = PostgresCluster(bindir, root, socket=False)
        assert second.open() is True and second.password == first.password
        assert second.remembered_port() == first.port
        second.start()
        assert second.port == first.port
        assert second.execute("SELECT n FROM kept", "oca") == [(42,)]
        assert second.pid() is not None
        second.stop()
        assert second.pid() is None and not second.running
    finally:
        first.destroy()


def test_a_database_name_must_be_an_identifier(root: str) -> None:
    bindir = server_bindir()
    assert bindir is not None
    with pytest.raises(ValueError, match="expected a lower-case identifier"):
        PostgresCluster(bindir, root).ensure_database("oca; DROP")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_a_directory_the_server_user_cannot_enter_is_one_line(root: str) -> None:
    bindir = server_bindir()
    assert bindir is not None
    private = os.path.join(os.path.dirname(root), "private")
    os.makedirs(private, mode=0o700)
    os.chmod(private, 0o700)
    with pytest.raises(ClusterError, match=r"cannot enter .*/private \(mode 700\): use a directory it can reach"):
        PostgresCluster(bindir, os.path.join(private, "postgres"))
