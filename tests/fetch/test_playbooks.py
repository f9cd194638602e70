"""Fills as playbooks (mitmproxy's layer tests): a message in, the exact messages out.

The master's side (FillManager) runs against a fake upstream and fake storage, with links that record what
they are sent; the worker's side (RemoteFills) is fed the master's events and sends its asks to a recording
link. No sockets, no processes: the protocol records are the whole interface between the two."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import msgspec
import pytest

from oca.config.model import FetchConfig
from oca.fetch.link import Link
from oca.fetch.manager import FillManager
from oca.fetch.remote import RemoteFills
from oca.fetch.slices import slice_key
from oca.fetch.state import FetchState
from oca.fetch.upstream import Source, Upstream, UpstreamError, UpstreamHead
from oca.protocol.messages import (
    Absent,
    Done,
    Failed,
    FillAsk,
    FillEvent,
    FillRequest,
    FillState,
    Fresh,
    Have,
    Opened,
    PrefetchHint,
    Sliced,
    SliceMeta,
    SliceRequest,
    Stale,
    Stored,
)
from oca.storage.model import ObjectInfo
from oca.storage.storage_owner import StorageOwner
from tests.clock import FakeClock

KEY = "titles/1/720p/seg_00001.m4s"
ETAG, LM, TYPE = '"v1"', "Mon, 01 Jan 2024 00:00:00 GMT", "video/mp4"


class RecordingLink:
    """One end of a fill link: what it was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[msgspec.Struct] = []
        self.closed = False

    def send(self, message: msgspec.Struct) -> None:
        self.sent.append(message)

    def take(self) -> list[msgspec.Struct]:
        sent, self.sent = self.sent, []
        return sent


class FakeBody:
    def __init__(self, head: UpstreamHead, data: bytes, chunk: int) -> None:
        self.head = head
        self._data, self._chunk = data, chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._data), self._chunk):
            await asyncio.sleep(0)  # each chunk comes in its own loop iteration, as from a socket
            yield self._data[i:i + self._chunk]

    def splice_rest(self) -> None:
        """No socket to splice from: the fill reads the chunks (the spliced path is tested on real sockets)."""
        return None

    def close(self) -> None:
        pass


class FakeUpstream:
    """Sources holding `objects` (each answers as the first source it is asked to try); keys in `broken` fail
    with that error. Remembers every request."""

    def __init__(self, objects: dict[str, bytes], chunk: int = 4) -> None:
        self.objects = objects
        self.broken: dict[str, UpstreamError] = {}
        self.chunk = chunk
        self.asked: list[tuple[str, tuple[int, int] | None, str | None]] = []
        self.sources = [Source("origin", "http://origin.invalid", "origin")]

    async def open(self, key: str, *, byte_range: tuple[int, int] | None = None, if_none_match: str | None = None,
                   sources: list[Source] | None = None, background: bool = False) -> FakeBody:
        self.asked.append((key, byte_range, if_none_match))
        if key in self.broken:
            raise self.broken[key]
        if key not in self.objects:
            raise UpstreamError(404, "origin: 404 Not Found")
        data, source = self.objects[key], (sources or self.sources)[0].name
        if if_none_match == ETAG:
            return FakeBody(UpstreamHead(source, 304, 0, 0, len(data), ETAG, LM, TYPE), b"", self.chunk)
        if byte_range is None:
            return FakeBody(UpstreamHead(source, 200, 0, len(data), len(data), ETAG, LM, TYPE), data, self.chunk)
        first, last = byte_range[0], min(byte_range[1], len(data) - 1)
        part = data[first:last + 1]
        return FakeBody(UpstreamHead(source, 206, first, len(part), len(data), ETAG, LM, TYPE), part, self.chunk)

    async def close(self) -> None:
        pass

    async def close_when_idle(self, grace: float = 300.0) -> None:
        pass


class FakeStorage:
    """StorageOwner's interface (call(Store.method, ...)) over a dict; adopt renames the temp file."""

    def __init__(self, root: Path) -> None:
        self.tmp = root / "tmp"
        self.files = root / "objects"
        self.tmp.mkdir()
        self.files.mkdir()
        self.objects: dict[str, ObjectInfo] = {}
        self.calls: list[str] = []  # methods run on a storage thread (call), by name
        self.peeks: list[str] = []  # and on the loop itself (peek)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(fn.__name__)
        return getattr(self, fn.__name__)(*args, **kwargs)

    def peek(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.peeks.append(fn.__name__)
        return getattr(self, fn.__name__)(*args, **kwargs)

    def put(self, key: str, data: bytes) -> ObjectInfo:
        path = self.files / key.replace("/", "_")
        path.write_bytes(data)
        info = ObjectInfo(key, "ssd", str(path), len(data), "d", 0.0, False, False)
        self.objects[key] = info
        return info

    def get(self, key: str) -> ObjectInfo | None:
        return self.objects.get(key)

    def get_now(self, key: str) -> tuple[bool, ObjectInfo | None]:
        return True, self.objects.get(key)

    def fill_target(self, key: str, size: int, hot: bool = False, cold: bool = False) -> tuple[str, str]:
        return "ssd", str(self.tmp)

    def adopt(self, path: str, key: str, *, tier: str, size: int, digest: str, hot: bool = False,
              pin: bool = False) -> ObjectInfo:
        target = self.files / key.replace("/", "_")
        os.replace(path, target)
        info = ObjectInfo(key, tier, str(target), size, digest, 0.0, hot, pin)
        self.objects[key] = info
        return info

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [info for key, info in sorted(self.objects.items()) if key.startswith(prefix)]

    def evict(self, key: str) -> bool:
        return self.objects.pop(key, None) is not None


class MasterPlay:
    """A FillManager with fake upstream and storage; `ask` plays one worker message and returns what each
    link was sent because of it, once every task it started has finished."""

    def __init__(self, tmp_path: Path, objects: dict[str, bytes], **fetch: Any) -> None:
        self.upstream = FakeUpstream(objects)
        self.storage = FakeStorage(tmp_path)
        self.clock = FakeClock()
        self.manager = FillManager(FetchConfig(**fetch), cast(StorageOwner, self.storage),
                                   FetchState(str(tmp_path)), cast(Upstream, self.upstream), clock=self.clock)

    def link(self) -> RecordingLink:
        link = RecordingLink()
        self.manager.attach(cast(Link[FillAsk], link))
        return link

    async def settle(self) -> None:
        while self.manager._tasks:
            await asyncio.gather(*list(self.manager._tasks))

    async def ask(self, link: RecordingLink, *messages: FillAsk) -> list[msgspec.Struct]:
        for message in messages:
            self.manager.on_message(cast(Link[FillAsk], link), message)
        await self.settle()
        return link.take()


# -- the master's side ------------------------------------------------------------------------------------


async def test_attach_sends_the_stale_marks_first(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {})
    play.manager.state.mark_stale(["b", "a"], 1.0)
    assert play.link().take() == [Stale(("a", "b"))]


async def test_a_miss_is_opened_streamed_and_done(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {KEY: b"0123456789"}, slice_size=0)
    link = play.link()
    link.take()
    out = await play.ask(link, FillRequest(KEY))
    stored = play.storage.objects[KEY]
    # `why`: the client's miss is its first (oca.fetch.history), for its access log
    assert out == [Opened(KEY, ANY, 10, ETAG, LM, TYPE, "origin", "first"), Have(KEY, 4), Have(KEY, 8),
                   Have(KEY, 10), Done(KEY, 10, stored.path)]
    assert Path(stored.path).read_bytes() == b"0123456789"
    assert play.upstream.asked == [(KEY, None, None)]
    assert await play.ask(link, FillRequest(KEY)) == [Stored(KEY)]  # from storage now: upstream not asked again
    assert len(play.upstream.asked) == 1


async def test_two_workers_asking_at_once_share_one_upstream_fetch(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {KEY: b"abcdef"}, slice_size=0)
    one, two = play.link(), play.link()
    one.take(), two.take()
    play.manager.on_message(cast(Link[FillAsk], one), FillRequest(KEY))
    play.manager.on_message(cast(Link[FillAsk], two), FillRequest(KEY))
    await play.settle()
    path = play.storage.objects[KEY].path
    expected = [Opened(KEY, ANY, 6, ETAG, LM, TYPE, "origin", "first"), Have(KEY, 4), Have(KEY, 6),
                Done(KEY, 6, path)]
    assert one.take() == expected and two.take() == expected
    assert play.upstream.asked == [(KEY, None, None)]


async def test_a_404_is_absent_and_remembered_for_negative_ttl(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {}, slice_size=0, negative_ttl=30.0)
    link = play.link()
    link.take()
    assert await play.ask(link, FillRequest(KEY)) == [Absent(KEY, 30.0, "first")]
    play.clock.now += 10
    assert await play.ask(link, FillRequest(KEY)) == [Absent(KEY, 20.0)]  # not asked upstream again
    assert len(play.upstream.asked) == 1 and play.manager.counters["negative_hits"] == 1
    play.clock.now += 21
    assert await play.ask(link, FillRequest(KEY)) == [Absent(KEY, 30.0, "first")]  # never held: still first
    assert len(play.upstream.asked) == 2


async def test_an_upstream_failure_is_failed_with_its_status(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {KEY: b"x"}, slice_size=0)
    play.upstream.broken[KEY] = UpstreamError(504, "origin: no first byte in 5s")
    link = play.link()
    link.take()
    assert await play.ask(link, FillRequest(KEY)) == [Failed(KEY, 504, "origin: no first byte in 5s", "first")]
    assert KEY not in play.storage.objects and play.manager.counters["fill_failures"] == 1


async def test_a_large_object_becomes_sliced_and_its_slices_fill_one_by_one(tmp_path: Path) -> None:
    data = b"abcdefghij"  # 10 bytes in slices of 4: 0-3, 4-7, 8-9
    play = MasterPlay(tmp_path, {KEY: data}, slice_size=4)
    link = play.link()
    link.take()
    meta = SliceMeta(10, 4, ETAG, LM, TYPE)
    # the probe asks for the slice the client's range starts in, and goes on filling it for nobody
    assert await play.ask(link, FillRequest(KEY, start=5)) == [Sliced(KEY, meta, "first")]
    assert play.upstream.asked == [(KEY, (4, 7), None)]
    assert play.storage.objects[slice_key(KEY, 1)].size == 4
    assert await play.ask(link, SliceRequest(KEY, 1)) == [Stored(slice_key(KEY, 1))]
    last = slice_key(KEY, 2)
    out = await play.ask(link, SliceRequest(KEY, 2))
    assert out == [Opened(last, ANY, 2, ETAG, LM, TYPE, "origin", "slice"), Have(last, 2),
                   Done(last, 2, play.storage.objects[last].path)]
    assert play.upstream.asked[-1] == (KEY, (8, 9), None)
    assert await play.ask(link, SliceRequest(KEY, 3)) == [Failed(slice_key(KEY, 3), 502,
                                                                 "object is no longer sliced")]
    assert await play.ask(link, FillRequest(KEY)) == [Sliced(KEY, meta)]  # known now: no upstream request
    assert len(play.upstream.asked) == 2


async def test_a_soft_purge_marks_every_worker_and_a_revalidation_304_makes_it_fresh(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {KEY: b"0123"}, slice_size=0)
    one, two = play.link(), play.link()
    one.take(), two.take()
    await play.ask(one, FillRequest(KEY))
    assert await play.manager.purge("key", KEY, soft=True) == 1
    assert one.take() == [Stale((KEY,))] and two.take() == [Stale((KEY,))]
    assert await play.ask(one, FillRequest(KEY)) == [Stored(KEY)]  # not asking to revalidate: the copy stands
    out = await play.ask(one, FillRequest(KEY, revalidate=True))
    assert out == [Fresh((KEY,)), Stored(KEY)]  # Fresh goes to every worker (two too)
    assert two.take() == [Fresh((KEY,))]
    assert play.upstream.asked[-1] == (KEY, None, ETAG)
    assert play.manager.counters["revalidated_304"] == 1


async def test_a_wrong_digest_is_fetched_again_from_the_next_source_only(tmp_path: Path) -> None:
    play = MasterPlay(tmp_path, {KEY: b"bytes"}, slice_size=0)
    peer, origin = Source("peer", "http://peer.invalid", "peer"), Source("origin", "http://o.invalid", "origin")
    result = await play.manager.prefetch_one(KEY, hot=False, pin=False, digest="0" * 32, size=None, rate=None,
                                             sources=[peer, origin])
    assert result.startswith("fail: origin: digest ")  # the peer's copy, then the origin's, were both wrong
    assert len(play.upstream.asked) == 2
    play.upstream.broken[KEY] = UpstreamError(502, "peer: reset")
    result = await play.manager.prefetch_one(KEY, hot=False, pin=False, digest="0" * 32, size=None, rate=None,
                                             sources=[peer, origin])
    assert result == "fail: peer: reset" and len(play.upstream.asked) == 3  # not a digest: no second try
    del play.upstream.broken[KEY]
    right = "95f64cad147d23ee983871c230125b12"  # xxh3_128 of b"bytes"
    result = await play.manager.prefetch_one(KEY, hot=False, pin=False, digest=right, size=None, rate=None,
                                             sources=[peer, origin])
    assert result == "stored" and len(play.upstream.asked) == 4


async def test_a_prefetch_hint_fills_in_the_background_and_is_never_answered(tmp_path: Path) -> None:
    """A player's CMCD next-object hint (PrefetchHint) through the master's dispatch table: the key is filled
    for nobody, the worker is sent nothing, and the client's request that follows is a hit from storage."""
    play = MasterPlay(tmp_path, {KEY: b"0123456789"}, slice_size=0)
    link = play.link()
    link.take()
    assert await play.ask(link, PrefetchHint(KEY, None, "s1")) == []
    assert KEY in play.storage.objects and play.manager.hints.counters.started == 1
    assert await play.ask(link, PrefetchHint(KEY, None, "s1")) == []  # held now: starts nothing
    assert len(play.upstream.asked) == 1 and play.manager.hints.counters.started == 1
    assert await play.ask(link, FillRequest(KEY)) == [Stored(KEY)]


# -- the worker's side -------------------------------------------------------------------------------------


def _worker() -> tuple[RemoteFills, RecordingLink, FakeClock, list[list[str]]]:
    clock = FakeClock()
    fills = RemoteFills(clock=clock)
    link = RecordingLink()
    fills.link = cast(Link[FillEvent], link)
    changed: list[list[str]] = []
    fills.on_changed = changed.append
    return fills, link, clock, changed


def _event(fills: RemoteFills, *events: FillEvent) -> None:
    for event in events:
        fills.on_message(cast(Link[FillEvent], None), event)


def test_a_worker_asks_once_per_key_however_many_clients_wait() -> None:
    fills, link, _, _ = _worker()
    first = fills.acquire(KEY, start=5)
    second = fills.acquire(KEY, start=9, revalidate=True)
    assert first is second and first.refs == 2
    assert link.take() == [FillRequest(KEY, 5, False)]


def test_a_worker_follows_the_masters_file_and_ends_done(tmp_path: Path) -> None:
    fills, link, _, changed = _worker()
    temp = tmp_path / "fill"
    temp.write_bytes(b"0123456789")
    fill = fills.acquire(KEY)
    woken: list[int] = []
    fill.wait(lambda: woken.append(fill.available))
    _event(fills, Opened(KEY, str(temp), 10, ETAG, LM, TYPE, "peer"))
    assert (fill.size, fill.etag, fill.media_type, fill.source, fill.fd >= 0) == (10, ETAG, TYPE, "peer", True)
    fill.wait(lambda: woken.append(fill.available))
    _event(fills, Have(KEY, 4))
    fill.wait(lambda: woken.append(fill.available))
    _event(fills, Done(KEY, 10, str(temp)))
    assert woken == [0, 4, 10]
    assert fill.result is FillState.DONE and fill.complete and changed == [[KEY]]
    assert os.pread(fill.fd, 10, 0) == b"0123456789"
    fills.release(fill)
    assert fill.fd == -1 and KEY not in fills.fills
    assert link.take() == [FillRequest(KEY)]


@pytest.mark.parametrize(("event", "state", "status", "reason"), [
    (Failed(KEY, 504, "origin: timeout"), FillState.FAIL, 504, "origin: timeout"),
    (Absent(KEY, 0.0), FillState.ABSENT, 404, "not found upstream"),
    (Stored(KEY), FillState.STORED, 0, ""),
])
def test_a_fill_that_ends_without_bytes_is_asked_again_by_the_next_client(
        event: FillEvent, state: FillState, status: int, reason: str) -> None:
    fills, link, _, _ = _worker()
    fill = fills.acquire(KEY)
    _event(fills, event)
    assert (fill.result, fill.status, fill.reason) == (state, status, reason)
    fills.release(fill)
    again = fills.acquire(KEY)
    assert again is not fill
    assert link.take() == [FillRequest(KEY), FillRequest(KEY)]


def test_an_absent_key_is_answered_by_the_worker_until_its_ttl_runs_out() -> None:
    fills, _, clock, _ = _worker()
    fill = fills.acquire(KEY)
    _event(fills, Absent(KEY, 30.0))
    fills.release(fill)
    clock.now += 29
    assert fills.is_absent(KEY)
    clock.now += 2
    assert not fills.is_absent(KEY)


def test_a_sliced_answer_is_remembered_and_slices_are_asked_for() -> None:
    fills, link, _, _ = _worker()
    meta = SliceMeta(10, 4, ETAG, None, TYPE)
    fill = fills.acquire(KEY)
    _event(fills, Sliced(KEY, meta))
    assert fill.result is FillState.SLICED and fill.sliced == meta and fills.sliced == {KEY: meta}
    fills.release(fill)
    part = fills.acquire_slice(KEY, 2)
    assert part.key == slice_key(KEY, 2)
    assert link.take() == [FillRequest(KEY), SliceRequest(KEY, 2)]
    _event(fills, Fresh((KEY,)))  # revalidated or purged: the slice description goes with it
    assert fills.sliced == {}


def test_stale_marks_come_and_go() -> None:
    fills, _, _, changed = _worker()
    _event(fills, Stale(("a", "b")))
    _event(fills, Fresh(("a",)))
    assert fills.stale == {"b"} and changed == [["a", "b"], ["a"]]


def test_events_for_keys_the_worker_does_not_follow_are_ignored() -> None:
    fills, link, _, changed = _worker()
    _event(fills, Have("other", 5), Done("other", 5, "/nowhere"))
    assert fills.fills == {} and changed == [] and link.take() == []


def test_without_a_link_or_after_it_closed_fills_fail_503() -> None:
    fills = RemoteFills()
    fill = fills.acquire(KEY)
    assert (fill.result, fill.status) == (FillState.FAIL, 503)
    fills, link, _, _ = _worker()
    running = fills.acquire(KEY)
    woken: list[bool] = []
    running.wait(lambda: woken.append(True))
    fills.on_close(cast(Link[FillEvent], link))
    assert (running.result, running.status, running.reason, woken) == (FillState.FAIL, 503,
                                                                       "the master went away", [True])


@pytest.mark.parametrize("event", [
    Opened(KEY, "/nonexistent", 10, why="evicted"),
    Sliced(KEY, SliceMeta(10, 4), "evicted"),
    Absent(KEY, 0.0, "evicted"),
    Failed(KEY, 504, "origin: timeout", "evicted"),
])
def test_the_masters_reason_for_a_miss_is_kept_for_the_access_log(event: FillEvent) -> None:
    fills, _, _, _ = _worker()
    fill = fills.acquire(KEY)
    _event(fills, event)
    assert fill.why == "evicted"
