"""The lab's child processes (origin, control plane, boxes): start, wait until ready, stop, and never orphan.

Rules kept here:
- Every child runs in its own process group (so a box's master and its workers stop together, and a Ctrl-C
  in the terminal reaches the lab alone, which then stops the children in order).
- Every child gets PR_SET_PDEATHSIG = SIGTERM: if the lab process dies, even by SIGKILL, the kernel tells
  its children to stop. The signal fires when the *thread* that spawned the child ends, so children are
  spawned only from threads that live as long as the lab (the caller's thread, the lab API's loop thread).
- Stopping: SIGTERM to the group, then SIGKILL after a grace period (or SIGKILL at once: `how="kill"`,
  what the lab uses to show failover); either way the group is swept with SIGKILL afterwards so no worker
  outlives its master.
- A child's stdout and stderr go to its log file (appended across restarts); failures name that file.
- A child may run as another (unprivileged) user: Popen switches user before the preexec function runs,
  so PR_SET_PDEATHSIG (which a credential change clears) still holds for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from oca.errors import OcaError

PR_SET_PDEATHSIG = 1
STOP_GRACE = 5.0


class LabError(OcaError):
    """Something the lab started failed: the message names it and its log file."""

    exit_code = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn setting PR_SET_PDEATHSIG, resolved before fork (None where prctl is unavailable)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the lab died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Child:
    """One process the lab runs: `argv`, logging to `log_path`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str, env: dict[str, str] | None = None,
                 user: pwd.struct_passwd | None = None) -> None:
        self.name, self.argv, self.log_path, self.env, self.user = name, list(argv), log_path, env, user
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def start(self) -> None:
        if self.running:
            return
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} lab starts: {' '.join(self.argv)}\n".encode())
            log.flush()
            as_user: dict[str, Any] = {}
            if self.user is not None and self.user.pw_uid != os.geteuid():
                as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            try:
                self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                                                preexec_fn=_die_with_parent(), **as_user)
            except OSError as exc:
                raise LabError(f"{self.name}: cannot start {self.argv[0]}: {exc.strerror}") from None

    def stop(self, how: str = "term", grace: float = STOP_GRACE) -> None:
        """Stop the whole process group: SIGTERM then SIGKILL after `grace` s, or SIGKILL at once."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait()
        self._signal(signal.SIGKILL)  # workers the master left behind, if any

    def _signal(self, sig: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def failure(self, what: str) -> LabError:
        """`what` happened to this child: one line naming it, its exit code, its log's last line and the log."""
        code = self.process.poll() if self.process is not None else None
        status = f" (exit code {code})" if code is not None else ""
        last = last_line(self.log_path)
        return LabError(f"{self.name} {what}{status}{': ' + last if last else ''}; log: {self.log_path}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll `ready` until it holds; LabError if the child exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise self.failure("exited during start")
            with contextlib.suppress(OSError, ValueError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise self.failure(f"not {what} within {timeout:.0f}s")
            time.sleep(0.05)


def last_line(path: str, limit: int = 300) -> str:
    """The log's last non-empty line (shortened), or ''."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            lines = [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[:limit] + "..."


def http_get(url: str, token: str | None = None, timeout: float = 2.0, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes]:
    """(status, body) of one GET; OSError when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
