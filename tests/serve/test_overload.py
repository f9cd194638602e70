"""A worker at server.max_connections answers new connections 503 with Retry-After, then closes them;
once a connection goes, the next one is served again."""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.conftest import status_of

KEY = "titles/1/720p/seg_00001.m4s"
REQUEST = f"GET /{KEY} HTTP/1.1\r\nHost: cdn.example\r\n\r\n".encode()
LIMIT = 4


def _read_until_closed(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, bool]:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        return b"".join(chunks), False
    except ConnectionResetError:
        pass
    return b"".join(chunks), True


def _served_keep_alive(port: int) -> socket.socket:
    """A connection the worker admitted: one request answered, left open (keep-alive)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(REQUEST)
    head = sock.recv(65536)
    assert status_of(head) == 200, head[:200]
    return sock


def test_past_max_connections_new_connections_get_503_retry_after_and_close(box_factory: Any) -> None:
    box = box_factory({KEY: b"x" * 1000}, server={"workers": 1, "max_connections": LIMIT,
                                                   "header_timeout": "30s", "keepalive_timeout": "30s"})
    held = [_served_keep_alive(box.port) for _ in range(LIMIT)]
    try:
        for send_first in (False, True):
            with socket.create_connection(("127.0.0.1", box.port), timeout=5) as extra:
                if send_first:
                    extra.sendall(REQUEST)
                raw, closed = _read_until_closed(extra)
            assert status_of(raw) == 503, raw
            head = raw.split(b"\r\n\r\n", 1)[0].lower()
            assert b"\r\nretry-after: 1" in head and b"\r\nconnection: close" in head
            assert b"\r\ncache-control: no-store" in head
            assert closed
        held.pop().close()  # one slot frees up: the worker notices the close and admits the next
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection(("127.0.0.1", box.port), timeout=5) as again:
                again.sendall(REQUEST)
                raw = again.recv(65536)
            if status_of(raw) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status_of(raw) == 200, raw[:200]
    finally:
        for sock in held:
            sock.close()
