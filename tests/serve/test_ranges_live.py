"""Range and conditional answers over a real socket, through every body path:
sendfile (memory cache off) and memory (memory cache on), under uvloop and the stock asyncio loop."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from tests.conftest import raw_exchange, status_of

BODY = os.urandom(1000)
KEY = "titles/81239481/720p/seg_00001.m4s"
PATH = "/" + KEY

PATHS = {
    "sendfile": {"storage": {"memory_cache": {"max_object_size": 0}}},
    "memory": {"storage": {"memory_cache": {"max_object_size": "64KiB"}}},
}


@pytest.fixture(params=[("uvloop", "sendfile"), ("uvloop", "memory"), ("asyncio", "sendfile"),
                        ("asyncio", "memory")], ids=lambda p: f"{p[0]}-{p[1]}", scope="module")
def box(request: Any, tmp_path_factory: Any) -> Any:
    loop_kind, path = request.param
    from tests.conftest import start_inprocess

    handle = start_inprocess(str(tmp_path_factory.mktemp("ranges")), {KEY: BODY}, loop_kind=loop_kind,
                             overrides=_merge(PATHS[path]))
    yield handle
    handle.close()


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
def test_single_range_is_206_with_exact_bytes(box: Any, header: str, start: int, end: int) -> None:
    status, headers, body = box.get(PATH, {"Range": header})
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end}/1000"
    assert headers["content-length"] == str(end - start + 1)
    assert body == BODY[start:end + 1]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=5-2", "bytes=99999999999999999999999-"])
def test_unsatisfiable_range_is_416(box: Any, header: str) -> None:
    status, headers, _ = box.get(PATH, {"Range": header})
    assert status == 416
    assert headers["content-range"] == "bytes */1000"


@pytest.mark.parametrize("header", ["items=0-9", "bytes=alpha", "bytes =0-9", "bytes=\uff10-9", "bytes=\u0660-9",
                                    "bytes=0-1," * 40 + "bytes=0-1", ",".join(["bytes=0-1"] + ["5-6"] * 49)])
def test_ignored_range_is_200_whole(box: Any, header: str) -> None:
    status, headers, body = _raw_get(box.port, header)
    assert status == 200
    assert headers["content-length"] == "1000"
    assert body == BODY


def test_fifty_overlapping_ranges_never_send_more_than_the_object(box: Any) -> None:
    header = "bytes=" + ",".join(f"{i}-{i + 500}" for i in range(50))
    status, _, body = box.get(PATH, {"Range": header})
    assert status == 200
    assert body == BODY


def test_two_ranges_are_multipart_byteranges(box: Any) -> None:
    status, headers, body = box.get(PATH, {"Range": "bytes=0-1,5-6"})
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


def test_if_range_with_current_etag_gives_206_and_other_etag_gives_200(box: Any) -> None:
    _, headers, _ = box.get(PATH)
    etag = headers["etag"]
    assert etag.startswith('"') and not etag.startswith('W/')
    status, _, body = box.get(PATH, {"Range": "bytes=0-9", "If-Range": etag})
    assert (status, body) == (206, BODY[:10])
    status, _, body = box.get(PATH, {"Range": "bytes=0-9", "If-Range": '"something-else"'})
    assert (status, body) == (200, BODY)
    status, _, body = box.get(PATH, {"Range": "bytes=0-9", "If-Range": headers["last-modified"]})
    assert (status, body) == (206, BODY[:10])


def test_if_none_match_current_etag_is_304_without_body(box: Any) -> None:
    _, headers, _ = box.get(PATH)
    raw = raw_exchange(box.port, f"GET {PATH} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {headers['etag']}\r\n"
                                  "Connection: close\r\n\r\n".encode())
    assert status_of(raw) == 304
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b""
    assert headers["etag"].encode() in head
    status, _, _ = box.get(PATH, {"If-Modified-Since": headers["last-modified"]})
    assert status == 304
    status, _, _ = box.get(PATH, {"If-Match": '"nope"'})
    assert status == 412


def test_head_has_the_headers_of_get_and_no_body(box: Any) -> None:
    _, get_headers, _ = box.get(PATH)
    raw = raw_exchange(box.port, f"HEAD {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b""
    head_headers = _headers(head)
    for name in ("content-length", "content-type", "etag", "last-modified", "cache-control", "accept-ranges"):
        assert head_headers[name] == get_headers[name], name
    raw = raw_exchange(box.port, f"HEAD {PATH} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n"
                                  "Connection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 206 and body == b""
    assert _headers(head)["content-length"] == "10"


def test_keep_alive_serves_many_requests_on_one_connection(box: Any) -> None:
    request = f"GET {PATH} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n".encode()
    raw = raw_exchange(box.port, request * 5 + f"GET {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       .encode())
    assert raw.count(b"HTTP/1.1 206") == 5
    assert raw.count(b"HTTP/1.1 200") == 1
    assert raw.endswith(BODY)


def _raw_get(port: int, range_header: str) -> tuple[int, dict[str, str], bytes]:
    raw = raw_exchange(port, f"GET {PATH} HTTP/1.1\r\nHost: x\r\nRange: {range_header}\r\nConnection: close\r\n\r\n"
                       .encode())
    head, _, body = raw.partition(b"\r\n\r\n")
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
