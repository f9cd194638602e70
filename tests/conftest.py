"""Shared fixtures: boxes on loopback, as real processes (`oca serve`) or as one in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, settings

# The suite shares a 2-core machine with real servers, ffmpeg and browsers: a property test must not fail
# because data generation or one example was slow, only because a property does not hold.
settings.register_profile("oca", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("oca")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCA = os.path.join(os.path.dirname(sys.executable), "oca")


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def verified_unit(name: str, tmp_path: Any) -> str:
    """The text of systemd/<name>, after checking that it passes `systemd-analyze verify` without a word
    about it (with ExecStart pointed at this checkout's oca)."""
    with open(f"{ROOT}/systemd/{name}", encoding="utf-8") as fh:
        unit = fh.read()
    (tmp_path / name).write_text(unit.replace("/usr/local/bin/oca", OCA))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr
    return unit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
              wait: bool = True) -> Box:
    with open(config_path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    port = int(config["server"]["listen"].rsplit(":", 1)[1])
    admin_port = int(config["admin"]["listen"].rsplit(":", 1)[1])
    log_path = os.path.join(workdir, f"box-{time.monotonic_ns()}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([OCA, "serve", "--config", config_path, "--loop", loop], stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    box = Box(workdir, config_path, process, port, admin_port, log_path)
    box.extra["workers"] = config["server"].get("workers") or os.cpu_count()
    token_file = (config.get("admin") or {}).get("token_file")
    if token_file:
        with open(token_file, encoding="utf-8") as fh:
            box.extra["token"] = fh.read().strip()
    if wait:
        try:
            wait_ready(box)
        except BaseException:
            kill_box(box)
            raise
    return box


def kill_box(box: Box) -> None:
    """SIGKILL the master and its workers (the workers first: a dead master cannot be asked for them)."""
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


@pytest.fixture
def box_factory(tmp_path: Any) -> Iterator[Callable[..., Box]]:
    boxes: list[Box] = []

    def make(objects: dict[str, bytes] | None = None, *, loop: str = "uvloop", import_flags: tuple[str, ...] = (),
             env: dict[str, str] | None = None, **overrides: Any) -> Box:
        workdir = str(tmp_path / f"box{len(boxes)}")
        os.makedirs(workdir)
        config_path = write_box_config(workdir, **overrides)
        if objects:
            content = os.path.join(workdir, "content")
            write_objects(content, objects)
            result = import_dir(config_path, content, *import_flags)
            assert result.returncode == 0, result.stderr
        box = start_box(config_path, workdir, loop=loop, env=env)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        kill_box(box)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, *, reset_ok: bool = False) -> bytes:
    """Send raw bytes, read until the server closes (or resets, if `reset_ok`) or goes quiet."""
    quiet: tuple[type[OSError], ...] = (TimeoutError, ConnectionResetError) if reset_ok else (TimeoutError,)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except quiet:
            pass
        return b"".join(chunks)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.") else 0


@dataclass
class InProcessBox:
    """One worker's data plane (Server + handler + StoreView) on a loop in a thread of the test process."""

    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    server: Any
    listener: socket.socket
    config: Any

    def get(self, path: str, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return http_request(self.port, path, headers, method)

    def close(self) -> None:
        async def drain() -> None:
            await self.server.drain(2)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.listener.close()


def start_inprocess(workdir: str, objects: dict[str, bytes], *, loop_kind: str = "uvloop",
                    overrides: dict[str, Any] | None = None) -> InProcessBox:
    from oca.config import load_box_config
    from oca.serve.worker import Worker, new_event_loop
    from oca.storage import Store

    config_path = write_box_config(workdir, **(overrides or {}))
    config = load_box_config(config_path)
    content = os.path.join(workdir, "content")
    write_objects(content, objects)
    store = Store.open(config.storage)
    for key in objects:
        store.put_file(os.path.join(content, key), key)
    store.close()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    loop = new_event_loop(loop_kind)
    worker = Worker(config, listener, None, loop)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(worker.server.start())
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    return InProcessBox(port, loop, thread, worker.server, listener, config)


@pytest.fixture
def inprocess_factory(tmp_path: Any) -> Iterator[Callable[..., InProcessBox]]:
    running: list[InProcessBox] = []

    def make(objects: dict[str, bytes], *, loop_kind: str = "uvloop", **overrides: Any) -> InProcessBox:
        workdir = str(tmp_path / f"inproc{len(running)}")
        os.makedirs(workdir)
        box = start_inprocess(workdir, objects, loop_kind=loop_kind, overrides=overrides)
        running.append(box)
        return box

    yield make
    for box in running:
        box.close()


@pytest.fixture(scope="session")
def next_wheel(tmp_path_factory: Any) -> str:
    """A wheel of this checkout reporting its version's next micro release (tests/firmware's NEXT), built by
    pip once per session (a few seconds): here, so that tests/firmware and tests/rollout share one build."""
    from packaging.version import Version

    from oca import __version__
    from oca.firmware.build import build_wheel

    running = Version(__version__)
    return build_wheel(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       f"{running.major}.{running.minor}.{running.micro + 1}", str(tmp_path_factory.mktemp("wheel")))
