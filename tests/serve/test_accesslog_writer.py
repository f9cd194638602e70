"""The access log's write() runs on a thread of its own (oca.serve.accesslog): a log file whose writes block
must not hold the event loop, the lines still arrive whole and in order, close() writes what is left, and a
disk that stays behind costs dropped lines, never memory.

A FIFO stands for the slow disk: once its pipe buffer (64 KiB) is full a write() sleeps until the test
reads, exactly as a throttled or locked file write sleeps."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from oca.serve import accesslog
from oca.serve.accesslog import AccessLog, Hit
from tests.serve.test_hit_records import Entry

ENTRY = Entry("t/a.m4s")
FIELDS = '"method":"GET","target":"/t/a.m4s","key":"t/a.m4s","status":200,"bytes":8192,'


def hits(first: int, count: int) -> list[Hit]:
    # the duration (µs) carries the line's number, so the order of the lines can be read back
    return [(ENTRY, 8192, (first + i) / 1e6, "127.0.0.1", FIELDS, 1.0) for i in range(count)]


@pytest.fixture
def fifo(tmp_path: Any) -> Iterator[tuple[str, int]]:
    path = str(tmp_path / "access.fifo")
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader first, so the log's open() does not block
    yield path, reader
    os.close(reader)


def read_all(reader: int, want_lines: int, timeout: float = 10.0) -> bytes:
    """What the FIFO gives until `want_lines` lines have come, or `timeout` seconds (never blocks longer)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < want_lines and time.monotonic() < deadline:
        if select.select([reader], [], [], max(0.0, deadline - time.monotonic()))[0]:
            data += os.read(reader, 1 << 20)
    return bytes(data)


def numbers(data: bytes) -> list[int]:
    return [round(float(line.split(b'"ms":')[1].split(b",")[0]) * 1000) for line in data.splitlines()]


def test_a_write_that_blocks_does_not_block_flush_and_every_line_arrives_in_order(fifo: tuple[str, int]) -> None:
    path, reader = fifo
    log = AccessLog(path)
    # ~130 bytes a line: 2,048 lines are four times what the pipe holds, so the writer sleeps in write()
    done = threading.Event()

    def feed() -> None:
        for n in range(0, 2048, 64):
            log.add_hits(0.0, hits(n, 64))
        log.flush()
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        # before the writer thread, the flush of the 512th line sat in write() until someone read the pipe
        assert done.wait(5), "flush() waited for the disk"
        time.sleep(0.2)
        assert not log.written(0), "the pipe is full: the writer must still be waiting"
    finally:
        data = read_all(reader, 2048)  # (unblocks a flush stuck in write(), if the test failed)
    assert numbers(data) == list(range(2048))
    assert log.written(5)
    log.close()


def test_close_writes_what_is_left_and_closes_the_file(tmp_path: Any) -> None:
    path = str(tmp_path / "access.log")
    log = AccessLog(path)
    log.add_hits(0.0, hits(0, 10))  # below the flush threshold: only close() writes them
    log.close()
    with open(path, "rb") as fh:
        assert numbers(fh.read()) == list(range(10))
    assert log.disabled
    log.add_hits(0.0, hits(10, 600))  # after close: nothing happens, nothing fails
    log.flush()


def test_a_disk_that_stays_behind_costs_dropped_lines_not_memory(fifo: tuple[str, int],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path, reader = fifo
    monkeypatch.setattr(accesslog, "MAX_QUEUED", 200_000)
    log = AccessLog(path)
    for n in range(0, 8192, 512):  # 16 flushes of ~66 KB: the pipe takes one, the queue two more
        log.add_hits(0.0, hits(n, 512))
    assert log.dropped > 0
    data = read_all(reader, 8192 - log.dropped)
    written = numbers(data)
    assert len(written) == 8192 - log.dropped
    assert written == sorted(written) and written[:512] == list(range(512))  # whole flushes, in order
    log.close()
