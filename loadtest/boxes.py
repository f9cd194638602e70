"""Boxes on loopback as real processes (`oca serve` with a config written here): the test suite's fixtures
(tests/conftest.py) and the fault suite (`python -m loadtest.faults`) start, wait for and kill them the same way.

Rules kept here:
- Everything listens on 127.0.0.1, on free ports.
- A box started with `session=True` runs in its own process group and gets PR_SET_PDEATHSIG, so `kill_box`
  takes its workers with it even after its master was SIGKILLed, and nothing outlives the harness.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import yaml

from loadtest.ports import free_port

OCA = os.path.join(os.path.dirname(sys.executable), "oca")



def write_box_config(workdir: str, **overrides: Any) -> str:
    """A loopback box config under workdir; overrides are merged per section."""
    config: dict[str, Any] = {
        "box": {"id": "test-box", "site": "test-site"},
        "server": {"listen": f"127.0.0.1:{free_port()}", "workers": 2, "shutdown_timeout": "10s"},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "storage": {
            "state_dir": os.path.join(workdir, "state"),
            "tiers": [
                {"name": "ssd", "path": os.path.join(workdir, "ssd"), "capacity": "64MiB"},
                {"name": "hdd", "path": os.path.join(workdir, "hdd"), "capacity": "256MiB"},
            ],
            "health_check_interval": "200ms",
            "access_flush_interval": "100ms",
        },
        "log": {"access_log": os.path.join(workdir, "access.log")},
        "tokens": {"required": False},
    }
    return write_config(os.path.join(workdir, "oca.yaml"), config, overrides)


def write_config(path: str, config: dict[str, Any], overrides: dict[str, Any]) -> str:
    """Write `config` as YAML to `path` with `overrides` merged per section: a mapping updates the section
    of that name, anything else replaces it."""
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)
    return path


def write_objects(root: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        path = os.path.join(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


def http_request(port: int, path: str, headers: dict[str, str] | None = None,
                 method: str = "GET", *, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


@dataclass
class Box:
    """A running `oca serve` process."""

    workdir: str
    config_path: str
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log_path: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", data=data, method=method)
        if self.extra.get("token"):
            req.add_header("Authorization", f"Bearer {self.extra['token']}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if path != "/metrics" else raw.decode()

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return http_request(self.port, path, headers, method)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


def import_dir(config_path: str, directory: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, "cache", "import", "--config", config_path, directory, *flags],
                          capture_output=True, text=True, timeout=300)


def start_box(config_path: str, workdir: str, *, loop: str = "uvloop", env: dict[str, str] | None = None,
              wait: bool = True, session: bool = False, timeout: float = 30) -> Box:
    with open(config_path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    port = int(config["server"]["listen"].rsplit(":", 1)[1])
    admin_port = int(config["admin"]["listen"].rsplit(":", 1)[1])
    log_path = os.path.join(workdir, f"box-{time.monotonic_ns()}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([OCA, "serve", "--config", config_path, "--loop", loop], stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   stdin=subprocess.DEVNULL, start_new_session=session,
                                   preexec_fn=_die_with_parent() if session else None)
    box = Box(workdir, config_path, process, port, admin_port, log_path)
    box.extra["session"] = session
    box.extra["workers"] = config["server"].get("workers") or os.cpu_count()
    token_file = (config.get("admin") or {}).get("token_file")
    if token_file:
        with open(token_file, encoding="utf-8") as fh:
            box.extra["token"] = fh.read().strip()
    if wait:
        try:
            wait_ready(box, timeout)
        except BaseException:
            kill_box(box)
            raise
    return box


def kill_box(box: Box) -> None:
    """SIGKILL the master and its workers (the workers first: a dead master cannot be asked for them; a box
    in its own session is killed as a whole process group)."""
    if box.extra.get("session"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(box.process.pid, signal.SIGKILL)
    for pid in box.worker_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if box.process.poll() is None:
        box.process.kill()
        box.process.wait()


def wait_ready(box: Box, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.process.poll() is not None:
            raise AssertionError(f"oca serve exited with {box.process.returncode}:\n{box.log()}")
        try:
            status, _, _ = box.get("/healthz")
            if status == 200 and box.admin("/status")["workers"] == box.extra["workers"]:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"oca serve not ready within {timeout}s:\n{box.log()}")


def _die_with_parent() -> Any:
    from oca.lab.procs import _die_with_parent as die

    return die()
