"""Shared fixtures: boxes on loopback, as real processes (`oca serve`) or as one in-process worker."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# the box helpers live in loadtest/ so that the fault suite (loadtest.faults) shares them; re-exported here
from loadtest.boxes import (
    OCA,
    Box,
    free_port,
    http_request,
    import_dir,
    kill_box,
    start_box,
    wait_ready,
    write_box_config,
    write_config,
    write_objects,
)
from tests.upstream.origin import Origin

# The suite shares a 2-core machine with real servers, ffmpeg and browsers: a property test must not fail
# because data generation or one example was slow, only because a property does not hold.
settings.register_profile("oca", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("oca")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
__all__ = ["OCA", "ROOT", "Box", "free_port", "http_request", "import_dir", "kill_box", "start_box", "wait_ready",
           "write_box_config", "write_config", "write_objects"]


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def verified_unit(name: str, tmp_path: Any) -> str:
    """The text of systemd/<name>, after checking that it passes `systemd-analyze verify` without a word
    about it (with ExecStart pointed at this checkout's oca)."""
    with open(f"{ROOT}/systemd/{name}", encoding="utf-8") as fh:
        unit = fh.read()
    (tmp_path / name).write_text(unit.replace("/usr/bin/oca", OCA))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr
    return unit


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


@pytest.fixture
def origin() -> Iterator[Origin]:
    """An empty test origin on loopback (tests/upstream/origin.py), stopped after the test; a test adds what it
    serves (a module that needs the same objects in every test overrides this with a stocked one)."""
    with Origin() as server:
        yield server


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
        self.server.access_log.close()


def start_inprocess(workdir: str, objects: dict[str, bytes], *, loop_kind: str = "uvloop",
                    overrides: dict[str, Any] | None = None) -> InProcessBox:
    from oca.config import load_box_config
    from oca.serve.loops import new_event_loop
    from oca.serve.worker import Worker
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
