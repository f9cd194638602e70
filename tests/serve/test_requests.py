"""What the data port answers to everything that is not a plain hit: bad paths, bad requests, slow
clients, CORS, media types and Cache-Control, CMCD in the access log."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import pytest

from tests.conftest import raw_exchange, start_inprocess, status_of

OBJECTS = {
    "titles/1/master.m3u8": b"#EXTM3U\n",
    "titles/1/manifest.mpd": b"<MPD/>",
    "titles/1/720p/seg_00001.m4s": os.urandom(5000),
    "titles/1/720p/seg_00001.ts": b"G" * 188,
    "titles/1/720p/init.mp4": b"\0" * 64,
    "titles/1/audio/seg.m4a": b"a" * 10,
    "titles/1/audio/seg.aac": b"a" * 10,
    "titles/1/subs/en.vtt": b"WEBVTT\n",
    "titles/1/art/poster.jpg": b"\xff\xd8",
    "titles/1/art/poster.png": b"\x89PNG",
    "titles/1/720p/clip.m4v": b"v",
}
SECRET = b"this file lies outside the cache"


@pytest.fixture(scope="module")
def box(tmp_path_factory: Any) -> Any:
    workdir = tmp_path_factory.mktemp("requests")
    (workdir / "secret.txt").write_bytes(SECRET)
    handle = start_inprocess(str(workdir), OBJECTS, overrides={
        "server": {"header_timeout": "1s", "keepalive_timeout": "2s", "max_header_bytes": "4KiB",
                   "max_headers": 20}})
    yield handle
    handle.close()


@pytest.mark.parametrize("target", [
    b"/../secret.txt", b"/titles/../../secret.txt", b"/titles/1/%2e%2e/%2e%2e/secret.txt",
    b"/titles%2f1%2fmaster.m3u8", b"/titles/1/%252e%252e/master.m3u8", b"/titles/1/master.m3u8%00",
    b"/titles//1/master.m3u8", b"/titles\\1\\master.m3u8", b"/%2e%2e/secret.txt", b"/./titles/1/master.m3u8",
    b"http://evil.example/../secret.txt", b"/titles/1/.hidden", b"//etc/passwd", b"/etc/passwd",
    b"/" + b"a" * 3000,
])
def test_traversal_never_reads_outside_the_cache(box: Any, target: bytes) -> None:
    raw = raw_exchange(box.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) in (400, 404), raw[:200]
    assert SECRET not in raw


def test_absolute_form_target_is_served_by_path(box: Any) -> None:
    raw = raw_exchange(box.port, b"GET http://cdn.example/titles/1/master.m3u8 HTTP/1.1\r\nHost: cdn.example\r\n"
                                 b"Connection: close\r\n\r\n")
    assert status_of(raw) == 200 and raw.endswith(b"#EXTM3U\n")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 405),
    (b"GET /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
    (b"GET /titles/1/master.m3u8 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
    (b"GET /titles/1/missing.m4s HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
])
def test_bad_requests_get_the_right_4xx_never_500(box: Any, request_bytes: bytes, status: int) -> None:
    raw = raw_exchange(box.port, request_bytes)
    assert status_of(raw) == status, raw[:300]


def test_missing_object_says_why(box: Any) -> None:
    status, headers, _ = box.get("/titles/1/720p/seg_99999.m4s")
    assert status == 404
    assert headers["x-oca-reason"] == "not in cache"
    assert "fwd=uri-miss" in headers["cache-status"]


def test_slowloris_gets_408_and_is_closed(box: Any) -> None:
    with socket.create_connection(("127.0.0.1", box.port), timeout=10) as sock:
        sock.sendall(b"GET /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert status_of(data) == 408
        assert time.monotonic() - started < 5


def test_idle_keepalive_connection_is_closed(box: Any) -> None:
    with socket.create_connection(("127.0.0.1", box.port), timeout=10) as sock:
        sock.sendall(b"GET /titles/1/master.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        assert status_of(sock.recv(65536)) == 200
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert 1.5 < time.monotonic() - started < 6


@pytest.mark.parametrize("key, media_type", [
    ("titles/1/master.m3u8", "application/vnd.apple.mpegurl"),
    ("titles/1/manifest.mpd", "application/dash+xml"),
    ("titles/1/720p/seg_00001.m4s", "video/iso.segment"),
    ("titles/1/720p/seg_00001.ts", "video/mp2t"),
    ("titles/1/720p/init.mp4", "video/mp4"),
    ("titles/1/audio/seg.m4a", "audio/mp4"),
    ("titles/1/audio/seg.aac", "audio/aac"),
    ("titles/1/subs/en.vtt", "text/vtt"),
    ("titles/1/art/poster.jpg", "image/jpeg"),
    ("titles/1/art/poster.png", "image/png"),
    ("titles/1/720p/clip.m4v", "video/mp4"),
])
def test_media_types(box: Any, key: str, media_type: str) -> None:
    status, headers, body = box.get("/" + key)
    assert status == 200 and body == OBJECTS[key]
    assert headers["content-type"] == media_type


def test_cache_control_is_short_for_playlists_and_immutable_for_segments(box: Any) -> None:
    _, playlist, _ = box.get("/titles/1/master.m3u8")
    _, segment, _ = box.get("/titles/1/720p/seg_00001.m4s")
    assert playlist["cache-control"] == "public, max-age=2"
    assert "immutable" in segment["cache-control"] and "max-age=31536000" in segment["cache-control"]


def test_cors_preflight_and_exposed_headers(box: Any) -> None:
    status, headers, body = box.get("/titles/1/720p/seg_00001.m4s", method="OPTIONS", headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range, cmcd-request"})
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == "*"
    allowed = headers["access-control-allow-headers"].lower()
    for name in ("range", "cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"):
        assert name in allowed
    _, headers, _ = box.get("/titles/1/720p/seg_00001.m4s", {"Origin": "https://player.example"})
    exposed = headers["access-control-expose-headers"].lower()
    for name in ("content-range", "content-length", "etag"):
        assert name in exposed


def test_query_string_is_not_part_of_the_key(box: Any) -> None:
    plain = box.get("/titles/1/720p/seg_00001.m4s")
    with_cmcd = box.get("/titles/1/720p/seg_00001.m4s?CMCD=bl%3D21300%2Cbr%3D3200%2Csid%3D%22abc%22&x=1")
    assert plain[0] == with_cmcd[0] == 200
    assert plain[2] == with_cmcd[2]
    assert plain[1]["etag"] == with_cmcd[1]["etag"]


def test_cmcd_from_query_and_headers_lands_in_the_access_log(box_factory: Any) -> None:
    box = box_factory({"titles/9/720p/seg_1.m4s": b"x" * 100})
    box.get("/titles/9/720p/seg_1.m4s?CMCD=bl%3D21300%2Cbr%3D3200%2Cot%3Dv%2Csid%3D%226e2fb550%22")
    box.get("/titles/9/720p/seg_1.m4s", {"CMCD-Request": "bl=1000,mtp=25400", "CMCD-Object": "br=3200,d=4004,ot=v",
                                         "CMCD-Session": 'sid="6e2fb550",sf=h', "CMCD-Status": "rtp=15000"})
    log_path = os.path.join(box.workdir, "access.log")
    deadline = time.monotonic() + 5
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if os.path.exists(log_path):
            with open(log_path) as fh:
                records = [json.loads(line) for line in fh if line.strip()]
            if len([r for r in records if "cmcd" in r]) >= 2:
                break
        time.sleep(0.1)
    cmcd = sorted((r["cmcd"] for r in records if "cmcd" in r), key=lambda c: "sf" in c)  # two workers: any order
    assert len(cmcd) == 2, records
    assert cmcd[0]["bl"] == 21300 and cmcd[0]["br"] == 3200 and cmcd[0]["sid"] == "6e2fb550"
    assert cmcd[1]["bl"] == 1000 and cmcd[1]["d"] == 4004 and cmcd[1]["sf"] == "h" and cmcd[1]["rtp"] == 15000
    assert all(r["ms"] > 0 for r in records), records  # a real duration, not the loop's coarse clock
    for record in (r for r in records if r["target"] != "/healthz"):
        assert record["key"] == "titles/9/720p/seg_1.m4s" and record["status"] == 200 and record["cache"] == "hit"
