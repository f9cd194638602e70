"""The master and its workers: restarts, reload without dropping connections, graceful stop, sd_notify."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from typing import Any

import yaml

from tests.conftest import start_box, wait_ready

BIG = os.urandom(24 * 1024 * 1024)
OBJECTS = {"titles/1/master.m3u8": b"#EXTM3U\n", "titles/1/1080p/movie.mp4": BIG}


def _slow_download(port: int, path: str, result: dict[str, Any], chunk_pause: float = 0.01) -> None:
    """Read a big body slowly so that it is still in flight when the master is signalled."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = bytearray()
            result["started"] = True
            while True:
                chunk = sock.recv(256 * 1024)
                if not chunk:
                    break
                data += chunk
                time.sleep(chunk_pause)
            result["data"] = bytes(data)
    except OSError as exc:
        result["error"] = exc


def _body(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[2]


def test_master_restarts_a_worker_that_dies(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    before = box.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = box.worker_pids()
        if len(now) == 2 and before[0] not in now:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker not restarted: {box.worker_pids()}")
    for _ in range(20):
        assert box.get("/titles/1/master.m3u8")[0] == 200
    assert "restarting" in box.log()


def test_sighup_reloads_config_without_dropping_connections(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    assert box.get("/titles/1/master.m3u8")[1]["cache-control"] == "public, max-age=2"
    download: dict[str, Any] = {}
    thread = threading.Thread(target=_slow_download, args=(box.port, "/titles/1/1080p/movie.mp4", download))
    thread.start()
    time.sleep(0.5)
    with open(box.config_path) as fh:
        config = yaml.safe_load(fh)
    config["http"] = {"playlist_cache_control": "public, max-age=7"}
    with open(box.config_path, "w") as fh:
        yaml.safe_dump(config, fh)
    old_workers = set(box.worker_pids())
    box.process.send_signal(signal.SIGHUP)
    failures = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            status, headers, _ = box.get("/titles/1/master.m3u8")
        except OSError:
            failures += 1
            continue
        assert status == 200
        if headers["cache-control"] == "public, max-age=7":
            break
    else:
        raise AssertionError("the reloaded config never took effect:\n" + box.log())
    assert failures == 0
    thread.join(60)
    assert "error" not in download, download.get("error")
    assert _body(download["data"]) == BIG
    deadline = time.monotonic() + 15
    while old_workers & set(box.worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not old_workers & set(box.worker_pids()), "old workers did not exit after finishing"


def test_sighup_with_a_bad_config_keeps_the_old_one(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    with open(box.config_path, "a") as fh:
        fh.write("\nbogus_section: 1\n")
    workers = set(box.worker_pids())
    box.process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert box.get("/titles/1/master.m3u8")[0] == 200
    assert set(box.worker_pids()) == workers
    assert "reload rejected" in box.log() and "bogus_section" in box.log()


def test_sigterm_finishes_in_flight_responses_and_exits(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    idle = socket.create_connection(("127.0.0.1", box.port), timeout=10)
    idle.sendall(b"GET /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    idle.recv(65536)
    download: dict[str, Any] = {}
    thread = threading.Thread(target=_slow_download, args=(box.port, "/titles/1/1080p/movie.mp4", download))
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    box.process.send_signal(signal.SIGTERM)
    assert idle.recv(10) == b""  # the idle keep-alive connection is closed
    idle.close()
    thread.join(60)
    assert box.process.wait(30) == 0
    assert "error" not in download, download.get("error")
    assert _body(download["data"]) == BIG
    assert time.monotonic() - started < 25
    assert box.worker_pids() == []


def test_sd_notify_ready_and_watchdog(box_factory: Any, tmp_path: Any) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(20)
    try:
        box = box_factory(OBJECTS, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        messages: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 2):
            messages.append(listener.recv(4096).decode())
        assert any("READY=1" in m for m in messages), messages
        assert sum("WATCHDOG=1" in m for m in messages) >= 2, messages
        box.stop()
        tail = []
        listener.settimeout(2)
        try:
            while True:
                tail.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in tail), tail
    finally:
        listener.close()


def test_second_box_on_the_same_storage_is_refused(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    second = start_box(box.config_path, box.workdir, wait=False)
    assert second.process.wait(30) != 0
    assert "owned by another process" in second.log()
    wait_ready(box)


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Any) -> None:
    """A port in use is found by the start-up checks (oca.serve.preflight, as `oca check-config`): a config
    problem, one line naming the file and the key, exit 2."""
    import subprocess

    from tests.conftest import OCA, write_box_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = write_box_config(str(tmp_path), server={"listen": f"127.0.0.1:{port}"})
        result = subprocess.run([OCA, "serve", "--config", config], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"oca: {config}: server.listen: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert "Traceback" not in result.stderr


def test_a_restarted_worker_serves_the_masters_config_not_a_changed_file(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    with open(box.config_path, "a") as fh:
        fh.write("\nbogus_section: 1\n")  # edited, not yet reloaded: the running config stays in force
    victim = box.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (victim in box.worker_pids() or len(box.worker_pids()) < 2):
        time.sleep(0.1)
    for _ in range(40):  # fresh connections: both SO_REUSEPORT slots get some
        assert box.get("/titles/1/master.m3u8")[0] == 200
    assert "Traceback" not in box.log()


def test_a_stuck_worker_is_killed_and_replaced(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    stuck = box.worker_pids()[0]
    os.kill(stuck, signal.SIGSTOP)  # its loop no longer runs: no reports, no answers
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (stuck in box.worker_pids() or len(box.worker_pids()) < 2):
            time.sleep(0.1)
        assert stuck not in box.worker_pids() and len(box.worker_pids()) == 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
    for _ in range(20):
        assert box.get("/titles/1/master.m3u8")[0] == 200
    assert "sent nothing for" in box.log()


def test_a_box_stopped_and_continued_whole_keeps_its_workers(box_factory: Any) -> None:
    box = box_factory(OBJECTS)  # storage.access_flush_interval 100ms: a worker is stuck after 2 s of silence
    workers = box.worker_pids()
    everyone = [box.process.pid, *workers]
    for pid in everyone:  # as SIGSTOP to the box's process group (the box shares the test's group)
        os.kill(pid, signal.SIGSTOP)
    time.sleep(3)  # longer than the stall timeout, by the monotonic clock, which runs on while stopped
    for pid in everyone:  # the master first: it runs before its workers could report anything
        os.kill(pid, signal.SIGCONT)
    answers = []
    for _ in range(30):  # three seconds of the box running again, in requests
        try:
            answers.append(box.get("/titles/1/master.m3u8")[0])
        except OSError as exc:  # a worker killed under the request
            answers.append(type(exc).__name__)
        time.sleep(0.1)
    assert "sent nothing for" not in box.log(), box.log()
    assert sorted(box.worker_pids()) == sorted(workers)
    assert answers == [200] * 30
