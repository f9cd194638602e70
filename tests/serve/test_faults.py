"""Faults on a running box: crashes mid-import, a lost index, a failed tier, clients that vanish."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from typing import Any

import xxhash

from tests.conftest import OCA, start_box, write_objects


def _digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _ls(box: Any) -> list[dict[str, Any]]:
    result = subprocess.run([OCA, "cache", "ls", "--json", "--config", box.config_path], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    objects: list[dict[str, Any]] = json.loads(result.stdout)["objects"]
    return objects


def test_kill_9_during_100_imports_leaves_only_whole_objects(box_factory: Any) -> None:
    box = box_factory({"titles/0/seed.m4s": b"seed"})
    content = os.path.join(box.workdir, "incoming")
    objects = {f"titles/5/720p/seg_{i:05d}.m4s": os.urandom(256 * 1024 + i) for i in range(100)}
    write_objects(content, objects)

    def put(key: str) -> int:
        body = json.dumps({"src": os.path.join(content, key), "key": key}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}/cache/import", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status)
        except OSError:
            return 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(put, key) for key in objects]
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < 5 and time.monotonic() < deadline:
            time.sleep(0.002)  # kill once a few are done: the rest are queued or being written
        box.process.send_signal(signal.SIGKILL)
        for pid in box.worker_pids():
            os.kill(pid, signal.SIGKILL)
        box.process.wait(10)
        results = [f.result() for f in futures]
    assert 0 in results, "the box finished every import before it was killed: the test proved nothing"
    time.sleep(0.5)
    restarted = start_box(box.config_path, box.workdir)
    try:
        stored = {o["key"]: o for o in _ls(restarted) if o["key"].startswith("titles/5/")}
        for key, info in stored.items():
            assert info["size"] == len(objects[key]) and info["digest"] == _digest(objects[key])
            status, _, body = restarted.get("/" + key)
            assert status == 200 and body == objects[key]
        for key in set(objects) - set(stored):
            assert restarted.get("/" + key)[0] == 404
    finally:
        restarted.stop()


def test_lost_or_corrupt_index_is_rebuilt_by_scanning(box_factory: Any) -> None:
    objects = {f"titles/7/360p/seg_{i}.m4s": os.urandom(10_000 + i) for i in range(20)}
    box = box_factory(objects)
    assert box.stop() == 0
    index = os.path.join(box.workdir, "state", "index.sqlite")
    for damage in ("delete", "truncate", "garbage"):
        if damage == "delete":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(index + suffix):
                    os.remove(index + suffix)
        elif damage == "truncate":
            size = os.path.getsize(index)
            with open(index, "r+b") as fh:
                fh.truncate(size // 2)
        else:
            with open(index, "wb") as fh:
                fh.write(os.urandom(8192))
        again = start_box(box.config_path, box.workdir)
        try:
            for key, data in objects.items():
                status, _, body = again.get("/" + key)
                assert status == 200 and body == data, (damage, key)
        finally:
            assert again.stop() == 0


def test_a_tier_removed_at_run_time_fails_and_the_box_serves_from_the_rest(box_factory: Any, tmp_path: Any) -> None:
    workdir = tmp_path / "box0"  # the SSD takes hot objects only, so the cold import lands on the HDD
    tiers = [{"name": "ssd", "path": str(workdir / "ssd"), "capacity": "64MiB", "admission": "returning"},
             {"name": "hdd", "path": str(workdir / "hdd"), "capacity": "256MiB"}]
    box = box_factory({"titles/1/720p/a.m4s": b"a" * 5000}, storage={"tiers": tiers})
    hot_dir = os.path.join(box.workdir, "hot")
    write_objects(hot_dir, {"titles/1/720p/b.m4s": b"b" * 5000})
    result = subprocess.run([OCA, "cache", "import", "--hot", "--config", box.config_path, hot_dir],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    tiers = {t["name"]: t for t in box.admin("/status")["tiers"]}
    assert tiers["ssd"]["objects"] == 1 and tiers["hdd"]["objects"] == 1
    shutil.rmtree(os.path.join(box.workdir, "ssd"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tiers = {t["name"]: t for t in box.admin("/status")["tiers"]}
        if tiers["ssd"]["state"] == "failed":
            break
        time.sleep(0.1)
    assert tiers["ssd"]["state"] == "failed", tiers
    assert tiers["hdd"]["state"] == "up"
    assert box.get("/titles/1/720p/a.m4s")[2] == b"a" * 5000
    assert box.get("/titles/1/720p/b.m4s")[0] in (404, 503)
    assert "oca_tier_up{tier=\"ssd\"} 0.0" in box.admin("/metrics")


def _open_fds(pids: list[int], workdir: str) -> int:
    """Sockets and object files the box holds open (the index's files open lazily, once, and are not counted)."""
    count = 0
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("socket:") or target.startswith(os.path.join(workdir, "hdd")):
                count += 1
    return count


def test_1000_clients_that_vanish_mid_download_leak_no_descriptors(box_factory: Any) -> None:
    box = box_factory({"titles/1/1080p/big.mp4": os.urandom(8 * 1024 * 1024)})
    pids = [box.process.pid, *box.worker_pids()]
    for _ in range(10):  # warm up: first requests open what stays open
        box.get("/titles/1/1080p/big.mp4")
    time.sleep(0.5)
    before = _open_fds(pids, box.workdir)
    request = b"GET /titles/1/1080p/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(10):
        socks = []
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", box.port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            sock.sendall(request)
            socks.append(sock)
        for sock in socks:
            sock.recv(4096)  # the download has started
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # RST mid-body
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        after = _open_fds(pids, box.workdir)
        if after <= before:
            break
        time.sleep(0.2)
    assert after <= before, (before, after)
    assert box.get("/titles/1/1080p/big.mp4")[0] == 200
    deadline = time.monotonic() + 5
    while box.admin("/status")["connections"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert box.admin("/status")["connections"] == 0


def _object_file(box: Any, tier: str, key: str) -> str:
    h = xxhash.xxh3_128_hexdigest(key.encode())
    return os.path.join(box.workdir, tier, "objects", h[0:2], h[2:4], h)


def test_a_truncated_object_is_cut_off_then_dropped_and_its_tier_stays_up(box_factory: Any) -> None:
    import http.client

    big, small = os.urandom(4 * 1024 * 1024), os.urandom(50_000)
    box = box_factory({"titles/1/1080p/big.mp4": big, "titles/1/720p/small.m4s": small})
    for key, size in (("titles/1/1080p/big.mp4", len(big)), ("titles/1/720p/small.m4s", len(small))):
        with open(_object_file(box, "ssd", key), "r+b") as fh:  # new objects land on the fastest tier
            fh.truncate(size // 2)
        conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=10)
        conn.request("GET", "/" + key)
        resp = conn.getresponse()
        if resp.status == 200:  # sendfile path: headers went out, then the connection is cut short
            try:
                body = resp.read()
            except http.client.IncompleteRead as exc:
                body = exc.partial
            assert len(body) < size
        else:  # memory path: the short read is seen before anything is sent
            assert resp.status == 503 and "damaged" in (resp.getheader("X-OCA-Reason") or "")
        conn.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if box.get("/" + key)[0] == 404:
                    break
            except http.client.IncompleteRead:
                pass  # still there for a moment: the worker reports it within a flush interval
            time.sleep(0.1)
        assert box.get("/" + key)[0] == 404, key
    assert {t["name"]: t["state"] for t in box.admin("/status")["tiers"]} == {"ssd": "up", "hdd": "up"}
    assert "dropped damaged object titles/1/1080p/big.mp4" in box.log()


def test_a_client_that_stops_reading_is_cut_off_and_no_tier_is_blamed(box_factory: Any) -> None:
    """Issue 13 (1): the send timeout's abort is the client's doing, never the tier's: only an error a
    storage operation raised may take a tier out of service."""
    big, small = os.urandom(16 * 1024 * 1024), os.urandom(300_000)
    box = box_factory({"titles/1/1080p/big.mp4": big, "titles/1/720p/small.m4s": small},
                      server={"send_timeout": "1s"})
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", box.port))
        sock.sendall(b"GET /titles/1/1080p/big.mp4 HTTP/1.1\r\nHost: box\r\n\r\n")
        deadline = time.monotonic() + 15
        cut = False
        while time.monotonic() < deadline and not cut:
            time.sleep(0.5)
            records = _access_records(box)
            cut = any(r.get("key") == "titles/1/1080p/big.mp4" and r.get("aborted") for r in records)
        assert cut, "the box never cut off the client that stopped reading"
    time.sleep(0.5)  # a wrongly charged tier would be reported within a flush interval
    assert {t["name"]: t["state"] for t in box.admin("/status")["tiers"]} == {"ssd": "up", "hdd": "up"}
    for key, data in (("titles/1/720p/small.m4s", small), ("titles/1/1080p/big.mp4", big)):
        status, headers, body = box.get("/" + key)
        assert status == 200 and body == data and "hit" in headers["cache-status"], (key, headers)
    assert "Traceback" not in box.log()


def _access_records(box: Any) -> list[dict[str, Any]]:
    path = os.path.join(box.workdir, "access.log")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
