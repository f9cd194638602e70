"""Issue 16: a memory-fed miss's upstream body goes socket -> pipe -> feed inside the kernel (os.splice) when
it is plain HTTP/1.1 framed by Content-Length; anything else keeps aiohttp's reads. The spliced path stores
the exact bytes (digest checked), fails a truncated or stalled body like the chunk path, and the counters
(`fills_spliced`, `bytes_spliced`) say which path a fill took."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from oca.config import load_box_config
from oca.fetch.errors import UpstreamError
from oca.fetch.splice import can_splice
from oca.fetch.tierwriter import DIRECT_ALIGN
from oca.fetch.upstream import SplicedBody, Upstream, UpstreamBody, sources_from_config
from oca.protocol.messages import FillState
from oca.serve.loops import new_event_loop
from oca.storage import Store
from tests.conftest import Box, write_box_config
from tests.fetch.test_pull_through import MIB, fetching_box, origin_source, raw_get
from tests.fetch.test_streaming_fill import _takes_direct_io, _until, rig
from tests.upstream.origin import Fault, Origin

KEY = "titles/16/1080p/seg_00100.m4s"
BASE = dict(platform_splices=True, tls=False, http11=True, length=MIB, content_length=MIB,
            transfer_encoding=None, body_open=True)


# -- which bodies are spliced (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize("change, spliced", [
    ({}, True),
    ({"platform_splices": False}, False),  # no os.splice (not Linux)
    ({"tls": True}, False),  # the kernel holds ciphertext
    ({"http11": False}, False),
    ({"transfer_encoding": "chunked"}, False),  # framing the kernel cannot follow
    ({"content_length": None, "length": None}, False),  # close-delimited
    ({"content_length": None}, False),  # a 206 whose length only Content-Range gave
    ({"content_length": MIB + 1}, False),  # the header disagrees with the head's length
    ({"length": 0, "content_length": 0}, False),  # nothing to move
    ({"length": MIB - 1, "content_length": MIB - 1}, False),  # small: a pooled connection is worth the copy
    ({"body_open": False}, False),  # aiohttp read all of it already, or it failed
])
def test_which_bodies_are_spliced(change: dict[str, object], spliced: bool) -> None:
    assert can_splice(**{**BASE, **change}) is spliced  # type: ignore[arg-type]


# -- the upstream body, spliced into a file ---------------------------------------------------------------

def _upstream(tmp_path: Path, origin: Origin, **fetch: Any) -> Upstream:
    config = load_box_config(write_box_config(str(tmp_path), fetch={"sources": [origin_source(origin)], **fetch}))
    return Upstream(config.fetch, sources_from_config(config.fetch))


@contextlib.asynccontextmanager
async def _spliced(upstream: Upstream, target: Path) -> AsyncIterator[tuple[SplicedBody, int]]:
    """KEY opened from `upstream`, its body handed to a splice, and `target` opened to splice it into."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        body = await upstream.open(KEY)
        try:
            spliced = body.splice_rest()
            assert spliced is not None and spliced.splicer is not None
            yield spliced, fd
        finally:
            body.close()
    finally:
        os.close(fd)


async def test_a_spliced_body_is_the_exact_bytes_and_its_connection_is_not_pooled(tmp_path: Path,
                                                                                 origin: Origin) -> None:
    data = os.urandom(3 * MIB)
    origin.add(KEY, data=data)
    origin.add("titles/16/1080p/seg_00101.m4s", data=b"next")
    upstream = _upstream(tmp_path, origin)
    try:
        async with _spliced(upstream, tmp_path / "out") as (spliced, target):
            assert spliced.splicer is not None
            os.write(target, spliced.buffered)
            moved = [n async for n in spliced.splicer.into(target)]
            assert sum(moved) == spliced.splicer.spliced == len(data) - len(spliced.buffered)
            assert spliced.splicer.spliced > 2 * MIB  # most of it never entered Python
        # the next request opens a connection of its own: the spliced one is closed, never pooled
        connector = upstream._client().connector
        assert connector is not None and not getattr(connector, "_conns", {})
        second = await upstream.open("titles/16/1080p/seg_00101.m4s")
        try:
            assert b"".join([c async for c in second.chunks()]) == b"next"
        finally:
            second.close()
    finally:
        await upstream.close()
    assert (tmp_path / "out").read_bytes() == data


class _Transport(asyncio.Transport):
    """Whether the protocol keeps reading: what a socket transport's flow control would be told."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("length, body_bytes_in_the_read, reading", [
    (3 * MIB, 100_000, False),  # the body goes on past this read: the fill decides how it is read (splice, chunks)
    (3 * MIB, 0, False),  # the head alone
    (100_000, 100_000, True),  # the whole body came with its head: nothing is left to decide
])
async def test_the_upstream_protocol_stops_reading_after_a_head_whose_body_goes_on(
        tmp_path: Path, origin: Origin, length: int, body_bytes_in_the_read: int, reading: bool) -> None:
    """Before, aiohttp's protocol read on until its 2 MiB buffer was full, and uvloop did so in one wake-up
    (up to 32 reads) before the fill's coroutine ran: 2.5 MB of a cold 8 MiB miss went through Python that the
    splice would have moved, and the clients heard of the head ~3 ms late."""
    upstream = _upstream(tmp_path, origin)
    try:
        connector = upstream._client().connector
        protocol = connector._factory()  # type: ignore[union-attr]  # the protocol each connection gets
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.set_response_params(read_bufsize=MIB, auto_decompress=False)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
        protocol.data_received(head + bytes(body_bytes_in_the_read))
        assert transport.reading is reading
    finally:
        await upstream.close()


def _raw_origin(response: bytes, *, pause_after: int | None = None) -> tuple[str, threading.Thread]:
    """A one-request origin on a thread: reads a request head, then sends `response` in one `sendall` (or its
    first `pause_after` bytes, 0.3 s of nothing, then the rest), then closes. Its base URL and thread."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with server, server.accept()[0] as conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            if pause_after is None:
                conn.sendall(response)
            else:
                conn.sendall(response[:pause_after])
                time.sleep(0.3)
                conn.sendall(response[pause_after:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", thread


def _on_uvloop(base_url: str, tmp_path: Path, use: Callable[[UpstreamBody], Any]) -> Any:
    """KEY opened from an origin at `base_url` on the box's uvloop loop, its body handed to `use`."""
    config = load_box_config(write_box_config(str(tmp_path), fetch={
        "sources": [{"name": "origin", "url": base_url, "kind": "origin"}]}))
    upstream = Upstream(config.fetch, sources_from_config(config.fetch))

    async def run() -> Any:
        try:
            body = await upstream.open(KEY)
            try:
                return await use(body)
            finally:
                body.close()
        finally:
            await upstream.close()

    loop = new_event_loop("uvloop")
    try:
        return loop.run_until_complete(asyncio.wait_for(run(), 20))
    finally:
        loop.close()


def test_aiohttp_stops_reading_at_the_head_so_the_splice_takes_the_body(tmp_path: Path) -> None:
    """Before, uvloop read on past the head (up to 32 reads per wake-up) until aiohttp's 2 MiB buffer was
    full: 2.5 MB of a cold 8 MiB miss went through Python, and the clients heard of the head ~3 ms late."""
    data = os.urandom(8 * MIB)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nContent-Type: video/mp4\r\n\r\n".encode()
    base_url, thread = _raw_origin(head + data)

    async def splice(body: UpstreamBody) -> int:
        spliced = body.splice_rest()
        assert spliced is not None and spliced.splicer is not None
        fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, spliced.buffered)
            async for _ in spliced.splicer.into(fd):
                pass
        finally:
            os.close(fd)
        return len(spliced.buffered)

    buffered = _on_uvloop(base_url, tmp_path, splice)
    thread.join(5)
    assert (tmp_path / "out").read_bytes() == data
    assert buffered <= 256 * 1024  # at most the one read that carried the head (uvloop reads 256 KiB at most)


def test_a_head_that_arrives_alone_still_gets_its_body_read(tmp_path: Path) -> None:
    """The pause at the head must not starve the chunk path: the body arrives 0.3 s after a head sent alone."""
    data = os.urandom(300_000)  # under SPLICE_FROM: read chunk by chunk
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    base_url, thread = _raw_origin(head + data, pause_after=len(head))

    async def read(body: UpstreamBody) -> bytes:
        return b"".join([chunk async for chunk in body.chunks()])

    assert _on_uvloop(base_url, tmp_path, read) == data
    thread.join(5)


async def test_a_chunked_body_is_not_spliced(tmp_path: Path, origin: Origin) -> None:
    origin.add(KEY, data=os.urandom(MIB), fault=Fault(chunked=True))
    upstream = _upstream(tmp_path, origin)
    try:
        body = await upstream.open(KEY)
        try:
            assert body.splice_rest() is None
            assert b"".join([c async for c in body.chunks()]) == origin.expected(KEY)
        finally:
            body.close()
    finally:
        await upstream.close()


async def test_a_spliced_body_that_stalls_fails_after_between_bytes_timeout(tmp_path: Path, origin: Origin) -> None:
    origin.add(KEY, data=os.urandom(2 * MIB), fault=Fault(stall_at=(MIB, 5.0)))
    upstream = _upstream(tmp_path, origin, between_bytes_timeout="0.3s")
    try:
        async with _spliced(upstream, tmp_path / "out") as (spliced, target):
            assert spliced.splicer is not None
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                async for _ in spliced.splicer.into(target):
                    pass
            assert caught.value.status == 504 and "no body bytes for 0.3s" in caught.value.reason
            assert time.monotonic() - started < 3
    finally:
        await upstream.close()


# -- the master's fill, with a worker on a real link ------------------------------------------------------

async def test_a_spliced_fill_stores_the_exact_bytes_with_their_digest(tmp_path: Path, origin: Origin) -> None:
    data = os.urandom(3 * MIB)
    origin.add(KEY, data=data)
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    async with rig(tmp_path, origin, str(feeds)) as r:
        fill = r.fills.acquire(KEY)
        try:
            await _until(lambda: fill.result)
            assert fill.result is FillState.DONE and fill.have == len(data)
            assert os.pread(fill.fd, len(data) + 1, 0) == data  # what the worker sends its clients
            info = await r.owner.call(Store.get, KEY)
            assert info is not None and info.size == len(data)
            assert info.digest == xxhash.xxh3_128(data).hexdigest()
            assert Path(info.path).read_bytes() == data
        finally:
            r.fills.release(fill)
        counters = r.manager.counters
        assert counters["fills_spliced"] == 1 and counters["bytes_spliced"] > 2 * MIB
        assert r.manager.bytes_by_source["origin"] == len(data)
        # the tier file was written from the feed with O_DIRECT (no page-cache copy), all but the last
        # partial block; before, all of it buffered
        direct, buffered = counters["tier_bytes_direct"], counters["tier_bytes_buffered"]
        assert direct + buffered == len(data)
        if _takes_direct_io(tmp_path):
            assert direct == len(data) - len(data) % DIRECT_ALIGN


async def test_a_truncated_spliced_body_is_not_stored_and_the_worker_sees_the_failure(
        tmp_path: Path, origin: Origin) -> None:
    origin.add(KEY, data=os.urandom(3 * MIB), fault=Fault(truncate_at=2 * MIB))
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    async with rig(tmp_path, origin, str(feeds)) as r:
        fill = r.fills.acquire(KEY)
        try:
            await _until(lambda: fill.result)
            assert fill.result is FillState.FAIL and "ended at" in fill.reason and fill.have < 3 * MIB
            assert await r.owner.call(Store.get, KEY) is None
        finally:
            r.fills.release(fill)
        assert r.manager.counters["fills_spliced"] == 1
    assert os.listdir(feeds) == []


async def test_a_chunked_fill_takes_the_chunk_path_and_is_stored(tmp_path: Path, origin: Origin) -> None:
    data = os.urandom(MIB)
    origin.add(KEY, data=data, fault=Fault(chunked=True))
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    async with rig(tmp_path, origin, str(feeds)) as r:
        fill = r.fills.acquire(KEY)
        try:
            await _until(lambda: fill.result)
            assert fill.result is FillState.DONE
            info = await r.owner.call(Store.get, KEY)
            assert info is not None and Path(info.path).read_bytes() == data
        finally:
            r.fills.release(fill)
        assert r.manager.counters["fills_spliced"] == 0


# -- a whole box, real clients ----------------------------------------------------------------------------

def _fetch_status(box: Box) -> dict[str, int]:
    fetch: dict[str, int] = box.admin("/status")["fetch"]
    return fetch


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_clients_that_join_a_spliced_fill_get_the_same_bytes(box_factory: Callable[..., Box], origin: Origin,
                                                             loop: str) -> None:
    """Under both loops: the socket the splice reads is one the loop's transport stopped reading."""
    data = os.urandom(4 * MIB)
    origin.add(KEY, data=data, fault=Fault(dribble=(256 * 1024, 0.03)))  # slow enough for all to join
    box = box_factory(loop=loop, fetch={"sources": [origin_source(origin)], "slice_size": 0})
    got: list[tuple[bytes, bytes, bool]] = []

    def one() -> None:
        got.append(raw_get(box.port, f"/{KEY}"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(got) == 4
    for head, body, closed_early in got:
        assert head.startswith(b"HTTP/1.1 200") and not closed_early and body == data
    assert origin.count(KEY) == 1
    fetch = _fetch_status(box)
    assert fetch["fills_spliced"] == 1 and fetch["bytes_spliced"] > 3 * MIB
    deadline = time.monotonic() + 10  # the tier file is written once the body has ended
    while fetch["tier_bytes_direct"] + fetch["tier_bytes_buffered"] < len(data) and time.monotonic() < deadline:
        time.sleep(0.05)
        fetch = _fetch_status(box)
    assert fetch["tier_bytes_direct"] + fetch["tier_bytes_buffered"] == len(data)
    exported = [line.split()[-1] for line in box.admin("/metrics").splitlines()
                if line.startswith('oca_fill_tier_bytes_total{write="direct"}')]
    assert [float(v) for v in exported] == [fetch["tier_bytes_direct"]]
    # a hit now: the file written with O_DIRECT, read back from the disk through the worker's sendfile
    deadline = time.monotonic() + 10
    while not box.admin(f"/inventory?prefix={KEY}")["objects"] and time.monotonic() < deadline:
        time.sleep(0.05)
    status, _, body = box.get(f"/{KEY}")
    assert status == 200 and body == data and origin.count(KEY) == 1


def test_a_truncated_spliced_body_cuts_the_client_short_and_caches_nothing(box_factory: Callable[..., Box],
                                                                         origin: Origin) -> None:
    origin.add(KEY, size=4 * MIB, fault=Fault(truncate_at=2 * MIB, dribble=(256 * 1024, 0.02)))
    box = fetching_box(box_factory, [origin_source(origin)], slice_size=0)
    head, body, closed_early = raw_get(box.port, f"/{KEY}")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 4194304" in head.lower()
    assert closed_early and len(body) <= 2 * MIB
    assert _fetch_status(box)["fills_spliced"] == 1
    time.sleep(0.3)
    assert box.admin(f"/inventory?prefix={KEY}")["objects"] == []
    origin.set_fault(KEY, None)
    status, _, body = box.get(f"/{KEY}")
    assert status == 200 and body == origin.expected(KEY)
    assert _fetch_status(box)["fills_spliced"] == 2
