"""Firmware on a live box: install V+1 with zero failed requests, refuse bad bundles, keep serving through
releases that crash at start or fail their health check."""

from __future__ import annotations

import http.client
import json
import os
import select
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from oca import __version__
from tests.conftest import OCA, Box, start_box, wait_ready
from tests.firmware.conftest import NEXT, OBJECTS, SEGMENT, admin_post, bundle_bytes, firmware_box, sick_healthz


class Players(threading.Thread):
    """Requests in a loop while the box switches releases: alternately on one keep-alive connection and on a
    fresh connection each. A failure is any answer but a complete 200, and any error, resets included, with
    one exception every HTTP client makes (RFC 9112 §9.3.1): a request on a reused keep-alive connection
    that the server had closed while idle, failing before a byte of the answer, is sent again on a new
    connection (counted in `retried`). Like urllib3, a keep-alive connection the server has closed (it is
    readable while idle) is not reused at all (counted in `reconnected`)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.requests = 0
        self.failures: list[str] = []
        self.retried = 0
        self.reconnected = 0
        self.servers: Counter[str] = Counter()
        self._done = threading.Event()
        self._keep: http.client.HTTPConnection | None = None

    def stop(self) -> None:
        self._done.set()
        self.join(30)

    def run(self) -> None:
        while not self._done.is_set():
            self._request(keepalive=False)
            self._request(keepalive=True)

    def _connection(self, keepalive: bool) -> tuple[http.client.HTTPConnection, bool]:
        if keepalive and self._keep is not None and self._keep.sock is not None:
            if not select.select([self._keep.sock], [], [], 0)[0]:
                return self._keep, True
            self.reconnected += 1
            self._keep.close()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        if keepalive:
            self._keep = conn
        return conn, False

    def _request(self, keepalive: bool) -> None:
        conn, reused = self._connection(keepalive)
        self.requests += 1
        try:
            try:
                conn.request("GET", SEGMENT)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                self.retried += 1
                conn.close()
                conn, _ = self._connection(keepalive=False)
                if keepalive:
                    self._keep = conn
                conn.request("GET", SEGMENT)
                resp = conn.getresponse()
            body = resp.read()
            self.servers[resp.getheader("Server", "")] += 1
            if resp.status != 200 or body != OBJECTS[SEGMENT[1:]]:
                self.failures.append(f"{resp.status}, {len(body)} bytes")
        except (OSError, http.client.HTTPException) as exc:
            self.failures.append(repr(exc))
            conn.close()
            if keepalive:
                self._keep = None
        finally:
            if not keepalive:
                conn.close()


def _install(box: Box, bundle: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, "firmware", "install", bundle, "--config", box.config_path, "--json"],
                          capture_output=True, text=True, timeout=120)


def _upload(box: Box, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return admin_post(box, "/firmware", data, headers)


def _wait_gone(box: Box, pids: set[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while pids & set(box.worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids & set(box.worker_pids()), "old workers did not exit"


def _build_info(box: Box) -> list[str]:
    """The versions oca_build_info reports (one per serving worker generation)."""
    metrics = box.admin("/metrics")
    assert isinstance(metrics, str)
    return [line.split('version="')[1].split('"')[0] for line in metrics.splitlines()
            if line.startswith("oca_build_info{")]


def test_install_switches_releases_with_zero_failed_requests(box_factory: Callable[..., Box], keys: dict[str, Any],
                                                             bundle_of: Callable[..., str]) -> None:
    bundle = bundle_of(NEXT)
    box = firmware_box(box_factory, keys)
    assert box.admin("/status")["version"] == __version__
    assert _build_info(box) == [__version__]
    old = set(box.worker_pids())
    players = Players(box.port)
    players.start()
    time.sleep(0.5)
    result = _install(box, bundle)
    time.sleep(0.5)
    players.stop()
    assert result.returncode == 0, result.stderr + box.log()
    answer = json.loads(result.stdout)
    assert (answer["version"], answer["previous_version"]) == (NEXT, __version__)
    print(f"switch: {players.requests} requests, {len(players.failures)} failed, {players.retried} retried, "
          f"{players.reconnected} reconnected, servers {dict(players.servers)}")
    assert players.failures == [], players.failures[:5]
    assert players.servers[f"oca/{NEXT}"] > 0 and players.servers[f"oca/{__version__}"] > 0
    _wait_gone(box, old)
    status = box.admin("/status")
    assert (status["version"], status["previous_version"], status["releases"]) == (NEXT, __version__,
                                                                                  [NEXT, __version__])
    assert status["firmware"] == {"state": "idle", "reason": None}
    shown = subprocess.run([OCA, "firmware", "status", "--config", box.config_path], capture_output=True, text=True,
                           timeout=30)
    assert shown.stdout == f"version {NEXT} (previous {__version__}; kept {NEXT}, {__version__})\nfirmware idle\n"
    assert status["workers"] == 2
    for _ in range(10):
        assert box.get(SEGMENT)[1]["server"] == f"oca/{NEXT}"
    assert _build_info(box) == [NEXT], box.admin("/metrics")  # the serving release, not the master's code
    assert f'oca_master_build_info{{version="{__version__}"}} 1.0' in box.admin("/metrics")
    assert sorted(os.listdir(os.path.join(box.workdir, "state", "releases"))) == [NEXT, "state.json"]

    # the release survives a restart of the box: the master runs its own code, the workers the release
    box.stop()
    again = start_box(box.config_path, box.workdir)
    box.process = again.process
    box.log_path = again.log_path
    wait_ready(box)
    assert box.get(SEGMENT)[1]["server"] == f"oca/{NEXT}"
    assert box.admin("/status")["version"] == NEXT
    assert _build_info(box) == [NEXT]

    # refusals: each a 4xx with the reason, the box unchanged
    workers = set(box.worker_pids())
    with open(bundle, "rb") as fh:
        good = fh.read()
    other_key = bundle_bytes(keys["stranger"], b"x" * 1000, "9.0")
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 1
    older = bundle_of(__version__)  # signed, valid, but not newer than the running NEXT
    cases = [(bytes(tampered), 400, "tampered payload"), (other_key, 400, "is not a trusted key"),
             (good[: len(good) // 2], 400, "truncated"), (good, 409, f"same as the running {NEXT}")]
    with open(older, "rb") as fh:
        cases.append((fh.read(), 409, f"older than the running {NEXT}"))
    for data, code, message in cases:
        status_code, error = _upload(box, data)
        assert (status_code, message in error) == (code, True), (status_code, error)
    result = _install(box, older)
    assert result.returncode == 1 and f"409: version {__version__} is older than the running {NEXT}" in result.stderr
    status = box.admin("/status")
    assert (status["version"], status["previous_version"]) == (NEXT, __version__)
    assert status["firmware"]["state"] == "failed" and "older than" in status["firmware"]["reason"]
    assert set(box.worker_pids()) == workers

    # an explicit, signed rollback is accepted
    rollback = bundle_of(__version__, tag="-rollback", rollback=True)
    result = _install(box, rollback)
    assert result.returncode == 0, result.stderr
    status = box.admin("/status")
    assert (status["version"], status["previous_version"]) == (__version__, NEXT)
    assert box.get(SEGMENT)[1]["server"] == f"oca/{__version__}"


def test_too_big_and_endless_uploads_get_413(box_factory: Callable[..., Box], keys: dict[str, Any]) -> None:
    box = firmware_box(box_factory, keys, max_bundle_size="64KiB")
    code, error = _upload(box, b"x" * (65 * 1024))
    assert code == 413 and "max_bundle_size" in error

    def endless() -> Any:
        for _ in range(1000):
            yield b"x" * 16384

    code, error = _upload(box, endless(), {"Transfer-Encoding": "chunked"})  # type: ignore[arg-type]
    assert code == 413 and "max_bundle_size" in error
    assert box.admin("/status")["version"] == __version__


def test_no_trusted_keys_means_no_firmware(box_factory: Callable[..., Box], keys: dict[str, Any]) -> None:
    box = box_factory(OBJECTS)
    with open(keys["trusted_file"], "rb") as fh:
        code, error = _upload(box, fh.read())
    assert code == 403 and "trusted_keys_file is not set" in error


def _crash_at_import(text: str) -> str:
    hook = "from __future__ import annotations\n"
    assert text.count(hook) == 1
    return text.replace(hook, hook + "import oca.no_such_module  # this release's worker fails to import\n")


def test_releases_that_crash_or_fail_health_are_refused_and_the_old_one_serves(
        box_factory: Callable[..., Box], keys: dict[str, Any], bundle_of: Callable[..., str]) -> None:
    crashing = bundle_of("99.0", replace={"oca/serve/worker.py": _crash_at_import})
    sick = bundle_of("99.1", replace={"oca/serve/handler.py": sick_healthz})
    box = firmware_box(box_factory, keys, health_timeout="5s")
    workers = set(box.worker_pids())
    players = Players(box.port)
    players.start()
    time.sleep(0.3)
    crashed = _install(box, crashing)
    failed = _install(box, sick)
    time.sleep(0.3)
    players.stop()
    print(f"refused releases: {players.requests} requests, {len(players.failures)} failed, "
          f"{players.retried} retried, servers {dict(players.servers)}")
    assert crashed.returncode == 1 and "422: a worker of release 99.0 exited with code 1" in crashed.stderr, \
        crashed.stderr
    assert failed.returncode == 1 and "422: release 99.1 answered GET /healthz with 503" in failed.stderr, failed.stderr
    assert players.failures == [], players.failures[:5]
    assert set(players.servers) <= {f"oca/{__version__}", "oca/99.1"}  # the sick one served content a moment
    status = box.admin("/status")
    assert (status["version"], status["previous_version"], status["workers"]) == (__version__, None, 2)
    assert status["firmware"]["state"] == "failed" and "503" in status["firmware"]["reason"]
    assert set(box.worker_pids()) == workers
    assert os.listdir(os.path.join(box.workdir, "state", "releases")) == []
    assert box.get(SEGMENT)[1]["server"] == f"oca/{__version__}"
