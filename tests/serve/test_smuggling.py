"""Request smuggling shapes against a running box: each is answered 400 and the connection is closed.

The data port takes no request content at all (GET, HEAD and OPTIONS only), so any request that announces
a body (Content-Length above 0, or any Transfer-Encoding) is refused at the end of its head, before a byte
of the body is read: nothing after the head can ever be parsed as a second request. Malformed framing that
llhttp already refuses (invalid characters, bad Content-Length, obs-fold, ...) gets the same 400 and close.
Unknown transfer codings get 400 as well, not 501 (RFC 9112 §6.1 allows 501): here every transfer coding
is refused because content is, so the answer does not depend on whether the coding is known.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Box, import_dir, kill_box, start_box, status_of, write_box_config, write_objects

KEY = "titles/1/720p/seg_00001.m4s"
OBJECT = b"segment-bytes" * 10
BIG_KEY = "titles/1/1080p/rendition.mp4"
BIG = os.urandom(1 << 20)  # beyond the memory cache: sent with sendfile, so answers queue behind it
GET = f"GET /{KEY} HTTP/1.1\r\nHost: cdn.example\r\n".encode()
SECOND = f"GET /{KEY} HTTP/1.1\r\nHost: cdn.example\r\n\r\n".encode()  # what a smuggler hopes is parsed


@pytest.fixture(scope="module")
def box(tmp_path_factory: Any) -> Iterator[Box]:
    workdir = str(tmp_path_factory.mktemp("smuggling"))
    config = write_box_config(workdir, server={"header_timeout": "3s"})
    content = os.path.join(workdir, "content")
    write_objects(content, {KEY: OBJECT, BIG_KEY: BIG})
    assert import_dir(config, content).returncode == 0
    handle = start_box(config, workdir)
    yield handle
    kill_box(handle)


def exchange(port: int, data: bytes, timeout: float = 2.0) -> tuple[bytes, bool]:
    """Send raw bytes (never half-closing), read until the server closes; (bytes read, closed by the server
    within `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        chunks = []
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
        return b"".join(chunks), False


SHAPES = {
    # RFC 9112 §6.3: both present is an attempt at smuggling; a server MAY reject, and must close
    "cl-and-te": GET + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-and-cl": GET + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SECOND,
    "cl-and-te-zero": GET + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SECOND,
    # RFC 9110 §8.6: duplicates, same or different values
    "duplicate-cl-same": GET + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nabcde" + SECOND,
    "duplicate-cl-different": GET + b"Content-Length: 0\r\nContent-Length: 40\r\n\r\n" + SECOND,
    "duplicate-cl-zero": GET + b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n",
    "cl-list": GET + b"Content-Length: 5, 5\r\n\r\nabcde" + SECOND,
    # obfuscated Transfer-Encoding
    "te-xchunked": GET + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-leading-space": GET + b"Transfer-Encoding:  chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-chunked-identity": GET + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SECOND,
    "te-identity": GET + b"Transfer-Encoding: identity\r\n\r\n" + SECOND,
    "te-tab": GET + b"Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-space-before-colon": GET + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-obs-fold": GET + b"X-Padding: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-value-obs-fold": GET + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-uppercase": GET + b"TRANSFER-ENCODING: CHUNKED\r\n\r\n0\r\n\r\n" + SECOND,
    "te-twice": GET + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-plain-chunked": GET + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "te-http10": f"GET /{KEY} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode() + SECOND,
    # chunk extensions with a bare LF (the chunked body is never read: refused at the head)
    "chunk-ext-bare-lf": GET + b"Transfer-Encoding: chunked\r\n\r\n5;ext=\"a\nb\"\r\nabcde\r\n0\r\n\r\n" + SECOND,
    "chunk-size-bare-lf": GET + b"Transfer-Encoding: chunked\r\n\r\n5\nabcde\r\n0\r\n\r\n" + SECOND,
    # CR, LF or NUL inside header values; bare CR in the request line
    "header-value-bare-cr": GET + b"X-A: a\rTransfer-Encoding: chunked\r\n\r\n" + SECOND,
    "header-value-bare-lf": GET + b"X-A: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SECOND,
    "header-value-nul": GET + b"X-A: a\x00b\r\n\r\n",
    "header-name-nul": GET + b"X-\x00A: b\r\n\r\n",
    "request-line-bare-cr": f"GET /{KEY} HTTP/1.1\rHost: cdn.example\r\n\r\n".encode(),
    "request-line-cr-in-target": f"GET /{KEY}\r HTTP/1.1\r\nHost: cdn.example\r\n\r\n".encode(),
    # Content-Length that is not a small decimal
    "cl-negative": GET + b"Content-Length: -1\r\n\r\n" + SECOND,
    "cl-plus": GET + b"Content-Length: +5\r\n\r\nabcde" + SECOND,
    "cl-hex": GET + b"Content-Length: 0x5\r\n\r\nabcde" + SECOND,
    "cl-overflow": GET + b"Content-Length: 18446744073709551621\r\n\r\n" + SECOND,
    "cl-absurd": GET + b"Content-Length: 99999999999999999\r\n\r\n" + SECOND,
    "cl-space-inside": GET + b"Content-Length: 1 0\r\n\r\n" + SECOND,
    "cl-empty": GET + b"Content-Length: \r\n\r\n" + SECOND,
    # RFC 9112 §3.2: an HTTP/1.1 request without Host, any request with two Host lines or an invalid Host
    "no-host": f"GET /{KEY} HTTP/1.1\r\n\r\n".encode() + SECOND,
    "two-hosts": GET + b"Host: other.example\r\n\r\n" + SECOND,
    "two-hosts-same": GET + b"Host: cdn.example\r\n\r\n" + SECOND,
    "two-hosts-http10": f"GET /{KEY} HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n".encode(),
    "host-with-a-path": f"GET /{KEY} HTTP/1.1\r\nHost: cdn.example/x\r\n\r\n".encode() + SECOND,
    # a body on GET/HEAD/OPTIONS, followed by a pipelined request: the body is never parsed as a request
    "get-with-body-then-pipelined": GET + b"Content-Length: %d\r\n\r\n" % len(SECOND) + SECOND + SECOND,
    "head-with-body": f"HEAD /{KEY} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode() + SECOND,
    "options-with-body": f"OPTIONS /{KEY} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode() + SECOND,
    "get-with-chunked-body": GET + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SECOND) + SECOND
    + b"\r\n0\r\n\r\n" + SECOND,
}


@pytest.mark.parametrize("name", SHAPES)
def test_smuggling_shape_gets_400_and_the_connection_closes(box: Box, name: str) -> None:
    raw, closed = exchange(box.port, SHAPES[name])
    assert status_of(raw) == 400, raw[:300]
    assert raw.count(b"HTTP/1.1 ") == 1, f"more than one response: {raw!r}"
    assert b"Connection: close\r\n" in raw
    assert closed, f"the connection stayed open after {raw[:100]!r}"


@pytest.mark.parametrize("request_bytes", [
    GET + b"Content-Length: 0\r\n\r\n" + SECOND,
    GET + b"\r\n" + SECOND,
], ids=["content-length-0", "plain"])
def test_requests_without_content_are_still_served_and_pipelined(box: Box, request_bytes: bytes) -> None:
    raw, _ = exchange(box.port, request_bytes, timeout=0.5)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2, raw[:300]
    assert raw.count(OBJECT) == 2


def test_an_http10_request_without_host_is_served(box: Box) -> None:
    raw, _ = exchange(box.port, f"GET /{KEY} HTTP/1.0\r\n\r\n".encode(), timeout=2)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(OBJECT)


def test_a_shape_after_a_good_pipelined_request_is_refused_in_turn(box: Box) -> None:
    raw, closed = exchange(box.port, SECOND + SHAPES["get-with-body-then-pipelined"])
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.count(OBJECT) == 1
    assert re.findall(rb"HTTP/1.1 (\d+) ", raw) == [b"200", b"400"]
    assert closed


def test_every_queued_answer_goes_out_before_the_close(box: Box) -> None:
    big = f"GET /{BIG_KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    raw, closed = exchange(box.port, big + big + SHAPES["cl-and-te"], timeout=5)
    assert re.findall(rb"HTTP/1.1 (\d+) ", raw[:300]) == [b"200"] and raw.count(BIG) == 2
    assert raw.endswith(b"\r\n\r\n400 Bad Request: malformed request: Transfer-Encoding can't be present with "
                        b"Content-Length\n") and closed
    with socket.create_connection(("127.0.0.1", box.port), timeout=5) as sock:  # the client half-closes
        sock.sendall(big * 3)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
    assert received.count(BIG) == 3


def test_the_box_still_serves_after_every_shape(box: Box) -> None:
    status, _, body = box.get("/" + KEY)
    assert status == 200 and body == OBJECT
