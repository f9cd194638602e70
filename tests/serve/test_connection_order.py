"""Bytes never overtake each other: a file body waits until the transport's own buffer is empty.

The transport here is a stand-in that can hold bytes back (as a real one does when the socket is full),
so the rule is checked deterministically; sendfile is recorded instead of sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from tests.conftest import write_box_config


class HoldingTransport(asyncio.Transport):
    """Keeps everything written in its buffer until drain() is called, like a transport on a full socket."""

    def __init__(self, sock: socket.socket, events: list[tuple[str, int]]) -> None:
        super().__init__()
        self.sock, self.events, self.buffered = sock, events, 0
        self.high, self.low = 65536, 16384  # the loops' defaults
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": ("127.0.0.1", 1)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high, self.low = (65536, 16384) if high is None else (high, low or 0)
        if self.buffered > self.high:
            self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append(("transport", len(data)))
        self.buffered += len(data)
        if self.buffered > self.high:
            self.protocol.pause_writing()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def drain(self) -> None:
        self.events.append(("drained", self.buffered))
        self.buffered = 0
        self.protocol.resume_writing()

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_a_file_body_waits_for_the_transport_buffer(tmp_path: Any, monkeypatch: Any) -> None:
    from oca.config import load_box_config
    from oca.serve.connection import Connection
    from oca.serve.worker import Worker
    from oca.storage import Store

    config = load_box_config(write_box_config(str(tmp_path)))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "small.m4s").write_bytes(b"s" * 1000)
    (tmp_path / "c" / "big.mp4").write_bytes(os.urandom(1_000_000))
    with Store.open(config.storage) as store:
        store.put_file(str(tmp_path / "c" / "small.m4s"), "t/small.m4s")
        store.put_file(str(tmp_path / "c" / "big.mp4"), "t/big.mp4")
    events: list[tuple[str, int]] = []
    monkeypatch.setattr(os, "sendfile", lambda out, f, off, n: events.append(("sendfile", n)) or n)
    loop = asyncio.new_event_loop()
    listener, a = socket.socketpair()
    try:
        worker = Worker(config, listener, None, loop)
        conn = Connection(worker.server)
        transport = HoldingTransport(a, events)
        transport.protocol = conn
        conn.connection_made(transport)
        conn.data_received(b"GET /t/small.m4s HTTP/1.1\r\nHost: x\r\n\r\nGET /t/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ("sendfile", 1_000_000) not in events, events  # the small answer is still held by the transport
        transport.drain()
        assert events[-1] == ("sendfile", 1_000_000), events
        kinds = [kind for kind, _ in events]
        assert kinds.index("drained") < kinds.index("sendfile")
        assert transport.high == 65536  # the default limits are back once the file response ended
    finally:
        loop.close()
        listener.close()
        a.close()
