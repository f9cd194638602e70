"""Range and conditional answers over a real socket, through every body path (one body plan decides them all,
oca.http.body_plan): a stored hit by sendfile (memory cache off) and from memory (memory cache on), under uvloop
and the stock asyncio loop; a miss streamed from its growing fill file while a slow origin sends it; and an
object stored in slices, both cold (each slice filled as it is sent) and with every slice stored."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import http_request, kill_box, raw_exchange, start_box, status_of, write_box_config
from tests.upstream.origin import Fault, Origin

BODY = os.urandom(1000)
KEY = "titles/81239481/720p/seg_00001.m4s"
PATH = "/" + KEY

PATHS = {
    "sendfile": {"storage": {"memory_cache": {"max_object_size": 0}}},
    "memory": {"storage": {"memory_cache": {"max_object_size": "64KiB"}}},
}
SLICE = 256  # the sliced object is 4 slices: 256, 256, 256 and 232 bytes
# the origin sends 100 bytes every 20 ms: an answer is streamed while its fill grows
SLOW = Fault(dribble=(100, 0.02))


@dataclass
class Subject:
    """One body path: where to ask for BODY, and the Cache-Status every 2xx answer of that path carries."""

    port: int
    path: Callable[[], str]  # the path of the next request: a new cold key where each request must miss
    cache_status: str

    def get(self, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        status, got, body = http_request(self.port, self.path(), headers, method)
        self.check(status, got)
        return status, got, body

    def check(self, status: int, headers: dict[str, str]) -> None:
        if 200 <= status < 300:
            assert self.cache_status in headers["cache-status"], headers


_HITS = [("uvloop", "sendfile"), ("uvloop", "memory"), ("asyncio", "sendfile"), ("asyncio", "memory")]


@pytest.fixture(params=[f"hit-{loop}-{path}" for loop, path in _HITS] + ["growing", "sliced-cold", "sliced-stored"],
                scope="module")
def box(request: Any, tmp_path_factory: Any) -> Iterator[Subject]:
    kind: str = request.param
    if kind.startswith("hit-"):
        from tests.conftest import start_inprocess

        _, loop_kind, path = kind.split("-")
        handle = start_inprocess(str(tmp_path_factory.mktemp("ranges")), {KEY: BODY}, loop_kind=loop_kind,
                                 overrides=_merge(PATHS[path]))
        yield Subject(handle.port, lambda: PATH, "oca; hit")
        handle.close()
        return
    with Origin() as origin:
        workdir = str(tmp_path_factory.mktemp(kind))
        fetch = {"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}], "first_byte_timeout": "5s",
                 "between_bytes_timeout": "5s", "slice_size": SLICE if kind.startswith("sliced") else "4MiB"}
        real = start_box(write_box_config(workdir, fetch=fetch), workdir, session=True)
        try:
            numbers = itertools.count(2)

            def cold() -> str:
                key = f"titles/81239481/720p/seg_{next(numbers):05d}.m4s"
                origin.add(key, BODY, fault=SLOW)  # the same bytes, so the same ETag and Last-Modified
                return "/" + key

            if kind == "sliced-stored":
                origin.add(KEY, BODY, fault=SLOW)
                assert http_request(real.port, PATH)[2] == BODY
                _wait_for_slices(real, 4)
                yield Subject(real.port, lambda: PATH, "oca; hit; detail=slices")
            else:
                yield Subject(real.port, cold, "fwd=uri-miss" if kind == "growing" else "detail=slices")
            assert "Traceback" not in real.log(), real.log()
        finally:
            kill_box(real)


def _wait_for_slices(real: Any, count: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while len(real.admin(f"/inventory?prefix={KEY}")["objects"]) < count:
        assert time.monotonic() < deadline, real.admin(f"/inventory?prefix={KEY}")
        time.sleep(0.05)


def _merge(overrides: dict[str, Any]) -> dict[str, Any]:
    storage = {
        "health_check_interval": "1s",
        "access_flush_interval": "100ms",
        **overrides["storage"],
    }
    return {"storage": storage}


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-9", 0, 9),
    ("bytes=990-", 990, 999),
    ("bytes=-10", 990, 999),
    ("bytes=-2000", 0, 999),
    ("bytes=0-99999", 0, 999),
    ("bytes=0-0", 0, 0),
    ("bytes=999-999", 999, 999),
    ("bytes=0-99999999999999999999999999", 0, 999),
])
def test_single_range_is_206_with_exact_bytes(box: Subject, header: str, start: int, end: int) -> None:
    status, headers, body = box.get({"Range": header})
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end}/1000"
    assert headers["content-length"] == str(end - start + 1)
    assert body == BODY[start:end + 1]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=5-2", "bytes=99999999999999999999999-"])
def test_unsatisfiable_range_is_416(box: Subject, header: str) -> None:
    status, headers, _ = box.get({"Range": header})
    assert status == 416
    assert headers["content-range"] == "bytes */1000"


@pytest.mark.parametrize("header", ["items=0-9", "bytes=alpha", "bytes =0-9", "bytes=\uff10-9", "bytes=\u0660-9",
                                    "bytes=0-1," * 40 + "bytes=0-1", ",".join(["bytes=0-1"] + ["5-6"] * 49)])
def test_ignored_range_is_200_whole(box: Subject, header: str) -> None:
    status, headers, body = _raw_get(box, header)
    assert status == 200
    assert headers["content-length"] == "1000"
    assert body == BODY


def test_fifty_overlapping_ranges_never_send_more_than_the_object(box: Subject) -> None:
    header = "bytes=" + ",".join(f"{i}-{i + 500}" for i in range(50))
    status, _, body = box.get({"Range": header})
    assert status == 200
    assert body == BODY


def test_two_ranges_are_multipart_byteranges(box: Subject) -> None:
    status, headers, body = box.get({"Range": "bytes=0-1,5-6"})
    assert status == 206
    match = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", headers["content-type"])
    assert match
    boundary = match.group(1).encode()
    assert int(headers["content-length"]) == len(body)
    parts = body.split(b"--" + boundary)
    assert parts[-1].strip() == b"--"
    payloads = [p for p in parts[1:-1]]
    assert len(payloads) == 2
    for part, (start, end) in zip(payloads, [(0, 1), (5, 6)], strict=True):
        head, _, data = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {start}-{end}/1000".encode() in head
        assert b"Content-Type: video/iso.segment" in head
        assert data[:-2] == BODY[start:end + 1]


@pytest.mark.parametrize("header, ranges", [
    ("bytes=250-260,700-", [(250, 260), (700, 999)]),  # each part crosses a slice boundary (slices of 256)
    ("bytes=-10,0-0,300-599", [(990, 999), (0, 0), (300, 599)]),  # the client's order: last slice first
    ("bytes=900-999,5000-,0-99", [(900, 999), (0, 99)]),  # an unsatisfiable member is dropped
])
def test_multipart_parts_carry_the_bytes_they_name(box: Subject, header: str, ranges: list[tuple[int, int]]) -> None:
    import email.parser
    import email.policy

    status, headers, body = box.get({"Range": header})
    assert status == 206 and int(headers["content-length"]) == len(body)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + body)
    assert message.get_content_type() == "multipart/byteranges"
    parts = list(message.iter_parts())
    assert [part["Content-Range"] for part in parts] == [f"bytes {a}-{b}/1000" for a, b in ranges]
    assert [part.get_payload(decode=True) for part in parts] == [BODY[a:b + 1] for a, b in ranges]


def test_if_range_with_current_etag_gives_206_and_other_etag_gives_200(box: Subject) -> None:
    _, headers, _ = box.get()
    etag = headers["etag"]
    assert etag.startswith('"') and not etag.startswith('W/')
    status, _, body = box.get({"Range": "bytes=0-9", "If-Range": etag})
    assert (status, body) == (206, BODY[:10])
    status, _, body = box.get({"Range": "bytes=0-9", "If-Range": '"something-else"'})
    assert (status, body) == (200, BODY)
    status, _, body = box.get({"Range": "bytes=0-9", "If-Range": headers["last-modified"]})
    assert (status, body) == (206, BODY[:10])
    status, _, body = box.get({"Range": "bytes=0-1,5-6", "If-Range": etag})
    assert status == 206 and body.count(b"Content-Range: bytes") == 2
    # §13.1.5: a Range that If-Range sets aside is never evaluated, so never a 416
    status, _, body = box.get({"Range": "bytes=5000-", "If-Range": '"something-else"'})
    assert (status, body) == (200, BODY)


def test_if_none_match_current_etag_is_304_without_body(box: Subject) -> None:
    _, headers, _ = box.get()
    raw = raw_exchange(box.port, f"GET {box.path()} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {headers['etag']}\r\n"
                                  "Connection: close\r\n\r\n".encode())
    assert status_of(raw) == 304
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b""
    assert headers["etag"].encode() in head
    assert b"\r\ncontent-length:" not in head.lower()  # §15.4.5: it would describe a body the 304 does not send
    status, _, _ = box.get({"If-Modified-Since": headers["last-modified"]})
    assert status == 304
    status, got, _ = box.get({"If-Match": '"nope"', "Range": "bytes=0-9"})  # preconditions before Range
    assert status == 412 and got["cache-control"] == "no-store"
    status, _, body = box.get({"If-Match": headers["etag"], "Range": "bytes=0-9"})
    assert (status, body) == (206, BODY[:10])


def test_head_has_the_headers_of_get_and_no_body(box: Subject) -> None:
    _, get_headers, _ = box.get()
    raw = raw_exchange(box.port, f"HEAD {box.path()} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b""
    head_headers = _headers(head)
    for name in ("content-length", "content-type", "etag", "last-modified", "cache-control", "accept-ranges"):
        assert head_headers[name] == get_headers[name], name
    raw = raw_exchange(box.port, f"HEAD {box.path()} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n"
                                  "Connection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 206 and body == b""
    assert _headers(head)["content-length"] == "10"


def test_keep_alive_serves_many_requests_on_one_connection(box: Subject) -> None:
    requests = [f"GET {box.path()} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n".encode() for _ in range(5)]
    raw = raw_exchange(box.port, b"".join(requests)
                       + f"GET {box.path()} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert raw.count(b"HTTP/1.1 206") == 5
    assert raw.count(b"HTTP/1.1 200") == 1
    assert raw.endswith(BODY)


def _raw_get(box: Subject, range_header: str) -> tuple[int, dict[str, str], bytes]:
    raw = raw_exchange(box.port, f"GET {box.path()} HTTP/1.1\r\nHost: x\r\nRange: {range_header}\r\n"
                                 "Connection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    box.check(status_of(raw), _headers(head))
    return status_of(raw), _headers(head), body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_pipelined_memory_and_sendfile_answers_arrive_whole_and_in_order(inprocess_factory: Any) -> None:
    import socket
    import time

    small, big = os.urandom(10_000), os.urandom(3_000_000)
    box = inprocess_factory({"titles/p/a.m4s": small, "titles/p/b.mp4": big},
                            storage={"memory_cache": {"max_object_size": "256KiB"}})
    order = ["a.m4s", "b.mp4", "a.m4s", "a.m4s", "b.mp4", "a.m4s", "b.mp4"]
    expected = {"a.m4s": small, "b.mp4": big}
    with socket.create_connection(("127.0.0.1", box.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.sendall(b"".join(f"GET /titles/p/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for name in order))
        time.sleep(0.5)  # let the server fill the socket and its transport buffer
        data = bytearray()
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if not chunk or (data.count(b"HTTP/1.1 200") == len(order) and len(data) >= sum(
                    len(expected[n]) for n in order)):
                break
    view = bytes(data)
    for name in order:
        head, _, rest = view.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert rest[:length] == expected[name], name
        view = rest[length:]
    assert view == b""
