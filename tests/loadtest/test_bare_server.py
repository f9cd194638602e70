"""loadtest.bare_server: the floor profile_hit compares a worker with answers each file whole, with and without
httptools, on a real socket."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest
import uvloop

from loadtest.bare_server import Bare, Parsed, SendFile, load


@pytest.mark.parametrize("kind", [Bare, Parsed])
def test_it_answers_each_file_whole_and_keeps_the_connection(tmp_path: Any, kind: type[Bare]) -> None:
    (tmp_path / "titles" / "1").mkdir(parents=True)
    (tmp_path / "titles" / "1" / "seg_0.m4s").write_bytes(b"x" * 8192)
    answers = load(str(tmp_path))
    loop = uvloop.new_event_loop()
    try:
        server = loop.run_until_complete(loop.create_server(lambda: kind(answers), "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # uvloop.Server has them

        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                got = b""
                for target, end in ((b"/titles/1/seg_0.m4s?token=t", b"x" * 64), (b"/nothing", b"0\r\n\r\n")):
                    sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    while not got.endswith(end):
                        got += sock.recv(65536)
                return got

        got = loop.run_until_complete(asyncio.wait_for(loop.run_in_executor(None, fetch), 10))
        server.close()
    finally:
        loop.close()
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 8192\r\n\r\n" + b"x" * 8192 in got
    assert got.endswith(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


def test_the_sendfile_variant_sends_each_body_whole_from_its_open_descriptor(tmp_path: Any) -> None:
    """`--sendfile` (nginx's way: the head with MSG_MORE, the body by os.sendfile): a 64 KiB body and a 4 MiB
    one (the socket takes it in several sends, resumed when writable), twice each on one connection."""
    (tmp_path / "t").mkdir()
    small, large = bytes(range(256)) * 256, bytes(reversed(range(256))) * (16 << 10)
    (tmp_path / "t" / "small.m4s").write_bytes(small)
    (tmp_path / "t" / "large.m4s").write_bytes(large)
    answers = load(str(tmp_path))
    files = {target: (os.open(tmp_path / target.decode()[1:], os.O_RDONLY), len(body))
             for target, (_, body) in answers.items()}
    loop = uvloop.new_event_loop()
    try:
        server = loop.run_until_complete(loop.create_server(lambda: SendFile(answers, files), "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # uvloop.Server has them

        def fetch() -> list[bytes]:
            bodies = []
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for target in (b"/t/small.m4s", b"/t/large.m4s", b"/t/large.m4s", b"/t/small.m4s"):
                    sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    got = b""
                    while b"\r\n\r\n" not in got:
                        got += sock.recv(65536)
                    head, body = got.split(b"\r\n\r\n", 1)
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += sock.recv(1 << 20)
                    bodies.append(body)
            return bodies

        got = loop.run_until_complete(asyncio.wait_for(loop.run_in_executor(None, fetch), 20))
        server.close()
    finally:
        loop.close()
        for fd, _ in files.values():
            os.close(fd)
    assert got == [small, large, large, small]
