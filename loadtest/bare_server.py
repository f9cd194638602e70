"""`python -m loadtest.bare_server ROOT PORT`: the floor for a Python hit, a bare uvloop Protocol.

It answers `GET /path[?query]` with the file ROOT/path from memory (read once at start), in one write of
a prebuilt head and the body, keep-alive, nothing else: no parser but a split of the request line, no
log, no counters, no timers. loadtest.profile_hit `--bare` measures it under the same wrk load as oca
and nginx, so the distance between it and oca is the cost of oca's own work around a hit, and between it
and nginx the cost of Python and uvloop themselves. A measurement aid, never served to anyone.

`--httptools` parses each request with httptools (as oca does) instead of splitting the request line.
`--sendfile` sends each body from a descriptor kept open (the head with MSG_MORE, then os.sendfile), as
nginx does, instead of from memory with one write.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
from collections.abc import Sequence
from typing import cast

import httptools
import uvloop

_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def load(root: str) -> dict[bytes, tuple[bytes, bytes]]:
    """'/relative/path' -> (head, body) for every file under root."""
    answers: dict[bytes, tuple[bytes, bytes]] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                body = fh.read()
            head = (b"HTTP/1.1 200 OK\r\nServer: bare\r\nContent-Type: video/iso.segment\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            answers[("/" + os.path.relpath(path, root)).encode()] = (head, body)
    return answers


class Bare(asyncio.Protocol):
    """Splits the request line of each read (wrk sends one whole request per read) and answers it."""

    def __init__(self, answers: dict[bytes, tuple[bytes, bytes]]) -> None:
        self.answers = answers
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        target = data.split(b" ", 2)[1].split(b"?", 1)[0]
        answer = self.answers.get(target)
        if answer is None:
            self.transport.write(_NOT_FOUND)
        else:
            self.transport.writelines(answer)


class SendFile(Bare):
    """Bare, but the body goes out with os.sendfile from a descriptor kept open (nginx's way with
    `sendfile on; tcp_nopush on; open_file_cache`)."""

    def __init__(self, answers: dict[bytes, tuple[bytes, bytes]], files: dict[bytes, tuple[int, int]]) -> None:
        super().__init__(answers)
        self.files = files
        self.sock: socket.socket | None = None
        self.pending: tuple[int, int, int] | None = None  # descriptor, offset, end of a body still to send

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # uvloop's transport hands out a stand-in without send(): a socket object of our own on a dup
        self.sock = socket.fromfd(transport.get_extra_info("socket").fileno(), socket.AF_INET, socket.SOCK_STREAM)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sock is not None:
            if self.pending is not None:
                asyncio.get_running_loop().remove_writer(self.sock.fileno())
            self.sock.close()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None and self.sock is not None
        target = data.split(b" ", 2)[1].split(b"?", 1)[0]
        answer, file = self.answers.get(target), self.files.get(target)
        if answer is None or file is None or self.pending is not None:
            self.transport.write(_NOT_FOUND)
            return
        fd, size = file
        self.sock.send(answer[0], socket.MSG_MORE)
        self._send(fd, 0, size)

    def _send(self, fd: int, offset: int, end: int) -> None:
        assert self.sock is not None
        out = self.sock.fileno()
        while offset < end:
            try:
                offset += os.sendfile(out, fd, offset, end - offset)
            except BlockingIOError:
                self.pending = (fd, offset, end)
                asyncio.get_running_loop().add_writer(out, self._resume)
                return
        self.pending = None

    def _resume(self) -> None:
        assert self.sock is not None and self.pending is not None
        asyncio.get_running_loop().remove_writer(self.sock.fileno())
        self._send(*self.pending)


class Parsed(Bare):
    """Bare, but every request goes through httptools' parser and its callbacks, as in oca."""

    def __init__(self, answers: dict[bytes, tuple[bytes, bytes]]) -> None:
        super().__init__(answers)
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def on_message_complete(self) -> None:
        assert self.transport is not None
        answer = self.answers.get(self.url.split(b"?", 1)[0])
        self.url, self.headers = b"", {}
        if answer is None:
            self.transport.write(_NOT_FOUND)
        else:
            self.transport.writelines(answer)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bare_server", description=__doc__.split("\n")[0])
    parser.add_argument("root")
    parser.add_argument("port", type=int)
    parser.add_argument("--httptools", action="store_true", help="parse with httptools, as oca does")
    parser.add_argument("--sendfile", action="store_true", help="bodies by os.sendfile from open descriptors")
    args = parser.parse_args(argv)
    answers = load(args.root)
    files = {target: (os.open(os.path.join(args.root, target.decode()[1:]), os.O_RDONLY), len(body))
             for target, (_, body) in answers.items()} if args.sendfile else {}

    def protocol() -> asyncio.Protocol:
        if args.sendfile:
            return SendFile(answers, files)
        return Parsed(answers) if args.httptools else Bare(answers)

    loop = uvloop.new_event_loop()
    server = loop.run_until_complete(loop.create_server(protocol, "127.0.0.1", args.port, backlog=4096))
    gc.freeze()
    print(f"bare: {len(answers)} objects on 127.0.0.1:{args.port}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
