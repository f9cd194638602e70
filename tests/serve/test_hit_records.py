"""Plain hits from memory are recorded in batches (oca.serve.server.record_hits), and still every one of them
counts and gets its own access-log line: the same counters as one `observe` per hit, each line stamped with
its own response's end, nothing left behind by a report or a drain. The hit path's shortcuts in parsing
(header names decoded once, a repeated Host head not checked again) keep every refusal in place."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from oca.serve import connection
from oca.serve.accesslog import AccessLog, Hit, _hit_lines
from oca.serve.server import HIT_BATCH
from oca.serve.stats import MAX_FLUSH_HITS, WorkerStats
from tests.conftest import write_box_config


@dataclass
class Entry:
    """What a plain hit is counted on (oca.serve.messages.HitCounted), as a cache entry is."""

    key: str
    unreported: int = 0


A, B, C = Entry("titles/1/a.m4s"), Entry("titles/1/b.m4s"), Entry("titles/1/c.m4s")
HITS: list[Hit] = [
    (A, 8192, 0.0002, "127.0.0.1", '"method":"GET",', 10.0),
    (B, 100, 0.003, "127.0.0.2", '"method":"GET",', 10.5),
    (A, 8192, 0.7, "::1", '"method":"GET",', 11.25),
    (C, 0, 20.0, "127.0.0.1", '"method":"GET",', 12.0),
]


def test_a_batch_of_hits_counts_as_one_observe_per_hit() -> None:
    one_by_one, batched = WorkerStats(), WorkerStats()
    for entry, sent, seconds, _, _, _ in HITS:
        one_by_one.observe(200, "hit", "memory", sent, seconds, entry.key)
    batched.observe_hits(HITS[:1])
    batched.observe_hits(HITS[1:])
    assert A.unreported == 2 and not batched.hits  # counted on the entries until the report
    want, got = one_by_one.take(0), batched.take(0)
    assert got.requests == want.requests == [(200, "hit", 4)]
    assert got.bytes_sent == want.bytes_sent == [("memory", "hit", 16484)]
    assert got.duration_buckets == want.duration_buckets
    assert got.duration_sum == pytest.approx(want.duration_sum)
    assert got.hits == want.hits == {"titles/1/a.m4s": 2, "titles/1/b.m4s": 1, "titles/1/c.m4s": 1}
    assert A.unreported == B.unreported == C.unreported == 0


def test_hits_counted_on_the_entries_and_by_key_add_up_in_the_report() -> None:
    """A key counted both ways in one report (a plain hit and, say, a range of it), and two entries of one key
    (the cache dropped whole and looked the key up again in between), are one count per key."""
    stats = WorkerStats()
    again = Entry("titles/1/a.m4s")
    stats.observe(206, "hit", "memory", 10, 0.001, "titles/1/a.m4s")
    stats.observe_hits([(Entry("titles/1/a.m4s"), 1, 0.001, "c", "", 0.0), (again, 1, 0.001, "c", "", 0.0),
                        (again, 1, 0.001, "c", "", 0.0)])
    assert stats.take(0).hits == {"titles/1/a.m4s": 4}
    stats.observe_hits([(again, 1, 0.001, "c", "", 0.0)])
    assert stats.take(0).hits == {"titles/1/a.m4s": 1}  # from zero again


def test_a_batch_of_hits_keeps_the_per_key_table_bounded() -> None:
    stats = WorkerStats()
    stats.observe_hits([(Entry(f"k{i}"), 1, 0.001, "c", "", 0.0) for i in range(MAX_FLUSH_HITS + 50)])
    report = stats.take(0)
    assert len(report.hits) == MAX_FLUSH_HITS
    assert report.requests == [(200, "hit", MAX_FLUSH_HITS + 50)]


def read_lines(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_each_hit_line_carries_its_own_end_time_and_duration(tmp_path: Any) -> None:
    path = str(tmp_path / "access.log")
    log = AccessLog(path)
    fields = '"method":"GET","target":"/titles/1/a.m4s","key":"titles/1/a.m4s","status":200,"bytes":8192,'
    log.add_hits(1_700_000_000.0, [(A, 8192, 0.0025, "127.0.0.1", fields, 1.5), (A, 8192, 0.5, "::1", fields, 2.25)])
    assert log.sync(5)
    first, second = read_lines(path)
    assert first == {"ts": 1_700_000_001.5, "client": "127.0.0.1", "method": "GET", "target": "/titles/1/a.m4s",
                     "key": "titles/1/a.m4s", "status": 200, "bytes": 8192, "ms": 2.5, "cache": "hit",
                     "tier": "memory"}
    assert second["ts"] == 1_700_000_002.25 and second["ms"] == 500.0 and second["client"] == "::1"


@pytest.mark.parametrize(("seconds", "ended", "text"), [
    (0.0, 0.0, '"ts":1700000000.000,"client":"c","method":"GET","ms":0.000,'),
    (0.0000004, 0.0004, '"ts":1700000000.000,"client":"c","method":"GET","ms":0.000,'),
    (0.0000005, 0.0005, '"ts":1700000000.000,"client":"c","method":"GET","ms":0.000,'),  # halves to even
    (0.0015, 0.0015, '"ts":1700000000.002,"client":"c","method":"GET","ms":1.500,'),
    (0.0000069, 0.999, '"ts":1700000000.999,"client":"c","method":"GET","ms":0.007,'),
    (12.3456784, 0.9996, '"ts":1700000001.000,"client":"c","method":"GET","ms":12345.678,'),
])
def test_a_hit_lines_time_and_duration_are_written_to_the_millisecond_and_microsecond(
        seconds: float, ended: float, text: str) -> None:
    """The text of the two numbers a hit's line formats itself, at the edges of their three decimals."""
    line = _hit_lines(1_700_000_000.0, [(Entry("k"), 1, seconds, "c", '"method":"GET",', ended)])
    assert line == "{" + text + '"cache":"hit","tier":"memory"}\n'


def test_the_log_flushes_by_lines_not_by_batches(tmp_path: Any) -> None:
    path = str(tmp_path / "access.log")
    log = AccessLog(path)
    log.add_hits(0.0, [(Entry("k"), 1, 0.001, "c", '"method":"GET",', float(i)) for i in range(511)])
    assert os.path.getsize(path) == 0  # 511 lines: not yet
    log.add_hits(0.0, [(Entry("k"), 1, 0.001, "c", '"method":"GET",', 511.0)])
    assert log.written(5)  # (written() waits for the writer thread; it flushes nothing itself)
    assert len(read_lines(path)) == 512  # the 512th line flushes, though only two batches were added
    log.close()


class NullTransport(asyncio.Transport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock, self.data = sock, bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": ("127.0.0.1", 1)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.data += chunk

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.fixture
def worker(tmp_path: Any) -> Iterator[Any]:
    from oca.config import load_box_config
    from oca.serve.worker import Worker
    from oca.storage import Store

    config = load_box_config(write_box_config(str(tmp_path)))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.m4s").write_bytes(b"a" * 1000)
    with Store.open(config.storage) as store:
        store.put_file(str(tmp_path / "c" / "a.m4s"), "t/a.m4s")
    loop = asyncio.new_event_loop()
    listener, peer = socket.socketpair()
    try:
        yield Worker(config, listener, None, loop), peer
    finally:
        loop.close()
        listener.close()
        peer.close()


def connect(worker: Any, peer: socket.socket) -> tuple[connection.Connection, NullTransport]:
    conn = connection.Connection(worker.server)
    transport = NullTransport(peer)
    conn.connection_made(transport)
    return conn, transport


def test_batched_hits_are_all_counted_and_logged_by_the_report_and_the_drain(worker: Any, tmp_path: Any,
                                                                             monkeypatch: Any) -> None:
    box, peer = worker
    conn, transport = connect(box, peer)
    conn.data_received(b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\n\r\n")  # read from disk into memory
    box.stats.take(1)
    total = HIT_BATCH + 6
    for _ in range(total):
        conn.data_received(b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.data.count(b"HTTP/1.1 200 OK\r\n") == total + 1
    assert box.stats.requests == {(200, "hit"): HIT_BATCH}  # one batch recorded, 6 hits still held
    reports = []
    take = WorkerStats.take
    monkeypatch.setattr(WorkerStats, "take", lambda self, n: reports.append(take(self, n)) or reports[-1])
    box.loop.run_until_complete(box._report_once())  # what the worker sends the master every interval
    assert reports[0].requests == [(200, "hit", total)] and reports[0].hits == {"t/a.m4s": total}
    for _ in range(3):
        conn.data_received(b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    box.loop.run_until_complete(box.server.drain(1.0))
    assert box.server.access_log.written(5)  # the drain hands the lines to the log's writer thread
    lines = read_lines(str(tmp_path / "access.log"))
    assert len(lines) == 1 + total + 3
    assert all(line["key"] == "t/a.m4s" and line["status"] == 200 and line["cache"] == "hit" for line in lines)
    times = [line["ts"] for line in lines]
    assert times == sorted(times)  # each line's own end time, in the order answered
    assert box.stats.requests == {(200, "hit"): 3}


def test_header_names_are_remembered_up_to_a_bound(worker: Any) -> None:
    box, peer = worker
    conn, transport = connect(box, peer)
    for i in range(connection._MAX_NAMES + 50):
        conn.data_received(b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\nX-Invented-%d: 1\r\n\r\n" % i)
    assert transport.data.count(b"HTTP/1.1 200 OK\r\n") == connection._MAX_NAMES + 50
    assert len(connection._NAMES) <= connection._MAX_NAMES


@pytest.mark.parametrize("second", [
    b"GET /t/a.m4s HTTP/1.1\r\n\r\n",  # no Host
    b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",  # the same Host twice
    b"GET /t/a.m4s HTTP/1.1\r\nHost: x/y\r\n\r\n",  # an invalid Host
    b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
], ids=["no-host", "host-twice", "bad-host", "te", "content-length"])
def test_a_head_after_a_good_one_on_the_connection_is_still_checked(worker: Any, second: bytes) -> None:
    box, peer = worker
    conn, transport = connect(box, peer)
    conn.data_received(b"GET /t/a.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.data_received(second)
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", transport.data) == [b"200", b"400"], bytes(transport.data[-400:])
    assert conn.closed
