"""What a request sends outside the cache key never comes back in a response, and errors are never stored.

The response head of a hit is built from the object alone (and reused across requests), so no request
header (Host, Origin, User-Agent, Cookie, X-anything) can reach a response that a shared cache downstream
would keep: no cache poisoning by reflection. With `http.cors_allow_origin: "*"` the Origin is not echoed
either. Every error carries `Cache-Control: no-store`.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import (
    Box,
    import_dir,
    kill_box,
    raw_exchange,
    start_box,
    status_of,
    write_box_config,
    write_objects,
)

KEY = "titles/1/720p/seg_00001.m4s"
OBJECT = os.urandom(4000)
MARK = "refl3ct3d"
MARKERS = (
    f"Host: {MARK}.example\r\nX-Evil: {MARK}\r\nOrigin: https://{MARK}.example\r\nUser-Agent: {MARK}/1.0\r\n"
    f"Cookie: session={MARK}\r\nX-Forwarded-For: 203.0.113.9, {MARK}\r\nReferer: https://{MARK}.example/\r\n"
    f"X-Forwarded-Host: {MARK}.example\r\n"
).encode()


@pytest.fixture(scope="module")
def box(tmp_path_factory: Any) -> Iterator[Box]:
    workdir = str(tmp_path_factory.mktemp("reflection"))
    config = write_box_config(workdir, server={"header_timeout": "1s", "max_headers": 20},
                              http={"cors_allow_origin": "*"})
    content = os.path.join(workdir, "content")
    write_objects(content, {KEY: OBJECT})
    assert import_dir(config, content).returncode == 0
    handle = start_box(config, workdir)
    yield handle
    kill_box(handle)


def exchange(port: int, data: bytes) -> bytes:
    return raw_exchange(port, data, timeout=3.0, reset_ok=True)


def head_of(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return {name.lower(): value for name, value in (line.split(": ", 1) for line in head.split("\r\n")[1:])}


def request(method: str, target: str, extra: bytes = b"") -> bytes:
    return f"{method} {target} HTTP/1.1\r\n".encode() + MARKERS + extra + b"Connection: close\r\n\r\n"


CASES = {
    "hit": (request("GET", f"/{KEY}"), 200),
    "head": (request("HEAD", f"/{KEY}"), 200),
    "range": (request("GET", f"/{KEY}", b"Range: bytes=0-9\r\n"), 206),
    "multi-range": (request("GET", f"/{KEY}", b"Range: bytes=0-9,100-109\r\n"), 206),
    "not-modified": (request("GET", f"/{KEY}", b"If-None-Match: *\r\n"), 304),
    "cmcd-query": (request("GET", f"/{KEY}?CMCD=sid%3D%22{MARK}%22"), 200),
    "cmcd-header": (request("GET", f"/{KEY}", f'CMCD-Session: sid="{MARK}"\r\n'.encode()), 200),
    "preflight": (request("OPTIONS", f"/{KEY}", f"Access-Control-Request-Method: GET\r\n"
                                                f"Access-Control-Request-Headers: x-{MARK}\r\n".encode()), 204),
    "healthz": (request("GET", "/healthz"), 200),
    "precondition-failed": (request("GET", f"/{KEY}", b'If-Match: "nope"\r\n'), 412),
    "unsatisfiable": (request("GET", f"/{KEY}", b"Range: bytes=999999-\r\n"), 416),
    "miss": (request("GET", "/titles/1/720p/missing.m4s"), 404),
    "bad-path": (request("GET", "/titles/../etc/passwd"), 400),
    "method": (request("DELETE", f"/{KEY}"), 405),
    "content": (request("GET", f"/{KEY}", b"Content-Length: 4\r\n") + b"abcd", 400),
    "malformed": (request("GET", f"/{KEY}", b"X-Bad: a\x00b\r\n"), 400),
    "too-many-headers": (request("GET", f"/{KEY}", b"".join(b"X-%d: %s\r\n" % (i, MARK.encode())
                                                              for i in range(30))), 431),
}


@pytest.mark.parametrize("name", CASES)
def test_request_headers_are_never_reflected(box: Box, name: str) -> None:
    data, status = CASES[name]
    raw = exchange(box.port, data)
    assert status_of(raw) == status, raw[:300]
    assert MARK.encode() not in raw.lower(), raw[:600]
    headers = head_of(raw)
    assert headers["access-control-allow-origin"] == "*"
    assert "set-cookie" not in headers and "vary" not in headers
    if status >= 400:
        assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("target", [f"/{KEY}", "/titles/1/720p/missing.m4s"])
def test_the_head_is_the_same_whoever_asks(box: Box, target: str) -> None:
    plain = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    for _ in range(3):  # the Date may tick between the two requests: retry then
        one, two = exchange(box.port, plain), exchange(box.port, request("GET", target))
        if head_of(one).get("date") == head_of(two).get("date"):
            break
    # CMSD-Dynamic's `etp` is this connection's own transport estimate (oca.http.cmsd), from the socket, not
    # from the request: the rest of the head must be byte for byte the same
    assert _without_etp(one.split(b"\r\n\r\n")[0]) == _without_etp(two.split(b"\r\n\r\n")[0])
    assert b"\r\nCMSD-Dynamic: " in one


def _without_etp(head: bytes) -> bytes:
    return re.sub(rb";etp=\d+", b"", head)


def test_an_encoded_crlf_in_the_target_adds_no_header(box: Box) -> None:
    raw = exchange(box.port, request("GET", f"/titles/1/a%0d%0aSet-Cookie:%20{MARK}=1%0d%0a.m4s"))
    assert status_of(raw) in (400, 404)
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nset-cookie" not in head
    assert all(re.fullmatch(rb"[!-9;-~]+: [\x20-\x7e]*", line) for line in head.split(b"\r\n")[1:]), head


def test_a_header_timeout_is_an_uncacheable_408(box: Box) -> None:
    with socket.create_connection(("127.0.0.1", box.port), timeout=10) as sock:
        sock.sendall(f"GET /{KEY} HTTP/1.1\r\n".encode() + MARKERS)
        started = time.monotonic()
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert status_of(raw) == 408 and time.monotonic() - started < 5
    assert head_of(raw)["cache-control"] == "no-store"
    assert MARK.encode() not in raw.lower()
