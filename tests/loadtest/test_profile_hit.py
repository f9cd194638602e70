"""loadtest.profile_hit: py-spy stacks land in the bucket of their innermost named frame, CPU times are read
from /proc, and the in-process measurement runs the real worker code over real hits."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import pytest

from loadtest import profile_hit
from loadtest.profile_hit import KERNEL, LOOP, bucket_of, cpu_times, read_raw

MAIN = "main (oca/serve/worker.py:197);run_forever (loop.c:33192);uv_run (core.c:464)"
RECEIVED = MAIN + ";Connection.data_received (oca/serve/connection.py:159)"


@pytest.mark.parametrize(("stack", "bucket"), [
    (MAIN + ";epoll_pwait (libc.so.6)", KERNEL),
    (MAIN + ";uv__io_poll (linux.c:1452)", LOOP),
    (RECEIVED + ";feed_data (parser.c:6373);Connection.on_header (oca/serve/connection.py:198)",
     "parse (httptools and its callbacks)"),
    (RECEIVED + ";Connection._next (oca/serve/connection.py:258);ContentHandler.handle (oca/serve/handler.py:175)"
     ";Gate.check (oca/serve/gate.py:60)", "gate (token check)"),
    (RECEIVED + ";Connection._next (oca/serve/connection.py:258);ContentHandler.handle (oca/serve/handler.py:175)",
     "handler (key, lookup, response)"),
    (RECEIVED + ";Connection._start (oca/serve/connection.py:275);writelines (loop.c:110315);writev (libc.so.6)",
     KERNEL),
    (RECEIVED + ";Connection._start (oca/serve/connection.py:275);writelines (loop.c:110315)",
     "write (transport)"),
    (RECEIVED + ";Connection._finish (oca/serve/connection.py:441);Server.record (oca/serve/server.py:120)"
     ";Server.record_hits (oca/serve/server.py:130);WorkerStats.observe_hits (oca/serve/stats.py:85)",
     "stats (counters)"),
    (RECEIVED, "connection bookkeeping"),
    # a request answered from the response memo (oca.serve.memo)
    (RECEIVED + ";ResponseMemo.get (oca/serve/memo.py:60);ObjectCache.touch (oca/serve/objects.py:112)",
     "memo (request bytes answered before)"),
    (RECEIVED + ";Connection._replay (oca/serve/connection.py:221);ContentHandler.hit_head (oca/serve/handler.py:220)",
     "head (status line, Date, CMSD-Dynamic)"),
    (RECEIVED + ";Connection._replay (oca/serve/connection.py:223);Server.hit (oca/serve/server.py:146)",
     "record (duration, batching for stats and log)"),
    (RECEIVED + ";Connection._replay (oca/serve/connection.py:219)", "connection bookkeeping"),
])
def test_a_stack_lands_in_the_bucket_of_its_innermost_named_frame(stack: str, bucket: str) -> None:
    assert bucket_of(stack) == bucket


def test_raw_stacks_are_counted_per_bucket(tmp_path: Any) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(f"{MAIN};epoll_pwait (libc.so.6) 30\n{RECEIVED} 5\n{RECEIVED};Connection._next (x) 7\nbad\n")
    assert read_raw(str(raw)) == {KERNEL: 30, "connection bookkeeping": 12}


WRITER = ("0x7f83b47278ec (libc.so.6);thread_run (libpython3.11.so.1.0);Thread._bootstrap (threading.py:1002);"
          "Thread.run (threading.py:982);_Writer._run (oca/serve/accesslog.py:159);Condition.wait (threading.py:327);"
          "lock_PyThread_acquire_lock (libpython3.11.so.1.0);0x7f83b46a3f16 (libc.so.6)")


@pytest.mark.parametrize("writer", [WRITER, WRITER.split(";", 2)[2]], ids=["native", "python frames only"])
def test_another_threads_samples_are_not_the_workers_user_time(tmp_path: Any, writer: str) -> None:
    # the access log's writer thread sleeps in an unnamed libc frame: counted, it made "event loop, other" look
    # like three quarters of the worker's user time
    raw = tmp_path / "raw.txt"
    raw.write_text(f"{writer} 7354\n{RECEIVED} 5\n{MAIN};uv__io_poll (linux.c:1452) 2\n")
    assert read_raw(str(raw)) == {"connection bookkeeping": 5, LOOP: 2}


def test_cpu_times_of_this_process() -> None:
    before = cpu_times(os.getpid())
    sum(i * i for i in range(200_000))
    after = cpu_times(os.getpid())
    assert after.user + after.system >= before.user + before.system >= 0


def test_the_in_process_measurement_runs_the_worker_over_real_hits(tmp_path: Any, monkeypatch: Any) -> None:
    # a slow log disk, as when the machine is busy: the measurement returns with its log written
    real_write = os.write

    def slow_write(fd: int, data: bytes) -> int:
        if threading.current_thread().name == "oca-access-log":
            time.sleep(0.2)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", slow_write)  # only the log's writer thread is slowed
    lines: list[str] = []
    report = profile_hit.in_process(640, str(tmp_path), lines.append)
    assert report.startswith("in process (no kernel, no event loop): ")
    assert report.endswith(" µs of Python per 8 KiB hit")
    assert float(report.split(": ")[1].split(" ")[0]) > 0
    assert lines and "bytes written" in lines[0]
    with open(tmp_path / "access.log", encoding="utf-8") as fh:
        assert sum(1 for _ in fh) >= 640  # every hit logged, warm-up included


def test_the_in_process_measurement_spreads_hits_over_more_objects(tmp_path: Any) -> None:
    lines: list[str] = []
    report = profile_hit.in_process(640, str(tmp_path), lines.append, objects_count=128)
    assert float(report.split(": ")[1].split(" ")[0]) > 0
    with open(tmp_path / "access.log", encoding="utf-8") as fh:
        keys = {json.loads(line)["key"] for line in fh}
    assert len(keys) == 128  # every object asked for (the warm-up asks each once)
