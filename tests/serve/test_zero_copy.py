"""The hit path is zero-copy: body bytes of large objects leave through os.sendfile on the client socket."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

OBJECT_SIZE = 2 * 1024 * 1024
OBJECTS = {f"titles/{n}/1080p/seg_{n:05d}.m4s": os.urandom(OBJECT_SIZE) for n in range(8)}


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_99_percent_of_body_bytes_go_through_sendfile(inprocess_factory: Any, monkeypatch: Any,
                                                      loop_kind: str) -> None:
    counted = {"calls": 0, "bytes": 0}
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real_sendfile(out_fd, in_fd, offset, count)
        counted["calls"] += 1
        counted["bytes"] += sent
        return sent

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    box = inprocess_factory(OBJECTS, loop_kind=loop_kind)
    keys = list(OBJECTS)
    received = 0
    rng = random.Random(7)
    for _ in range(100):
        key = rng.choice(keys)
        status, _, body = box.get("/" + key)
        assert status == 200 and body == OBJECTS[key]
        received += len(body)
    assert received == 100 * OBJECT_SIZE
    assert counted["bytes"] >= 0.99 * received, counted


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (make system-deps installs it)")
def test_a_real_worker_sends_bodies_with_sendfile_under_strace(box_factory: Any, tmp_path: Any) -> None:
    box = box_factory(dict(list(OBJECTS.items())[:2]), server={"workers": 1})
    worker = box.worker_pids()[0]
    trace = tmp_path / "trace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=sendfile,sendto,write,writev,sendmsg",
                               "-o", str(trace), "-p", str(worker)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # let strace attach
        for key in list(OBJECTS)[:2] * 5:
            status, _, body = box.get("/" + key)
            assert status == 200 and len(body) == OBJECT_SIZE
    finally:
        time.sleep(0.3)
        tracer.terminate()
        tracer.wait(10)
    text = trace.read_text()
    sendfile_bytes = sum(int(n) for n in re.findall(r"sendfile\(.*\) = (\d+)", text))
    other_bytes = sum(int(n) for n in re.findall(r"(?:sendto|write|writev|sendmsg)\(.*\) = (\d+)", text))
    assert sendfile_bytes >= 10 * OBJECT_SIZE, text[-2000:]
    assert other_bytes < 0.01 * sendfile_bytes
