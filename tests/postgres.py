"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, a temp dir, a free 127.0.0.1 port.

Rules kept here:
- One cluster per test session (`postgres_cluster`, session-scoped); each test that wants a database makes
  its own (`cluster.create_database()`, a fast FILE_COPY of template1), so tests never see each other's rows.
- The server never runs as root (initdb refuses to): as root it runs as `postgres` (the user Debian's package
  creates) or else `nobody`; as anyone else it runs as that user. Its directory is a fresh mkdtemp owned by
  that user, outside pytest's root-only tmp dirs (in /tmp when root); the unix socket lives in it too.
- Clients authenticate over TCP with a password (scram-sha-256), as a real deployment would; the password
  is in `cluster.password` and in the file `cluster.password_file`, never in a URL.
- Any test directory gets the fixture by importing it into its conftest.py
  (`from tests.postgres import postgres_cluster`), as tests/control/conftest.py does.
- Where the binaries are missing, the tests that need them skip and say how to install them
  (`make system-deps` installs Debian's `postgresql`). fsync is off: the cluster is thrown away.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import free_port

SUPERUSER = "oca"


def server_bindir() -> str | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=os.path.dirname(os.path.realpath(found))):
        return os.path.dirname(os.path.realpath(found))
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


def _server_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists to run the server as")


class PostgresCluster:
    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.user = _server_user()
        # as root, in /tmp: TMPDIR (like pytest's own tmp dirs) may be a root-only directory the server cannot enter
        self.root = tempfile.mkdtemp(prefix="oca-pg-", dir="/tmp" if os.geteuid() == 0 else None)
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.password = "test-" + os.urandom(12).hex()
        self.password_file = os.path.join(self.root, "password")
        self.port = 0
        self._names = itertools.count(1)
        with open(self.password_file, "w", encoding="utf-8") as fh:
            fh.write(self.password + "\n")
        os.chmod(self.root, 0o755)  # the socket and the password file are reachable; data/ is 0700
        if os.geteuid() == 0:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.password_file, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> None:
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": self.root}
        done = subprocess.run([os.path.join(self.bindir, args[0]), *args[1:]], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False, **as_user)
        if done.returncode != 0:
            log = ""
            with contextlib.suppress(OSError), open(self.log, encoding="utf-8") as fh:
                log = fh.read()[-2000:]
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()} {log}")

    def init(self) -> None:
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--pwfile", self.password_file, "-E", "UTF8",
                  "--locale", "C", "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-sync")
        self.port = free_port()

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run("pg_ctl", "start", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w", "-t", "60")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(self.url(database), password=self.password, autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description is not None else []

    def create_database(self) -> str:
        name = f"t{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return name

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    bindir = server_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (make system-deps installs Debian's postgresql)")
    cluster = PostgresCluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
