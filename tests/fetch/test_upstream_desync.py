"""Issue 13 (2): an origin that sends more than its response's framing must never poison another key.

The origin here is a raw socket server, because the fault is below HTTP: after a correct response it writes
bytes shaped like a second response on the same keep-alive connection, either at once (same segment) or a
moment later (after the box has put the connection back in its pool)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Box
from tests.fetch.test_pull_through import fetching_box

POISON = b"POISONED-BYTES-FROM-A-DESYNCED-ORIGIN"  # 37 bytes
FAKE = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 37\r\n\r\n" + POISON
BODIES = {f"/titles/9/720p/seg_{i}.m4s": bytes([65 + i]) * (20_000 + i) for i in range(4)}
LIAR = "/titles/9/720p/seg_0.m4s"


class DesyncOrigin:
    """Answers every known path with its body; after LIAR's body it also sends FAKE (at once or later)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                self.requests.append(path)
                body = BODIES.get(path)
                if body is None:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                # a Range asked for the first slice is answered whole (200): the object is small
                answer = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n" % len(body)
                if path == LIAR and self.delay == 0:
                    conn.sendall(answer + body + FAKE)
                    continue
                conn.sendall(answer + body)
                if path == LIAR:
                    time.sleep(self.delay)
                    conn.sendall(FAKE)

    def close(self) -> None:
        self._stop = True
        self._sock.close()


@pytest.fixture(params=[0.0, 0.3], ids=["same-segment", "after-release"])
def desync_origin(request: pytest.FixtureRequest) -> Iterator[DesyncOrigin]:
    origin = DesyncOrigin(request.param)
    yield origin
    origin.close()


def test_bytes_past_a_response_never_become_another_keys_object(box_factory: Callable[..., Box],
                                                               desync_origin: DesyncOrigin) -> None:
    box = fetching_box(box_factory, [{"name": "origin", "url": desync_origin.url, "kind": "origin"}])
    status, _, body = box.get(LIAR)
    assert status == 200 and body == BODIES[LIAR]
    time.sleep(0.6)  # the surplus has arrived on the connection the box may have pooled
    for path, expected in list(BODIES.items())[1:]:
        for _ in range(2):  # the miss, then the hit from storage
            status, headers, body = box.get(path)
            assert status == 200 and body == expected, (path, headers, body[:60])
    assert POISON.decode() not in box.log()
