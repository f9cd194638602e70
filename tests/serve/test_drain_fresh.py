"""Draining a worker (SIGTERM, a reload, a release switch) under load: a connection accepted but not yet
sent its first request is not cut (its client has no reason to send the request again, RFC 9112 §9.3.1
allows retrying only on a reused connection); it is answered once and closed. An idle keep-alive connection
that was used already is closed at once, as before."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

SEGMENT = "titles/1/720p/seg_00001.m4s"


def _wait(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_fresh_connection_is_answered_before_a_drain_closes_it(inprocess_factory: Callable[..., Any]) -> None:
    box = inprocess_factory({SEGMENT: b"x" * 1000}, tokens={"required": False})
    used = socket.create_connection(("127.0.0.1", box.port), timeout=10)
    used.sendall(f"GET /{SEGMENT} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert used.recv(65536).startswith(b"HTTP/1.1 200")
    fresh = socket.create_connection(("127.0.0.1", box.port), timeout=10)
    _wait(lambda: len(box.server.connections) == 2)
    drained = asyncio.run_coroutine_threadsafe(box.server.drain(10), box.loop)
    assert used.recv(1) == b""  # idle after a request: closed at once
    fresh.sendall(f"GET /{SEGMENT} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    answer = _read_all(fresh)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"x" * 1000), answer[:200]
    assert b"\r\nconnection: close\r\n" in answer.lower()
    drained.result(10)
    used.close()
    fresh.close()


def test_a_connection_accepted_as_the_drain_begins_is_answered_not_refused(
        inprocess_factory: Callable[..., Any]) -> None:
    """The kernel may hand a worker a connection in the moment its drain begins (the listener is closed after
    the flag is set; uvloop accepts in batches): its request is answered once with Connection: close, never
    the canned 503 of a full box (the one failed request of a refused release's switch under load)."""
    box = inprocess_factory({SEGMENT: b"x" * 1000}, tokens={"required": False})

    async def begin_draining() -> None:  # the drain's flag, before its listener is closed
        box.server._draining = True

    asyncio.run_coroutine_threadsafe(begin_draining(), box.loop).result(10)
    late = socket.create_connection(("127.0.0.1", box.port), timeout=10)
    late.sendall(f"GET /{SEGMENT} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    answer = _read_all(late)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"x" * 1000), answer[:200]
    assert b"\r\nconnection: close\r\n" in answer.lower()
    late.close()
