"""control.status_client over real loopback sockets: kept connections, the retry after an idle close, the
body limit, the idle-connection bound, `Connection: close`, the token, and a cancel half-way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from control.status_client import StatusClient, Target


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1: `answer(head) -> bytes | None` (None: say nothing)."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.on_connect: Callable[[], object] = lambda: None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.on_connect()
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                reply = self.answer(head)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        self.drop_all()
        await self.server.wait_closed()


def ok(body: bytes = b'{"box": "b1"}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(lambda head: ok())
    yield srv
    await srv.stop()


async def test_one_connection_serves_every_poll_and_carries_the_token(server: Server) -> None:
    client = StatusClient()
    target = Target.of(await server.start() + "/admin/", "/status", token="box-secret")
    for _ in range(3):
        assert await client.get(target) == (200, b'{"box": "b1"}')
    assert server.connections == 1 and client.idle == 1
    assert server.heads[0].startswith(b"GET /admin/status HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer box-secret" in server.heads[0]
    client.close()


async def test_a_connection_the_box_closed_while_idle_is_retried_once_on_a_new_one(server: Server) -> None:
    client = StatusClient()
    target = Target.of(await server.start(), "/status")
    await client.get(target)
    server.drop_all()
    await asyncio.sleep(0.05)
    assert await client.get(target) == (200, b'{"box": "b1"}')
    assert server.connections == 2
    client.close()


async def test_a_fresh_connection_that_breaks_is_an_error_not_a_retry() -> None:
    srv = Server(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"box\"")  # ends early, then closes
    base = await srv.start()
    srv.answer = lambda head: (srv.drop_all(), None)[1]
    client = StatusClient()
    with pytest.raises(ConnectionError):
        await client.get(Target.of(base, "/status"))
    assert srv.connections == 1
    await srv.stop()


async def test_a_body_over_the_limit_is_refused() -> None:
    srv = Server(lambda head: ok(b"x" * 5000))
    client = StatusClient(max_body=4096)
    with pytest.raises(ValueError, match="larger than 4096 bytes"):
        await client.get(Target.of(await srv.start(), "/status"))
    assert client.idle == 0
    await srv.stop()


async def test_junk_is_a_value_error() -> None:
    srv = Server(lambda head: b"SMTP ready\r\n\r\n")
    with pytest.raises(ValueError, match=r"not HTTP/1\.1"):
        await StatusClient().get(Target.of(await srv.start(), "/status"))
    await srv.stop()


async def test_connection_close_is_kept_and_idle_connections_are_bounded() -> None:
    closing = Server(lambda head: ok(extra="Connection: close\r\n"))
    a, b = Server(lambda head: ok()), Server(lambda head: ok())
    client = StatusClient(max_idle=1)
    await client.get(Target.of(await closing.start(), "/status"))
    assert client.idle == 0  # the box said close
    ta, tb = Target.of(await a.start(), "/status"), Target.of(await b.start(), "/status")
    for _ in range(3):  # a poller's rounds: the same order each time
        await client.get(ta)
        await client.get(tb)
        assert client.idle == 1
    assert (a.connections, b.connections) == (1, 3)  # a keeps its connection; b, beyond the bound, reconnects
    client.close()
    for srv in (closing, a, b):
        await srv.stop()


async def test_one_parser_reads_answer_after_answer_on_a_kept_connection() -> None:
    chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbus\r\n1\r\ny\r\n0\r\n\r\n"
    answers = iter([ok(b'{"box": "b1", "n": 1}'), chunked, ok(b"")])
    srv = Server(lambda head: next(answers))
    client = StatusClient()
    target = Target.of(await srv.start(), "/status")
    assert await client.get(target) == (200, b'{"box": "b1", "n": 1}')
    assert await client.get(target) == (503, b"busy")
    assert await client.get(target) == (200, b"")
    assert srv.connections == 1
    client.close()
    await srv.stop()


async def test_two_gets_to_one_box_at_once_do_not_share_its_kept_connection() -> None:
    srv = Server(lambda head: ok())
    client = StatusClient()
    target = Target.of(await srv.start(), "/status")
    await client.get(target)  # kept from here on
    answers = await asyncio.gather(client.get(target), client.get(target))
    assert answers == [(200, b'{"box": "b1"}')] * 2
    assert srv.connections == 2 and client.idle == 1  # the second one had its own, closed after its answer
    assert await client.get(target) == (200, b'{"box": "b1"}') and srv.connections == 2
    client.close()
    await srv.stop()


async def test_a_request_cancelled_half_way_closes_its_connection() -> None:
    srv = Server(lambda head: None)  # never answers
    client = StatusClient()
    target = Target.of(await srv.start(), "/status")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.get(target)
    assert client.idle == 0
    srv.answer = lambda head: ok()
    assert (await client.get(target))[0] == 200
    assert srv.connections == 2
    client.close()
    await srv.stop()


def test_targets_are_http_urls_with_a_host() -> None:
    target = Target.of("https://box.example:8443", "/status")
    assert (target.host, target.port, target.tls) == ("box.example", 8443, True)
    assert b"Host: box.example:8443\r\n" in target.request
    assert Target.of("http://10.0.0.1", "/status").port == 80
    for bad in ("ftp://x", "http://", "box:8081"):
        with pytest.raises(ValueError):
            Target.of(bad, "/status")


async def test_connect_opens_a_connection_the_next_get_uses_within_the_bound() -> None:
    a, b = Server(lambda head: ok()), Server(lambda head: ok())
    client = StatusClient(max_idle=1)
    ta, tb = Target.of(await a.start(), "/status"), Target.of(await b.start(), "/status")
    assert await client.connect(ta) is True
    assert await client.connect(ta) is False  # kept already
    assert await client.connect(tb) is False  # no room
    assert (a.connections, b.connections, a.heads) == (1, 0, [])  # opened, nothing asked yet
    for _ in range(2):
        assert await client.get(ta) == (200, b'{"box": "b1"}')
    assert a.connections == 1 and client.idle == 1
    client.close()
    for srv in (a, b):
        await srv.stop()
