"""A PostgreSQL cluster of our own from Debian's server binaries (initdb, pg_ctl): not the system service, an
unprivileged cluster in one directory on a 127.0.0.1 port. The lab (`--control-replicas N`, N >= 2) keeps its
control-plane state in one; the tests (tests/postgres.py) start a throwaway one per session.

Rules kept here:
- Everything lives under `root`: data/ (0700), server.log, the superuser's password file, and `port` (the
  port last used, so the next start asks for the same one). `open()` reuses a cluster initdb made earlier
  in that directory (same data, same password) and initdbs a new one otherwise.
- The server never runs as root (initdb refuses to): as root it runs as `postgres` (the user Debian's
  package creates) or else `nobody`, and `root` is chowned to that user; as anyone else it runs as that
  user. The user must be able to reach `root` (its parent directories must be searchable by it).
- Clients authenticate over TCP with a password (scram-sha-256), as a real deployment would; the password
  is in the file `password_file`, never in a URL. `socket=False` turns the unix socket off (the lab: a deep
  run directory would exceed the socket path limit; pg_ctl -w waits on postmaster.pid, not on a socket).
- `start()` first stops a server still running on this data directory (a lab killed with SIGKILL leaves
  pg_ctl's daemon behind), so the server always runs with this start's options and port.
- fsync is off: a lab's or a test's database is disposable; a crash may lose it, never a real deployment's.
- Errors are one line (ClusterError) naming the command, its stderr and the server log's tail.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
from typing import Any

from oca.errors import OcaError
from oca.lab.layout import pick_port

SUPERUSER = "oca"


class ClusterError(OcaError):
    """initdb or pg_ctl failed: the message names the command and the server log."""

    exit_code = 1


def server_bindir() -> str | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=os.path.dirname(os.path.realpath(found))):
        return os.path.dirname(os.path.realpath(found))
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


def server_user() -> pwd.struct_passwd:
    """Who the server runs as: ourselves, or when we are root `postgres` (else `nobody`)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as")


class PostgresCluster:
    """One cluster in `root` (created if missing), run with the binaries in `bindir`."""

    def __init__(self, bindir: str, root: str, *, socket: bool = True, port: int = 0) -> None:
        self.bindir = bindir
        self.user = server_user()
        self.root = os.path.abspath(root)
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.password_file = os.path.join(self.root, "password")
        self.socket = socket
        self.port = port
        self._names = itertools.count(1)
        os.makedirs(self.root, exist_ok=True)
        self._check_reachable()
        os.chmod(self.root, 0o755)  # the socket and the password file are reachable; data/ is 0700
        if not os.path.exists(self.password_file):
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("pg-" + secrets.token_hex(12) + "\n")
        with open(self.password_file, encoding="utf-8") as fh:
            self.password = fh.read().strip()
        if os.geteuid() == 0:
            for path in (self.root, self.password_file):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _check_reachable(self) -> None:
        """The server's user must be able to enter every directory above `root`."""
        if os.geteuid() != 0:
            return
        parent = os.path.dirname(self.root)
        while True:
            info = os.stat(parent)
            if not info.st_mode & stat.S_IXOTH and info.st_uid != self.user.pw_uid:
                raise ClusterError(f"PostgreSQL runs as {self.user.pw_name}, which cannot enter {parent} "
                                   f"(mode {stat.S_IMODE(info.st_mode):o}): use a directory it can reach")
            if parent == os.path.dirname(parent):
                return
            parent = os.path.dirname(parent)

    @property
    def initialized(self) -> bool:
        return os.path.exists(os.path.join(self.data, "PG_VERSION"))

    def _run(self, *args: str, timeout: float = 120, check: bool = True) -> int:
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": self.root}
        try:
            done = subprocess.run([os.path.join(self.bindir, args[0]), *args[1:]], cwd=self.root, env=env,
                                  capture_output=True, text=True, timeout=timeout, check=False, **as_user)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"PostgreSQL {args[0]} {args[1] if len(args) > 1 else ''}: {exc}") from None
        if check and done.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError), open(self.log, encoding="utf-8", errors="replace") as fh:
                tail = " ".join(line.strip() for line in fh.read()[-600:].splitlines()[-3:])
            stderr = " ".join(done.stderr.split())
            raise ClusterError(f"PostgreSQL {args[0]} failed ({done.returncode}): {stderr} {tail} "
                               f"(log: {self.log})".replace("  ", " "))
        return done.returncode

    def init(self) -> None:
        """initdb a new cluster in data/ (the superuser's password from the password file)."""
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--pwfile", self.password_file, "-E", "UTF8",
                  "--locale", "C", "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-sync")

    def open(self) -> bool:
        """Make the cluster exist: True when one from an earlier run was found and is reused."""
        if self.initialized:
            return True
        if os.path.exists(self.data):
            shutil.rmtree(self.data)  # an initdb that did not finish
        self.init()
        return False

    @property
    def running(self) -> bool:
        """pg_ctl status: a server runs on this data directory."""
        return self.initialized and self._run("pg_ctl", "status", "-D", self.data, timeout=30, check=False) == 0

    def remembered_port(self) -> int:
        """The port this cluster last ran on (0: none)."""
        with contextlib.suppress(OSError, ValueError), open(os.path.join(self.root, "port"), encoding="utf-8") as fh:
            return int(fh.read().strip())
        return 0

    def start(self) -> None:
        """Start the server on `port` (0: the remembered one if free, else any free one)."""
        if self.running:
            self.stop()
        if not self.port:
            self.port = pick_port("127.0.0.1", self.remembered_port())
        with open(os.path.join(self.root, "port"), "w", encoding="utf-8") as fh:
            fh.write(f"{self.port}\n")
        sockets = f"-k {self.root}" if self.socket else "-c unix_socket_directories=''"
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} {sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run("pg_ctl", "start", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w", "-t", "60")

    def pid(self) -> int | None:
        """The postmaster's pid while it runs (from postmaster.pid), else None."""
        try:
            with open(os.path.join(self.data, "postmaster.pid"), encoding="utf-8") as fh:
                pid = int(fh.readline().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(self.url(database), password=self.password, autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description is not None else []

    def ensure_database(self, name: str) -> bool:
        """CREATE DATABASE `name` unless it exists; True when it was created."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name[:70]!r}: expected a lower-case identifier")
        if self.execute(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            return False
        self.execute(f"CREATE DATABASE {name}")
        return True

    def create_database(self) -> str:
        """A new, empty database (t1, t2, ...): a fast FILE_COPY of template1."""
        name = f"t{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return name

    def destroy(self) -> None:
        """Stop the server and remove the whole directory."""
        with contextlib.suppress(ClusterError):
            if self.initialized:
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
