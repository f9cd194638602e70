"""The test origin itself, checked with plain clients (http.client, raw sockets)."""

from __future__ import annotations

import http.client
import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import http_request
from tests.upstream.origin import PAGE, Fault, Origin, closed_port, iter_pattern, pattern, pattern_byte

GiB = 1024**3
BIG = "titles/t1/1080p/movie.mp4"
SMALL = "titles/t1/720p/seg1.m4s"
SMALL_DATA = bytes(range(256)) * 4 + b"tail"


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as o:
        o.add(SMALL, SMALL_DATA, etag='"v1"', content_type="video/iso.segment")
        o.add(BIG, size=4 * GiB, etag='"big"')
        yield o


def get(origin: Origin, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return http_request(origin.port, path, headers, method, timeout=5)


def raw(origin: Origin, path: str, extra: str = "", timeout: float = 5.0) -> bytes:
    """Everything the origin sends for one request, until it closes (Connection: close asked)."""
    with socket.create_connection(("127.0.0.1", origin.port), timeout=timeout) as sock:
        sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def split(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


# --- content ---


def test_pattern_matches_the_reference_formula_and_pages_differ() -> None:
    for start in (0, 1, PAGE - 3, 5 * PAGE + 17, 4 * GiB - 40, (1 << 40) + 5):
        assert pattern(start, start + 40) == bytes(pattern_byte(i) for i in range(start, start + 40))
    # a slice misplaced by whole pages (or by a 2 MiB / 4 MiB slice) is visible
    first = pattern(0, 4096)
    for shift in (PAGE, 2 << 20, 4 << 20, 64 << 20, 1 << 32):
        assert pattern(shift, shift + 4096) != first
    assert b"".join(iter_pattern(10, 3 * PAGE + 5, chunk=PAGE)) == pattern(10, 3 * PAGE + 5)


def test_get_and_head_of_a_real_object(origin: Origin) -> None:
    status, headers, body = get(origin, "/" + SMALL)
    assert (status, body) == (200, SMALL_DATA)
    assert headers["content-length"] == str(len(SMALL_DATA))
    assert headers["etag"] == '"v1"'
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/iso.segment"
    assert headers["last-modified"].endswith("GMT")
    status, headers, body = get(origin, "/" + SMALL, method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(len(SMALL_DATA)))
    assert origin.bytes_sent(SMALL) == len(SMALL_DATA)
    assert [r.method for r in origin.requests] == ["GET", "HEAD"]


def test_ranges_on_a_4_gib_virtual_object_send_only_the_requested_bytes(origin: Origin) -> None:
    status, headers, _ = get(origin, "/" + BIG, method="HEAD")
    assert (status, headers["content-length"]) == (200, str(4 * GiB))
    cases = [("bytes=0-99", 0, 99), ("bytes=3000000000-3000065535", 3_000_000_000, 3_000_065_535),
             (f"bytes={4 * GiB - 1000}-", 4 * GiB - 1000, 4 * GiB - 1), ("bytes=-512", 4 * GiB - 512, 4 * GiB - 1),
             (f"bytes={4 * GiB - 10}-{8 * GiB}", 4 * GiB - 10, 4 * GiB - 1)]
    for spec, first, last in cases:
        origin.reset_counters()
        status, headers, body = get(origin, "/" + BIG, {"Range": spec})
        assert status == 206, spec
        assert headers["content-range"] == f"bytes {first}-{last}/{4 * GiB}"
        assert headers["content-length"] == str(last - first + 1)
        assert body == origin.expected(BIG, first, last + 1)
        assert origin.bytes_sent() == last - first + 1
        (record,) = origin.requests
        assert (record.range, record.content_range, record.status) == (spec, (first, last), 206)


def test_unsatisfiable_and_ignored_ranges(origin: Origin) -> None:
    for spec in (f"bytes={4 * GiB}-", "bytes=-0"):
        status, headers, body = get(origin, "/" + BIG, {"Range": spec})
        assert (status, headers["content-range"], body) == (416, f"bytes */{4 * GiB}", b"")
    for spec in ("bytes=0-1,5-6", "bytes=9-2", "items=0-1"):  # not a single valid range: the whole object
        status, _, body = get(origin, "/" + SMALL, {"Range": spec})
        assert (status, body) == (200, SMALL_DATA)


def test_conditionals_and_a_changed_etag(origin: Origin) -> None:
    status, headers, body = get(origin, "/" + SMALL, {"If-None-Match": '"v0", W/"v1"'})
    assert (status, body, headers["etag"]) == (304, b"", '"v1"')
    assert get(origin, "/" + SMALL, {"If-None-Match": "*"})[0] == 304
    assert get(origin, "/" + SMALL, {"If-Modified-Since": "Tue, 01 Jan 2030 00:00:00 GMT"})[0] == 304
    assert get(origin, "/" + SMALL, {"If-Modified-Since": "Tue, 01 Jan 2019 00:00:00 GMT"})[0] == 200
    assert get(origin, "/" + SMALL, {"Range": "bytes=0-9", "If-Range": '"v1"'})[0] == 206
    origin.set_etag(SMALL, '"v2"')
    status, headers, body = get(origin, "/" + SMALL, {"If-None-Match": '"v1"'})
    assert (status, body, headers["etag"]) == (200, SMALL_DATA, '"v2"')
    assert get(origin, "/" + SMALL, {"Range": "bytes=0-9", "If-Range": '"v1"'})[0] == 200
    lm = get(origin, "/" + SMALL, method="HEAD")[1]["last-modified"]
    assert get(origin, "/" + SMALL, {"Range": "bytes=0-9", "If-Range": lm})[0] == 206


def test_404_405_and_remove(origin: Origin) -> None:
    assert get(origin, "/titles/nope.m4s")[0] == 404
    assert get(origin, "/" + SMALL, method="POST")[0] == 405
    origin.remove(SMALL)
    assert get(origin, "/" + SMALL)[0] == 404
    assert get(origin, "/" + BIG + "?x=1", {"Range": "bytes=0-0"})[0] == 206  # query strings are ignored


def test_keep_alive_and_counters(origin: Origin) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/" + SMALL)
            assert conn.getresponse().read() == SMALL_DATA
        conn.request("GET", "/" + BIG, headers={"Range": "bytes=10-19"})
        assert conn.getresponse().read() == pattern(10, 20)
    finally:
        conn.close()
    assert origin.wait_until(lambda o: o.in_flight() == 0, timeout=2)  # `finished` is set just after the last byte
    assert origin.connections == 1
    assert len({r.conn for r in origin.requests}) == 1
    assert (origin.count(), origin.count(SMALL), origin.count(BIG), origin.count(BIG, "HEAD")) == (4, 3, 1, 0)
    assert origin.bytes_sent() == 3 * len(SMALL_DATA) + 10
    assert origin.bytes_sent(BIG) == 10
    assert all(r.finished is not None and r.outcome == "ok" for r in origin.requests)
    assert origin.requests[0].headers["host"].startswith("127.0.0.1")
    origin.reset_counters()
    assert (origin.count(), origin.bytes_sent(), origin.connections, origin.requests) == (0, 0, 0, [])


# --- faults ---


def test_refuse_closes_without_a_byte(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(refuse=True))
    assert raw(origin, SMALL) == b""
    origin.set_fault(SMALL, Fault(refuse=True, reset=True))
    with pytest.raises(ConnectionResetError):
        raw(origin, SMALL)
    assert [(r.status, r.outcome, r.bytes_sent) for r in origin.requests] == [(None, "refused", 0)] * 2


def test_hang_before_headers_is_silent_then_closes(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(hang_before_headers=0.3))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", origin.port), timeout=0.1) as sock:
        sock.sendall(f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(2)
        assert read_all(sock) == b""
    assert time.monotonic() - t0 >= 0.29
    (record,) = origin.requests
    assert (record.status, record.outcome) == (None, "hung")


def test_a_client_that_gives_up_on_a_hang_ends_the_request(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(hang_before_headers=math.inf))
    with socket.create_connection(("127.0.0.1", origin.port), timeout=2) as sock:
        sock.sendall(f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert origin.wait_until(lambda o: o.in_flight() == 1, timeout=2)
    assert origin.wait_until(lambda o: o.in_flight() == 0, timeout=2)
    assert origin.requests[0].outcome == "client_gone"


def test_hang_after_headers_sends_headers_then_nothing(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(hang_after_headers=0.2))
    head, body = split(raw(origin, SMALL))
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1028" in head
    assert body == b""
    assert (origin.requests[0].status, origin.requests[0].outcome, origin.bytes_sent()) == (200, "hung", 0)


def test_delay_first_byte_then_normal(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(delay_first_byte=0.2))
    t0 = time.monotonic()
    assert get(origin, "/" + SMALL)[::2] == (200, SMALL_DATA)
    assert time.monotonic() - t0 >= 0.19


def test_dribble_and_stall(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(dribble=(256, 0.05)))
    t0 = time.monotonic()
    assert get(origin, "/" + SMALL)[2] == SMALL_DATA  # 5 chunks: 4 pauses
    assert time.monotonic() - t0 >= 0.19
    origin.set_fault(BIG, Fault(stall_at=(100, 0.2)))
    with socket.create_connection(("127.0.0.1", origin.port), timeout=0.1) as sock:
        sock.sendall(f"GET /{BIG} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-199\r\n\r\n".encode())
        got = b""
        with pytest.raises(TimeoutError):
            while True:
                got += sock.recv(65536)
        assert split(got)[1] == pattern(0, 100)
        sock.settimeout(2)
        while len(split(got)[1]) < 200:
            got += sock.recv(65536)
        assert split(got)[1] == pattern(0, 200)


def test_truncate_at(origin: Origin) -> None:
    origin.set_fault(BIG, Fault(truncate_at=1000))
    conn = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=5)
    conn.request("GET", "/" + BIG, headers={"Range": "bytes=5000-9999"})
    resp = conn.getresponse()
    assert resp.getheader("content-length") == "5000"
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    conn.close()
    assert err.value.partial == pattern(5000, 6000)
    assert (origin.bytes_sent(), origin.requests[0].outcome) == (1000, "truncated")


def test_extra_bytes(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(extra_bytes=7))
    head, body = split(raw(origin, SMALL))
    assert b"Content-Length: 1028" in head
    assert body == SMALL_DATA + b"#" * 7


def test_status_fault_and_times(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(status=503, times=2))
    for _ in range(2):
        status, _, body = get(origin, "/" + SMALL)
        assert (status, body) == (503, b"origin fault 503\n")
    assert get(origin, "/" + SMALL)[::2] == (200, SMALL_DATA)  # the fault cleared itself
    origin.set_fault(None, Fault(status=502))  # every key without a fault of its own
    assert get(origin, "/" + BIG, {"Range": "bytes=0-0"})[0] == 502
    assert get(origin, "/anything")[0] == 502
    assert [r.status for r in origin.requests] == [503, 503, 200, 502, 502]


def test_no_content_length_close_delimited_and_chunked(origin: Origin) -> None:
    origin.set_fault(SMALL, Fault(no_content_length=True))
    head, body = split(raw(origin, SMALL))
    assert b"Content-Length" not in head and b"Connection: close" in head
    assert body == SMALL_DATA
    origin.set_fault(SMALL, Fault(chunked=True, dribble=(300, 0)))
    status, headers, body = get(origin, "/" + SMALL)
    assert (status, body, headers["transfer-encoding"]) == (200, SMALL_DATA, "chunked")
    assert "content-length" not in headers
    origin.set_fault(SMALL, Fault(chunked=True, truncate_at=500))
    head, body = split(raw(origin, SMALL))
    assert body.endswith(SMALL_DATA[:500] + b"\r\n") and not body.endswith(b"0\r\n\r\n")


def test_pause_holds_requests_until_resume(origin: Origin) -> None:
    origin.pause(SMALL)
    results: list[bytes] = []
    clients = [threading.Thread(target=lambda: results.append(get(origin, "/" + SMALL)[2])) for _ in range(3)]
    for client in clients:
        client.start()
    assert origin.wait_until(lambda o: o.in_flight(SMALL) == 3, timeout=2)
    time.sleep(0.05)
    assert results == [] and origin.bytes_sent() == 0
    assert get(origin, "/" + BIG, {"Range": "bytes=0-0"})[0] == 206  # other keys are not held
    origin.resume(SMALL)
    for client in clients:
        client.join(5)
    assert results == [SMALL_DATA] * 3


def test_a_client_that_goes_away_stops_the_stream(origin: Origin) -> None:
    with socket.create_connection(("127.0.0.1", origin.port), timeout=2) as sock:
        sock.sendall(f"GET /{BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 1 << 20:
            got += len(sock.recv(65536))
    assert origin.wait_until(lambda o: o.in_flight() == 0, timeout=3)
    assert origin.requests[0].outcome == "client_gone"
    assert origin.bytes_sent() < 64 << 20  # bounded by socket buffers, not the 4 GiB object


def test_stop_cuts_hung_connections_promptly() -> None:
    origin = Origin().start()
    origin.add(SMALL, SMALL_DATA, fault=Fault(hang_before_headers=math.inf))
    sock = socket.create_connection(("127.0.0.1", origin.port), timeout=2)
    sock.sendall(f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert origin.wait_until(lambda o: o.count() == 1, timeout=2)
    t0 = time.monotonic()
    origin.stop()
    assert time.monotonic() - t0 < 1.0
    with sock:
        assert read_all(sock) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", origin.port), timeout=1).close()


def test_closed_port_refuses() -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
