"""Issue 16: a miss streams at the origin's speed. The clients are fed from memory as the upstream bytes
arrive, read by read; the tier file is written from the memory feed, hashed and fsynced once the body has
ended (oca.fetch.tierwriter), installed only once durable and checked; the workers hear "have" for the first
bytes at once, then at most once per loop iteration per fill (or per MiB)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import xxhash

from oca.config import load_box_config
from oca.fetch.fillfile import (
    MEMORY_FEED_BUDGET,
    MEMORY_FEED_LIMIT,
    MEMORY_FEED_RESERVE,
    FillFile,
    memory_feed,
    remove_orphan_feeds,
)
from oca.fetch.link import Link
from oca.fetch.manager import ANNOUNCE_AT_ONCE, Fill, FillManager
from oca.fetch.remote import RemoteFills
from oca.fetch.state import FetchState
from oca.fetch.tierwriter import DIRECT_ALIGN, MAX_BLOCK, TierWriter, _set_direct
from oca.fetch.upstream import Upstream, sources_from_config
from oca.protocol.codec import SPEAKS, Codec
from oca.protocol.messages import Done, FillAsk, FillRequest, FillState, Have, Stored
from oca.storage import ObjectInfo, Store
from oca.storage.storage_owner import StorageOwner
from tests.conftest import write_box_config
from tests.fetch.test_playbooks import KEY as PLAY_KEY
from tests.fetch.test_playbooks import FakeStorage, MasterPlay
from tests.fetch.test_pull_through import MIB, origin_source
from tests.upstream.origin import Fault, Origin

BIG_FREE = MEMORY_FEED_BUDGET + MEMORY_FEED_RESERVE


# -- which fills are fed from memory (pure) ---------------------------------------------------------------

@pytest.mark.parametrize("length, in_use, free, fed_from_memory", [
    (8 * MIB, 0, BIG_FREE, True),
    (None, 0, BIG_FREE, False),  # length unknown: memory cannot be promised
    (0, 0, BIG_FREE, False),  # nothing to feed
    (MEMORY_FEED_LIMIT, 0, BIG_FREE, True),
    (MEMORY_FEED_LIMIT + 1, 0, BIG_FREE, False),  # one fill never holds more
    (8 * MIB, MEMORY_FEED_BUDGET - 8 * MIB, BIG_FREE, True),
    (8 * MIB, MEMORY_FEED_BUDGET - 8 * MIB + 1, BIG_FREE, False),  # all fills together stay in the budget
    (8 * MIB, 0, MEMORY_FEED_RESERVE + 8 * MIB, True),
    (8 * MIB, 0, MEMORY_FEED_RESERVE + 8 * MIB - 1, False),  # the tmpfs keeps its reserve for others
])
def test_memory_feed_decision(length: int | None, in_use: int, free: int, fed_from_memory: bool) -> None:
    assert memory_feed(length, in_use, free) is fed_from_memory


def test_orphan_feeds_of_dead_masters_are_removed_and_nothing_else(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    names = [f"oca-feed-{dead_pid}-abc", f"oca-feed-{os.getpid()}-def", "oca-feed-x-1", "someone-else"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_orphan_feeds(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_a_feed_without_a_tmpfs_is_an_anonymous_memory_file_that_is_never_unlinked() -> None:
    feed = FillFile.create_feed(None)
    try:
        assert feed.memory and not feed.named and feed.path == f"/proc/{os.getpid()}/fd/{feed.fd}"
        feed.write(b"abc")
        with open(feed.path, "rb") as fh:  # what a worker does: the same file, not a copy
            assert fh.read() == b"abc"
    finally:
        feed.discard()
    assert feed.fd == -1


# -- the tier writer ----------------------------------------------------------------------------------------

async def test_tier_writer_writes_in_order_hashes_everything_and_fsyncs_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("oca.fetch.tierwriter.os.fsync", counted_fsync)
    chunks = [os.urandom(1000 + i) for i in range(50)]
    progress: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        writer = TierWriter(pool, progress.append)
        for chunk in chunks[:10]:  # before the temp file exists: they wait for it
            writer.add(chunk)
        await asyncio.sleep(0.01)
        assert writer.written == 0
        sink = FillFile.create(str(tmp_path))
        writer.attach(sink)
        for chunk in chunks[10:]:
            writer.add(chunk)
            await asyncio.sleep(0)
        digest = await writer.finish()
    data = b"".join(chunks)
    assert digest == xxhash.xxh3_128(data).hexdigest()
    assert writer.error is None and writer.written == writer.added == len(data) and writer.lag == 0
    assert fsyncs == [sink.fd]
    assert progress == sorted(progress) and progress[-1] == len(data)
    assert len(progress) < len(chunks)  # what arrived while a batch was written went out as one batch
    with open(sink.path, "rb") as fh:
        assert fh.read() == data
    sink.discard()


async def test_a_failed_write_stops_writing_keeps_hashing_and_does_not_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("oca.fetch.tierwriter.os.fsync", lambda fd: pytest.fail("fsync after a failed write"))
    sink = FillFile.create(str(tmp_path))
    calls = 0
    real_write = FillFile.write

    def eio_on_the_third(self: FillFile, chunk: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(5, "Input/output error")
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", eio_on_the_third)
    chunks = [bytes([i]) * 100 for i in range(6)]
    with ThreadPoolExecutor(1) as pool:
        writer = TierWriter(pool)
        writer.attach(sink)
        for chunk in chunks:
            writer.add(chunk)
        digest = await writer.finish()
    assert isinstance(writer.error, OSError) and calls == 3
    assert digest == xxhash.xxh3_128(b"".join(chunks)).hexdigest()
    assert os.path.getsize(sink.path) == 200
    sink.discard()


async def test_without_a_temp_file_every_chunk_is_still_hashed() -> None:
    with ThreadPoolExecutor(1) as pool:
        writer = TierWriter(pool)
        writer.add(b"abc")
        writer.fail(OSError(28, "No space left on device"))
        writer.add(b"def")
        assert await writer.finish() == xxhash.xxh3_128(b"abcdef").hexdigest()
    assert writer.written == 6 and isinstance(writer.error, OSError)


def _takes_direct_io(directory: Path) -> bool:
    fd = os.open(directory / "direct-probe", os.O_WRONLY | os.O_CREAT)
    try:
        return _set_direct(fd, True)
    finally:
        os.close(fd)
        os.unlink(directory / "direct-probe")


async def test_a_tier_that_refuses_direct_writes_gets_the_same_bytes_buffered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that takes O_DIRECT at open but refuses the writes' alignment (EINVAL): each refused block
    is written again from its offset, buffered; the file and the digest are the feed's."""
    real_write = FillFile.write
    refused: list[int] = []

    def picky(self: FillFile, chunk: bytes | memoryview) -> None:
        if not self.memory and fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(chunk))
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", picky)
    data = os.urandom(3 * MAX_BLOCK + 12_345)
    feed = FillFile.create_feed(None)
    sink = FillFile.create(str(tmp_path))
    try:
        with ThreadPoolExecutor(1) as pool:
            writer = TierWriter(pool, source=feed)
            writer.attach(sink)
            feed.write(data)
            writer.add(data)
            digest = await writer.finish()
        assert digest == xxhash.xxh3_128(data).hexdigest() and writer.error is None
        assert writer.copied == len(data) and writer.copied_direct == 0
        assert refused in ([], [MAX_BLOCK])  # refused once (then buffered), or never on (no direct I/O here)
        with open(sink.path, "rb") as fh:
            assert fh.read() == data
    finally:
        sink.discard()
        feed.discard()


async def test_a_memory_fed_fill_holds_no_chunks_and_writes_its_tier_file_from_the_feed_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the body streams, the tier writer of a memory-fed fill holds no chunk and writes nothing (the
    master's CPU goes to the clients' bytes); `finish` hashes the feed and writes it in MAX_BLOCK pieces,
    then fsyncs once. Before, every chunk was kept in memory and written beside the transfer."""
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr("oca.fetch.tierwriter.os.fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    writes: list[int] = []
    real_write = FillFile.write

    def counted(self: FillFile, chunk: bytes | memoryview) -> None:
        if not self.memory:
            writes.append(len(chunk))
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", counted)
    chunks = [os.urandom(300_000 + i) for i in range(12)]
    data = b"".join(chunks)
    feed = FillFile.create_feed(None)
    sink = FillFile.create(str(tmp_path))
    try:
        with ThreadPoolExecutor(2) as pool:
            writer = TierWriter(pool, source=feed)
            writer.attach(sink)
            for chunk in chunks:
                feed.write(chunk)
                writer.add(chunk)
                await asyncio.sleep(0)
            assert writer.lag == 0 and writer._pending == []  # nothing held: the feed has the bytes
            await asyncio.sleep(0.05)
            assert writes == [] and writer.written == 0  # nothing written while the body streams
            digest = await writer.finish()
        assert digest == xxhash.xxh3_128(data).hexdigest()
        full, rest = divmod(len(data), MAX_BLOCK)
        if _takes_direct_io(tmp_path):  # ext4, xfs: the last partial block is written buffered
            tail = len(data) % DIRECT_ALIGN
            assert writes == [MAX_BLOCK] * full + [rest - tail, tail]
            assert writer.copied_direct == len(data) - tail
        else:
            assert writes == [MAX_BLOCK] * full + [rest] and writer.copied_direct == 0
        assert writer.copied == len(data)
        assert fcntl.fcntl(sink.fd, fcntl.F_GETFL) & os.O_DIRECT == 0  # off again once written
        assert fsyncs == [sink.fd] and writer.error is None and writer.written == len(data)
        with open(sink.path, "rb") as fh:
            assert fh.read() == data
    finally:
        sink.discard()
        feed.discard()


async def test_a_memory_fed_fill_whose_tier_write_fails_is_still_hashed_whole_and_not_fsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("oca.fetch.tierwriter.os.fsync", lambda fd: pytest.fail("fsync after a failed write"))
    real_write = FillFile.write
    calls = 0

    def eio_on_the_second(self: FillFile, chunk: bytes | memoryview) -> None:
        nonlocal calls
        if not self.memory:
            calls += 1
            if calls == 2:
                raise OSError(5, "Input/output error")
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", eio_on_the_second)
    data = os.urandom(3 * MAX_BLOCK + 5)
    feed = FillFile.create_feed(None)
    sink = FillFile.create(str(tmp_path))
    try:
        feed.write(data)
        with ThreadPoolExecutor(1) as pool:
            writer = TierWriter(pool, source=feed)
            writer.attach(sink)
            writer.add(data)
            assert await writer.finish() == xxhash.xxh3_128(data).hexdigest()
        assert isinstance(writer.error, OSError) and calls == 2  # no write after the first failure
    finally:
        sink.discard()
        feed.discard()


async def test_buffered_body_bytes_are_handed_over_read_by_read_not_joined(tmp_path: Path, origin: Origin) -> None:
    """Bytes that arrived while the fill was busy come out as the socket reads brought them in (at most the
    loop's 256 KiB read each), so the first of them reaches the feed and its clients without waiting for the
    rest. Before, readany joined everything buffered into one chunk (2.3 MB at once in issue 16's trace)."""
    key = "titles/16/1080p/seg_00009.m4s"
    data = os.urandom(2 * MIB)
    origin.add(key, data=data)
    config = load_box_config(write_box_config(str(tmp_path), fetch={"sources": [origin_source(origin)]}))
    upstream = Upstream(config.fetch, sources_from_config(config.fetch))
    try:
        body = await upstream.open(key)
        try:
            await asyncio.sleep(0.3)  # the response buffers up to aiohttp's high-water mark meanwhile
            chunks = [chunk async for chunk in body.chunks()]
        finally:
            body.close()
    finally:
        await upstream.close()
    assert b"".join(chunks) == data
    assert len(chunks) > 1 and max(len(chunk) for chunk in chunks) <= 256 * 1024


async def test_a_miss_asks_storage_on_the_loop_when_its_lock_is_free(tmp_path: Path) -> None:
    """No storage thread's round trip before the upstream request (0.4-2 ms of a miss's first byte in issue
    16's trace): a key that is not stored and one that is are both answered by Store.get_now."""
    play = MasterPlay(tmp_path, {PLAY_KEY: b"0123456789", "titles/1/720p/seg_00002.m4s": b"abc"}, slice_size=0)
    play.storage.put("titles/1/720p/seg_00002.m4s", b"abc")
    link = play.link()
    link.take()
    out = await play.ask(link, FillRequest(PLAY_KEY))
    assert isinstance(out[-1], Done)
    assert await play.ask(link, FillRequest("titles/1/720p/seg_00002.m4s")) == [Stored("titles/1/720p/seg_00002.m4s")]
    assert play.storage.peeks == ["get_now", "get_now"] and "get" not in play.storage.calls
    assert play.upstream.asked == [(PLAY_KEY, None, None)]


# -- the master's fill with a worker on a real link ---------------------------------------------------------

@dataclass
class Rig:
    manager: FillManager
    fills: RemoteFills
    owner: StorageOwner


@asynccontextmanager
async def rig(tmp_path: Path, origin: Origin, feed_dir: str | None) -> AsyncIterator[Rig]:
    """The master's FillManager and a worker's RemoteFills on a real link, fetching from a real origin."""
    config = load_box_config(write_box_config(str(tmp_path), fetch={"sources": [origin_source(origin)]}))
    owner = StorageOwner(config.storage)
    await owner.open()
    manager = FillManager(config.fetch, owner, FetchState(config.storage.state_dir),
                          Upstream(config.fetch, sources_from_config(config.fetch)), feed_dir=feed_dir)
    master_end, worker_end = socket.socketpair()
    codec = Codec(SPEAKS[0])
    manager.attach(await Link.open(master_end, codec, Codec.ask, manager.on_message, manager.detach))
    fills = RemoteFills()
    fills.link = await Link.open(worker_end, codec, Codec.event, fills.on_message)
    try:
        yield Rig(manager, fills, owner)
    finally:
        await manager.close()
        await owner.close()


async def _until(check: Callable[[], object], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@dataclass
class SlowTierFiles:
    started: list[float]  # when each making began
    made: list[tuple[float, FillFile]]  # when each was made, and the file


def _slow_tier_files(monkeypatch: pytest.MonkeyPatch) -> SlowTierFiles:
    """Making a fill's temp file on a tier takes 0.5 s (a stalled journal, a failing drive), and must happen
    beside the loop, never on it."""
    slow = SlowTierFiles([], [])
    real_create = FillFile.create.__func__  # type: ignore[attr-defined]

    def slow_create(cls: type[FillFile], tmp_dir: str) -> FillFile:
        assert threading.current_thread() is not threading.main_thread()
        slow.started.append(time.monotonic())
        time.sleep(0.5)
        sink: FillFile = real_create(cls, tmp_dir)
        slow.made.append((time.monotonic(), sink))
        return sink

    monkeypatch.setattr(FillFile, "create", classmethod(slow_create))
    return slow


@asynccontextmanager
async def _one_fill(tmp_path: Path, origin: Origin, key: str) -> AsyncIterator[tuple[Rig, Any]]:
    """A rig with a tmpfs-style feed directory, and the worker's fill of `key` (released at the end)."""
    directory = str(tmp_path / "feeds")
    os.mkdir(directory)
    async with rig(tmp_path, origin, directory) as r:
        fill = r.fills.acquire(key)
        try:
            yield r, fill
        finally:
            r.fills.release(fill)


async def test_a_tier_file_that_is_slow_to_create_never_stalls_the_loop(
        tmp_path: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory-fed client has every byte before the tier's temp file is made. Before, the master made it
    on its event loop, so one slow disk held every fill's clients."""
    key = "titles/16/1080p/seg_00002.m4s"
    data = os.urandom(2 * MIB)
    origin.add(key, data=data)
    slow = _slow_tier_files(monkeypatch)
    async with _one_fill(tmp_path, origin, key) as (r, fill):
        await _until(lambda: fill.have == len(data) and fill.fd >= 0)
        fed = time.monotonic()
        assert os.pread(fill.fd, len(data) + 1, 0) == data
        await _until(lambda: fill.result)
        assert fill.result is FillState.DONE
        assert slow.made and fed < slow.made[0][0]  # every byte reached the worker while the file was made
        info = await r.owner.call(Store.get, key)
        assert info is not None and info.size == len(data)


async def test_a_tier_file_made_after_its_fill_failed_is_removed(
        tmp_path: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream body breaks off while the tier's temp file is still being made: once made, it is removed
    (the fill that would have written it is gone), not left on the tier."""
    key = "titles/16/1080p/seg_00003.m4s"
    # the body pauses 0.2 s at 512 KiB (the file's making begins meanwhile), then breaks off at 1 MiB
    origin.add(key, data=os.urandom(2 * MIB), fault=Fault(stall_at=(MIB // 2, 0.2), truncate_at=MIB))
    slow = _slow_tier_files(monkeypatch)
    async with _one_fill(tmp_path, origin, key) as (_, fill):
        await _until(lambda: fill.result)
        assert fill.result is FillState.FAIL and slow.started and not slow.made  # failed while being made
        await _until(lambda: slow.made and not os.path.exists(slow.made[0][1].path))
        assert slow.made[0][1].fd == -1


@pytest.mark.parametrize("feed_dir", ["tmpfs", None], ids=["tmpfs-feed", "memfd-feed"])
async def test_a_slow_disk_does_not_hold_the_client_back_and_the_object_is_installed_once_durable(
        tmp_path: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch, feed_dir: str | None) -> None:
    """Every tier write takes 0.2 s: the worker is told of every byte long before the tier file is written;
    the object is stored only after that, fsynced, with the digest of the bytes. Before issue 16 the master
    announced each chunk only after writing it to the tier file, so the worker got its last byte with the disk."""
    directory = None
    if feed_dir == "tmpfs":
        directory = str(tmp_path / "feeds")
        os.mkdir(directory)
    key = "titles/16/1080p/seg_00001.m4s"
    data = os.urandom(3 * MIB)
    origin.add(key, data=data)
    slow_writes: list[float] = []
    real_write = FillFile.write

    def slow_disk(self: FillFile, chunk: bytes) -> None:
        if not self.memory:
            assert threading.current_thread() is not threading.main_thread()  # beside the loop, never on it
            time.sleep(0.2)
            slow_writes.append(time.monotonic())
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", slow_disk)
    fsynced: list[float] = []
    real_fsync = os.fsync

    def timed_fsync(fd: int) -> None:
        fsynced.append(time.monotonic())
        real_fsync(fd)

    monkeypatch.setattr("oca.fetch.tierwriter.os.fsync", timed_fsync)
    async with rig(tmp_path, origin, directory) as r:
        fills = r.fills
        fill = fills.acquire(key)
        try:
            await _until(lambda: fill.have == len(data) and fill.fd >= 0)
            fed = time.monotonic()
            assert os.pread(fill.fd, len(data) + 1, 0) == data
            running = fill.result
            await _until(lambda: fill.result)
            assert running is FillState.RUNNING  # it was not yet installed: the disk was still writing
            assert fill.result is FillState.DONE
            assert slow_writes and fed < slow_writes[-1] <= fsynced[-1]  # the client was fed before the disk
            info = await r.owner.call(Store.get, key)
            assert info is not None and info.digest == xxhash.xxh3_128(data).hexdigest()
            with open(info.path, "rb") as fh:
                assert fh.read() == data
            # a tmpfs feed leaves the memory budget when its fill ends; an anonymous one (its path names a
            # descriptor the master must not reuse yet) only when it is closed, FEED_GRACE later
            await _until(lambda: not r.manager.fills)
            assert r.manager._feed_bytes == (0 if directory else len(data))
        finally:
            fills.release(fill)
    if directory is not None:
        assert os.listdir(directory) == []  # the feed is unlinked once the object is stored


async def test_the_first_bytes_are_told_at_once_then_once_per_loop_iteration_or_per_mib(
        tmp_path: Path, origin: Origin) -> None:
    """The first "have" leaves with the first bytes (the clients' first byte waits for nothing else); later
    ones once per loop iteration with the latest count, or at once when ANNOUNCE_AT_ONCE more bytes came in
    the same iteration (a fast source's reads come back to back). Before, the first bytes were told at the
    end of the iteration, after the rest of what was buffered had been written to the feed."""
    async with rig(tmp_path, origin, None) as r:
        manager = r.manager
        sent: list[object] = []

        class FakeLink:
            def send(self, message: object) -> None:
                sent.append(message)

        fill = Fill("titles/1/a/b.m4s", "titles/1/a/b.m4s")
        fill.subscribers.add(FakeLink())  # type: ignore[arg-type]
        for n in (100, 200, 300):
            manager._have(fill, n)
        assert sent == [Have(fill.store_key, 100)]
        await asyncio.sleep(0)
        assert sent == [Have(fill.store_key, 100), Have(fill.store_key, 300)]
        sent.clear()
        manager._have(fill, 300 + ANNOUNCE_AT_ONCE - 1)
        manager._have(fill, 300 + ANNOUNCE_AT_ONCE)  # a MiB past the last told: at once
        manager._have(fill, 301 + ANNOUNCE_AT_ONCE)
        assert sent == [Have(fill.store_key, 300 + ANNOUNCE_AT_ONCE)]
        await asyncio.sleep(0)
        assert sent[1:] == [Have(fill.store_key, 301 + ANNOUNCE_AT_ONCE)]
        await asyncio.sleep(0)
        assert len(sent) == 2  # nothing new: nothing told twice
        manager._have(fill, 400 + ANNOUNCE_AT_ONCE)
        fill.ended = True  # its last event was told: no "have" after it
        await asyncio.sleep(0)
        assert len(sent) == 2


async def test_an_upstream_that_ends_early_is_never_stored_and_the_worker_sees_the_failure(
        tmp_path: Path, origin: Origin) -> None:
    key = "titles/16/1080p/seg_00002.m4s"
    origin.add(key, data=os.urandom(2 * MIB), fault=Fault(truncate_at=MIB))
    async with rig(tmp_path, origin, str(tmp_path)) as r:
        fills = r.fills
        fill = fills.acquire(key)
        try:
            await _until(lambda: fill.result)
            assert fill.result is FillState.FAIL and fill.have < 2 * MIB
            assert await r.owner.call(Store.get, key) is None
        finally:
            fills.release(fill)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("oca-feed-")]



class SlowStorage(FakeStorage):
    """Storage whose lock an install holds: `get_now` cannot answer, every `get` answers after `delay` seconds."""

    delay = 0.3

    def get_now(self, key: str) -> tuple[bool, ObjectInfo | None]:
        return False, None

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if fn.__name__ == "get":
            await asyncio.sleep(self.delay)
        return await super().call(fn, *args, **kwargs)


def _slow_play(tmp_path: Path, objects: dict[str, bytes]) -> MasterPlay:
    play = MasterPlay(tmp_path, objects, slice_size=0)
    play.storage = SlowStorage(tmp_path / "slow")
    play.manager.owner = cast(StorageOwner, play.storage)
    return play


async def test_a_miss_does_not_wait_for_a_busy_storage_to_start_streaming(tmp_path: Path) -> None:
    """Storage takes 0.3 s to say it does not hold the key: the fill is opened and streamed meanwhile, and
    its first "have" leaves before storage has answered."""
    (tmp_path / "slow").mkdir()
    play = _slow_play(tmp_path, {PLAY_KEY: b"0123456789"})
    link = play.link()
    link.take()
    started = time.monotonic()
    play.manager.on_message(cast(Link[FillAsk], link), FillRequest(PLAY_KEY))
    await _until(lambda: any(isinstance(m, Have) for m in link.sent), 5)
    assert time.monotonic() - started < SlowStorage.delay
    await play.settle()
    assert isinstance(link.sent[-1], Done) and PLAY_KEY in play.storage.objects
    assert play.upstream.asked == [(PLAY_KEY, None, None)]


async def test_a_key_that_busy_storage_turns_out_to_hold_is_fetched_once_and_its_copy_replaced(
        tmp_path: Path) -> None:
    (tmp_path / "slow").mkdir()
    play = _slow_play(tmp_path, {PLAY_KEY: b"0123456789"})
    play.storage.put(PLAY_KEY, b"0123456789")
    link = play.link()
    link.take()
    out = await play.ask(link, FillRequest(PLAY_KEY))
    assert out[-1] == Done(PLAY_KEY, 10, play.storage.objects[PLAY_KEY].path)
    assert play.upstream.asked == [(PLAY_KEY, None, None)]
    assert Path(play.storage.objects[PLAY_KEY].path).read_bytes() == b"0123456789"


async def test_a_key_that_storage_holds_costs_no_upstream_request_when_storage_answers_in_time(
        tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {PLAY_KEY: b"0123456789"}, slice_size=0)
    play.storage.put(PLAY_KEY, b"0123456789")
    link = play.link()
    link.take()
    assert await play.ask(link, FillRequest(PLAY_KEY)) == [Stored(PLAY_KEY)]
    assert play.upstream.asked == []


async def test_the_tier_writers_run_below_the_event_loop_s_priority(tmp_path: Path, origin: Origin) -> None:
    """When the CPU is short the clients' bytes go first: the writer threads' nice value is the loop's + 10."""
    async with rig(tmp_path, origin, None) as r:
        loop_nice = os.getpriority(os.PRIO_PROCESS, 0)
        writer_nice = await asyncio.get_running_loop().run_in_executor(
            r.manager._pool, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert writer_nice == min(loop_nice + 10, 19)
        assert os.getpriority(os.PRIO_PROCESS, 0) == loop_nice  # the loop's own is untouched


async def test_only_a_fill_with_clients_waiting_is_fed_from_memory(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefetch (no client) writes its tier file only; a client's miss gets a memory feed."""
    play = MasterPlay(tmp_path, {PLAY_KEY: b"0123456789", "titles/1/720p/seg_00002.m4s": b"abc"}, slice_size=0)
    lengths: list[int | None] = []
    real = play.manager._memory_feed

    def counted(length: int | None) -> FillFile | None:
        lengths.append(length)
        return real(length)

    monkeypatch.setattr(play.manager, "_memory_feed", counted)
    result = await play.manager.prefetch_one(PLAY_KEY, hot=False, pin=False, digest=None, size=None, rate=None)
    assert result == "stored" and lengths == []
    link = play.link()
    link.take()
    out = await play.ask(link, FillRequest("titles/1/720p/seg_00002.m4s"))
    assert lengths == [3] and isinstance(out[-1], Done)


async def test_a_purge_while_the_tier_is_still_written_keeps_the_object_out_of_storage(
        tmp_path: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client has every byte while the (slow) disk still writes; it purges the key: the fill is not
    installed, and the next miss of the key is "invalidated"."""
    key = "titles/16/1080p/seg_00003.m4s"
    data = os.urandom(MIB)
    origin.add(key, data=data)
    real_write = FillFile.write

    def slow_disk(self: FillFile, chunk: bytes) -> None:
        if not self.memory:
            time.sleep(0.2)
        real_write(self, chunk)

    monkeypatch.setattr(FillFile, "write", slow_disk)
    async with rig(tmp_path, origin, None) as r:
        fill = r.fills.acquire(key)
        try:
            await _until(lambda: fill.have == len(data))
            assert not fill.result  # the tier file is still being written
            await r.manager.purge("key", key, soft=False)
            await _until(lambda: fill.result)
            assert fill.result is FillState.DONE  # the client finishes its body
            await _until(lambda: not r.manager._tasks)
            assert await r.owner.call(Store.get, key) is None
            assert r.manager.history.classify(key) == "invalidated"
        finally:
            r.fills.release(fill)
