"""The master's fills: one upstream fetch per object, whatever the number of workers and clients asking.

Rules kept here:
- Fills are keyed by the storage key (an object, or one slice of a sliced object). A worker that asks for a
  key with a fill in flight joins it; a key already stored is answered "stored"; a key the origin said does
  not exist is answered "absent" for negative_ttl.
- The clients are fed as the bytes arrive: each socket read goes to the fill's feed (a memory file when the
  fill fits, oca.fetch.fillfile; spliced there inside the kernel when the upstream body allows it,
  oca.fetch.splice) and is announced to the subscribed workers ("have": the first bytes at
  once, then once per loop iteration per fill with the latest count, or at once per ANNOUNCE_AT_ONCE bytes),
  which send it to their clients from that file (read-while-write, zero-copy). The tier's temp file is
  written and hashed from the memory feed once the body has ended (oca.fetch.tierwriter); a fill too large
  for memory is fed from that temp file, each chunk announced once written. At the end: one fsync,
  verify (length; digest when the prefetch knows it), adopt into storage by rename, "done" (the workers'
  open descriptors stay valid). An upstream failure: the temp file is removed, "fail" tells the workers to
  cut their clients short; nothing is cached.
- A fill's temp file on a tier is made, written, hashed and fsynced on the writer threads, never on the loop
  (a stalled disk would otherwise hold every fill's clients); only a failed fill's removal of it runs there.
- A failed cache write never fails a client fed from memory: the error is charged to the tier (FULL or
  FAILED, Store.report_write_error), its clients get the whole body; the object is simply not stored.
- A miss asks storage whether it holds the key (a worker's view may lag an install) on the loop, without
  waiting, when storage's lock is free; when an install's fsyncs hold it, it waits at most STORAGE_PATIENCE
  for a storage thread's answer, and past that the fill starts.
- The first fetch of an object asks upstream for the first slice's range when slicing is on: a small
  object comes back whole (200, or a 206 covering all of it); a larger one is sliced from then on.
  A slice fetched with an ETag other than the object's means it changed upstream: all its slices go.
- A soft-purged (stale) object is revalidated with If-None-Match: 304 keeps it, 200 replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from oca.config import FetchConfig
from oca.errors import OcaError, StorageError
from oca.fetch import history as hist
from oca.fetch.fillfile import (
    FEED_GRACE,
    MEMORY_FEED_BUDGET,
    MEMORY_FEED_DIR,
    MEMORY_FEED_RESERVE,
    FillFile,
    free_bytes,
    memory_feed,
    remove_orphan_feeds,
    usable_feed_dir,
)
from oca.fetch.hints import HintBook
from oca.fetch.link import Link
from oca.fetch.slices import slice_bounds, slice_key
from oca.fetch.state import FetchState, SlicedObject
from oca.fetch.tierwriter import TierWriter
from oca.fetch.upstream import Source, SplicedBody, Upstream, UpstreamBody, UpstreamError, UpstreamHead
from oca.protocol.codec import Dispatch
from oca.protocol.messages import (
    Absent,
    Done,
    Failed,
    FillAsk,
    FillEvent,
    FillRequest,
    Fresh,
    Have,
    KeyedEvent,
    Opened,
    PrefetchHint,
    Purged,
    Sliced,
    SliceMeta,
    SliceRequest,
    Stale,
    Stored,
)
from oca.storage import Store
from oca.storage.storage_owner import StorageOwner

log = logging.getLogger("oca.fetch")
WorkerLink = Link[FillAsk]  # the master's end of a worker's fill link
# bytes a disk-fed fill may hold for its tier write before its upstream reads wait for the disk (its clients
# wait for the disk anyway); a memory-fed fill holds none: its tier file is written from its feed at the end
MAX_DISK_FEED_LAG = 4 << 20
# how long a miss waits for storage to say whether it holds the key before asking upstream beside it: it
# answers in well under a millisecond, unless an install holds its lock (10-80 ms of fsyncs were measured)
STORAGE_PATIENCE = 0.002
# bytes in a fill's feed that are announced at once rather than at the end of the loop iteration: a fast
# source's reads come back to back without the loop turning, and the clients would wait for the last one
ANNOUNCE_AT_ONCE = 1 << 20
_WRITERS = 2  # threads that write, hash and fsync fills' tier files
# their nice value above the event loop's: when the CPU is short, the clients' bytes go first and the disk
# falls behind, never the other way round
_WRITER_NICENESS = 10


class WrongDigest(UpstreamError):
    """The bytes a source sent are not the ones the catalog names: another source may have the right ones."""


def _describe(error: BaseException | None) -> str:
    if isinstance(error, OSError):
        return str(error.strerror or error)
    return str(error)


def _lower_priority() -> None:
    """Run on each writer thread as it starts: Linux keeps a nice value per thread (setpriority on its id)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, 0) + _WRITER_NICENESS)


def _discard_made(made: asyncio.Future[FillFile]) -> None:
    """A tier temp file made for a fill that ended meanwhile: removed."""
    if not made.cancelled() and made.exception() is None:
        made.result().discard()


def _forget(answer: asyncio.Future[Any]) -> None:
    """A storage answer no one waits for any more: its error, if any, is retrieved and dropped (whatever asks
    storage next meets it)."""
    if not answer.cancelled():
        answer.exception()


def _meta(obj: SlicedObject) -> SliceMeta:
    return SliceMeta(obj.total, obj.slice_size, obj.etag, obj.last_modified, obj.content_type)


@dataclass(eq=False)
class Fill:
    key: str  # the object's key
    store_key: str  # what it is stored as: the key, or a slice key
    byte_range: tuple[int, int] | None = None  # asked of upstream
    probe: bool = False  # first fetch of an object that may turn out sliced
    revalidate: str | None = None  # If-None-Match for a stale object
    hot: bool = False
    pin: bool = False
    cold: bool = False  # a prefetch: not hot, it goes to the slowest tier with room (Store.fill_target)
    digest: str | None = None  # expected, when a prefetch knows it
    size: int | None = None  # expected body bytes, when a prefetch knows them
    rate: Callable[[int, str], Coroutine[Any, Any, None]] | None = None  # bandwidth cap (prefetch): (bytes, source)
    sources: list[Source] | None = None  # this fill's source order (a fill plan's); None = the configured one
    subscribers: set[WorkerLink] = field(default_factory=set)
    opened: Opened | None = None  # the event, once the temp file exists (sent again to workers who join)
    have: int = 0
    source: str = ""
    done: asyncio.Future[str] | None = None  # result: "stored" / "absent" / "fail: reason"
    why: str = ""  # the first client's miss reason (oca.fetch.history), sent with "open", "fail", "absent"
    hint: str = ""  # started by a player's CMCD hint (oca.fetch.hints): the key the hint was admitted for
    wrong_digest: bool = False  # it failed because the bytes were not the ones the catalog names
    announcing: bool = False  # a "have" is due at the end of this loop iteration
    told: int = 0  # the bytes the last "have" announced
    ended: bool = False  # its last event was told: no "have" after it
    unstored: bool = False  # served, but storage could not keep it: its feed is the clients' only copy
    purged: bool = False  # purged while in flight: its clients get their bytes, storage does not


def _unheld(fill: Fill, exc: OSError) -> StorageError:
    """A memory feed's write failed (tmpfs full, memfd refused): the fill cannot be held in memory."""
    return StorageError(f"cannot hold fill of {fill.store_key} in memory: {exc.strerror or exc}")


class FillManager:
    def __init__(self, config: FetchConfig, owner: StorageOwner, state: FetchState, upstream: Upstream,
                 clock: Callable[[], float] = time.time, feed_dir: str | None = MEMORY_FEED_DIR) -> None:
        self.config = config
        self.feed_dir = usable_feed_dir(feed_dir)  # where memory feeds go; None: anonymous memory files
        if self.feed_dir is not None:
            remove_orphan_feeds(self.feed_dir)
        self._feed_bytes = 0  # held by memory feeds now
        self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="oca-fill", initializer=_lower_priority)
        self.owner = owner
        self.state = state
        self.upstream = upstream
        self.clock = clock
        self.links: set[WorkerLink] = set()
        self.fills: dict[str, Fill] = {}
        self.absent: dict[str, float] = {}  # key -> until when the origin's 404 stands
        self._slots = asyncio.Semaphore(config.max_fills)
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {"fills": 0, "fill_failures": 0, "revalidated_304": 0,
                                         "revalidated_200": 0, "negative_hits": 0, "slices_dropped": 0,
                                         "fills_not_stored": 0, "fills_spliced": 0, "bytes_spliced": 0,
                                         "tier_bytes_direct": 0, "tier_bytes_buffered": 0}
        self.bytes_by_source: dict[str, int] = {}
        self.history = hist.KeyHistory(clock)  # what happened to each recent key: `oca cache why`
        self.hints = HintBook(config.max_fills, clock)
        self._dispatch = Dispatch[FillAsk]({FillRequest: self._on_fill, SliceRequest: self._on_slice,
                                            PrefetchHint: self._on_hint})

    def reconfigure(self, config: FetchConfig, sources: list[Source]) -> None:
        """A reload: new fills use the new settings and sources; fills in flight finish with the old ones."""
        old = self.upstream
        self.config = config
        self.upstream = Upstream(config, sources)
        self._spawn(old.close_when_idle())

    # -- links to workers ---------------------------------------------------------------------------

    def attach(self, link: WorkerLink) -> None:
        self.links.add(link)
        link.send(Stale(tuple(sorted(self.state.stale))))

    def detach(self, link: WorkerLink) -> None:
        self.links.discard(link)
        for fill in self.fills.values():
            fill.subscribers.discard(link)

    def on_message(self, link: WorkerLink, message: FillAsk) -> None:
        self._dispatch(message, link)

    def _on_fill(self, message: FillRequest, link: WorkerLink) -> None:
        self._spawn(self._ask(link, message.key, message.start, message.revalidate))

    def _on_slice(self, message: SliceRequest, link: WorkerLink) -> None:
        self._spawn(self._ask_slice(link, message.key, message.index))

    def _on_hint(self, message: PrefetchHint, link: WorkerLink) -> None:
        """A player's CMCD next-object hint (oca.serve.hints); no answer is sent."""
        self._spawn(self.hint(message.key, message.start, message.session, message.guess))

    # -- asks ---------------------------------------------------------------------------------------

    async def _ask(self, link: WorkerLink, key: str, start: int, revalidate: bool) -> None:
        running = self.fills.get(key)
        if running is not None:
            self._join(running, link)
            return
        sliced = self.state.sliced.get(key)
        if sliced is not None:
            link.send(Sliced(key, _meta(sliced)))
            return
        until = self.absent.get(key)
        if until is not None:
            if until > self.clock():
                self.counters["negative_hits"] += 1
                link.send(Absent(key, until - self.clock()))
                return
            del self.absent[key]
        info = None
        if key not in self.state.stale:
            held = await self._held(key)
        else:  # soft-purged: its stored copy still answers unless the worker asks to revalidate it
            known, info = self.owner.peek(Store.get_now, key)
            if not known:
                info = await self.owner.call(Store.get, key)
            held = info is not None and not revalidate
        if held:
            link.send(Stored(key))
            return
        running = self.fills.get(key)  # someone may have started it while we asked storage
        if running is not None:
            self._join(running, link)
            return
        fill = Fill(key, key, why=self.history.miss(key, stale=info is not None))
        if info is not None:
            etag, _, _ = self.state.validators(key)
            fill.revalidate = etag or '"none"'
        else:
            self._probe(fill, start)
        self._begin(fill, link)

    def _probe(self, fill: Fill, start: int) -> None:
        """A first fetch asks for the slice holding `start` when slicing is on (a small object comes whole)."""
        if self.config.slice_size:
            index = start // self.config.slice_size
            fill.probe = True
            fill.byte_range = slice_bounds(index, self.config.slice_size, (index + 1) * self.config.slice_size)

    async def _held(self, key: str) -> bool:
        """Whether storage holds `key` (a worker's view of it may lag behind an install). Asked on the loop
        itself when the store's lock is free (Store.get_now: a dict lookup; a storage thread's round trip
        cost a miss 0.4-2 ms before its upstream request, most of issue 16's first-byte budget). When an
        install holds the lock (its fsyncs), a storage thread is asked, and answers within STORAGE_PATIENCE
        or not at all: past that, False, so the lock never delays a miss's first byte. A key stored after all
        is then fetched once more and its copy replaced (as a revalidation's 200 would): correct bytes, one
        upstream request, and rare (both races at once)."""
        known, info = self.owner.peek(Store.get_now, key)
        if known:
            return info is not None
        answer = asyncio.ensure_future(self.owner.call(Store.get, key))
        done, _ = await asyncio.wait({answer}, timeout=STORAGE_PATIENCE)
        if not done:
            answer.add_done_callback(_forget)
            return False
        return answer.result() is not None

    async def _ask_slice(self, link: WorkerLink, key: str, index: int) -> None:
        meta = self.state.sliced.get(key)
        if meta is None or index * meta.slice_size >= meta.total:
            link.send(Failed(slice_key(key, index), 502, "object is no longer sliced"))
            return
        skey = slice_key(key, index)
        running = self.fills.get(skey)
        if running is not None:
            self._join(running, link)
            return
        if await self._held(skey):
            link.send(Stored(skey))
            return
        running = self.fills.get(skey)
        if running is not None:
            self._join(running, link)
            return
        self._begin(Fill(key, skey, byte_range=slice_bounds(index, meta.slice_size, meta.total),
                         why=self.history.miss(skey, slice_of=key)), link)

    def _join(self, fill: Fill, link: WorkerLink) -> None:
        if fill.hint:
            self.hints.joined(fill.hint, fill.have, fill.opened.size if fill.opened is not None else None)
        fill.subscribers.add(link)
        if fill.opened is not None:
            link.send(fill.opened)
            if fill.have:
                link.send(Have(fill.store_key, fill.have))

    def _begin(self, fill: Fill, link: WorkerLink | None) -> asyncio.Future[str]:
        if link is not None:
            fill.subscribers.add(link)
        fill.done = asyncio.get_running_loop().create_future()
        self.fills[fill.store_key] = fill
        self._spawn(self._run(fill))
        return fill.done

    # -- one fill -----------------------------------------------------------------------------------

    async def _run(self, fill: Fill) -> None:
        result = "fail: internal error"
        try:
            async with self._slots:
                result = await self._fetch(fill)
        except UpstreamError as exc:
            fill.wrong_digest = isinstance(exc, WrongDigest)
            result = self._failed(fill, exc.status, exc.reason)
        except OcaError as exc:
            result = self._failed(fill, 503, f"cannot store: {exc}")
        except Exception as exc:  # a bug must fail one fill, not the master
            log.exception("fill of %s failed", fill.store_key)
            result = self._failed(fill, 502, f"internal error: {exc}")
        finally:
            if self.fills.get(fill.store_key) is fill:
                del self.fills[fill.store_key]
            if fill.done is not None and not fill.done.done():
                fill.done.set_result(result)
            if fill.hint:
                follow = self.hints.ended(fill.hint, result == "stored")
                if follow is not None:  # a lookahead waited for this fill: it takes its slot (oca.fetch.hints)
                    self._spawn(self.hint(follow[0], None, follow[1], guess=True, waited=True))
            if result.startswith("fail"):
                self.history.record(fill.store_key, hist.FAILED, result[6:])

    def _failed(self, fill: Fill, status: int, reason: str) -> str:
        self.counters["fill_failures"] += 1
        if status == 404:
            ttl = self.config.negative_ttl
            if ttl > 0:
                now = self.clock()
                if len(self.absent) >= 100_000:  # a flood of unknown keys must not grow memory without end
                    self.absent = {k: t for k, t in self.absent.items() if t > now}
                self.absent[fill.key] = now + ttl
            fill.ended = True
            self._tell(fill, Absent(fill.store_key, ttl, why=fill.why))
            return "absent"
        log.warning("fill of %s failed: %s", fill.store_key, reason)
        fill.ended = True
        self._tell(fill, Failed(fill.store_key, status, reason, why=fill.why))
        return f"fail: {reason}"

    def _tell(self, fill: Fill, event: KeyedEvent) -> None:
        for link in fill.subscribers:
            link.send(event)

    async def _fetch(self, fill: Fill) -> str:
        background = fill.rate is not None
        try:
            body = await self.upstream.open(fill.key, byte_range=fill.byte_range, if_none_match=fill.revalidate,
                                            sources=fill.sources, background=background)
        except UpstreamError as exc:
            if exc.status != 416 or not fill.probe or fill.byte_range is None or fill.byte_range[0] == 0:
                raise
            # the client's range starts past a small object's end: fetch it from its start (the client gets 416)
            fill.byte_range = (0, self.config.slice_size - 1)
            body = await self.upstream.open(fill.key, byte_range=fill.byte_range, sources=fill.sources)
        try:
            head = body.head
            fill.source = head.source
            if head.status == 304:
                self.counters["revalidated_304"] += 1
                self.history.record(fill.key, hist.REVALIDATE, f"304 from {head.source}: kept")
                await self.mark_fresh([fill.key])
                self._tell(fill, Stored(fill.store_key))
                return "stored"
            if fill.revalidate is not None:
                self.counters["revalidated_200"] += 1
            if fill.probe and head.status == 206 and (head.total is None or head.total > (head.length or 0)):
                if head.total is None:
                    raise UpstreamError(502, f"{head.source}: 206 without the object's size")
                if not self._become_slice(fill, head.total, body):
                    return "sliced"
            elif fill.store_key != fill.key:
                self._check_slice(fill, body)
            elif head.status == 206 and not fill.probe:
                raise UpstreamError(502, f"{head.source}: answered 206 to a whole-object request")
            return await self._stream(fill, body)
        finally:
            body.close()

    def _become_slice(self, fill: Fill, total: int, body: UpstreamBody) -> bool:
        """The probe found a large object: record it as sliced, tell the askers, and carry on as the fill
        of the slice we asked for (False if that slice is already being filled)."""
        head = body.head
        meta = SlicedObject(fill.key, total, self.config.slice_size, head.etag, head.last_modified,
                            head.content_type)
        self.state.add_sliced(meta)
        self._tell(fill, Sliced(fill.store_key, _meta(meta), why=fill.why))
        fill.subscribers.clear()
        del self.fills[fill.key]
        fill.store_key = slice_key(fill.key, head.first // self.config.slice_size)
        if fill.store_key in self.fills:
            return False
        self.fills[fill.store_key] = fill
        return True

    def _check_slice(self, fill: Fill, body: UpstreamBody) -> None:
        meta = self.state.sliced.get(fill.key)
        head = body.head
        if head.status != 206 or meta is None or head.total != meta.total:
            raise UpstreamError(502, f"{head.source}: slice answered {head.status} for {head.total} bytes")
        if head.etag != meta.etag:
            log.warning("%s changed upstream (ETag %s, was %s): dropping its slices", fill.key, head.etag, meta.etag)
            self.counters["slices_dropped"] += 1
            self.state.add_sliced(SlicedObject(fill.key, meta.total, meta.slice_size, head.etag,
                                               head.last_modified, head.content_type))
            self._spawn(self._drop_slices(fill.key, keep=fill.store_key))

    async def _drop_slices(self, key: str, keep: str | None = None) -> None:
        infos = await self.owner.call(Store.list, f"{key}@slice")
        for info in infos:
            if info.key != keep:
                self.history.record(info.key, hist.PURGED, "the object changed upstream (ETag)")
                await self.owner.call(Store.evict, info.key)

    async def _stream(self, fill: Fill, body: UpstreamBody) -> str:
        """Feed the workers as the bytes arrive; the tier file is written, hashed and fsynced beside them
        (oca.fetch.fillfile, oca.fetch.tierwriter), and installed only once durable and checked."""
        head = body.head
        length = head.length
        if fill.size is not None and length is not None and fill.size != length:
            raise UpstreamError(502, f"{head.source}: sends {length} bytes, the catalog says {fill.size}")
        # a fill nobody waits for (a prefetch, a player's hint) has no one to feed: memory would only cost a copy
        feed = self._memory_feed(length) if fill.subscribers else None
        # fed from memory: the tier file is written from the feed once the body has ended (oca.fetch.tierwriter)
        writer = TierWriter(self._pool, None if feed is not None else lambda n: self._have(fill, n), source=feed)
        target = asyncio.ensure_future(self._tier_file(fill, length, writer))
        try:
            if feed is None:  # the clients are fed from the tier's temp file: it must exist first
                tier = await target
                if writer.sink is None:
                    raise await self._write_failed(fill, tier, writer, length)
            meta = self.state.sliced.get(fill.key) if fill.store_key != fill.key else None
            path = feed.path if feed is not None else writer.sink.path if writer.sink is not None else ""
            fill.opened = Opened(fill.store_key, path, length, head.etag, head.last_modified,
                                 meta.content_type if meta else head.content_type, head.source, fill.why)
            self._tell(fill, fill.opened)
            # a memory-fed client fill's body goes to its feed inside the kernel when it can (oca.fetch.splice)
            spliced = body.splice_rest() if feed is not None and fill.rate is None else None
            if spliced is not None and feed is not None:
                await self._splice(fill, spliced, feed, writer, head.source)
            else:
                await self._read(fill, body, feed, writer, target, length)
            try:
                tier = await target
            except OcaError as exc:  # no tier would take it: the clients have every byte all the same
                writer.fail(exc)
                await writer.finish()
                return self._served_not_stored(fill, path, str(exc))
            digest = await writer.finish()  # written and fsynced beside the clients
            fill.have = writer.written
            if fill.digest is not None and digest != fill.digest:
                raise WrongDigest(502, f"{head.source}: digest {digest} is not the catalog's {fill.digest}")
            if writer.error is not None or writer.sink is None:
                error = writer.error or OSError(0, "no temp file")
                await self.owner.call(Store.report_write_error, tier, error, fill.have)
                return self._served_not_stored(fill, path, f"tier {tier}: {_describe(error)}")
            return await self._install(fill, head, writer.sink, tier, digest, path)
        finally:
            self.counters["tier_bytes_direct"] += writer.copied_direct
            self.counters["tier_bytes_buffered"] += writer.copied - writer.copied_direct
            await self._settle(fill, target, writer, feed, length)

    async def _read(self, fill: Fill, body: UpstreamBody, feed: FillFile | None, writer: TierWriter,
                    target: asyncio.Future[str], length: int | None) -> None:
        """The body read chunk by chunk (aiohttp's reads): each chunk into the memory feed, announced, and
        handed to the tier writer; or, fed from the tier file, announced once the writer has written it."""
        source = body.head.source
        async for chunk in body.chunks():
            if feed is not None:
                try:
                    feed.write(chunk)
                except OSError as exc:
                    raise _unheld(fill, exc) from None
                self._have(fill, fill.have + len(chunk))
            writer.add(chunk)
            if feed is None and writer.error is not None:
                raise await self._write_failed(fill, await target, writer, length)
            self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + len(chunk)
            if writer.lag > MAX_DISK_FEED_LAG:  # the disk is behind: bound what waits in memory
                await writer.caught_up()
            if fill.rate is not None:
                await fill.rate(len(chunk), source)

    async def _splice(self, fill: Fill, spliced: SplicedBody, feed: FillFile, writer: TierWriter,
                      source: str) -> None:
        """The body into the memory feed inside the kernel (oca.fetch.splice): the bytes aiohttp had read
        first, then the rest from the socket; the workers are told as for read chunks, the tier file is
        written from the feed at the end as ever."""
        self.counters["fills_spliced"] += 1
        try:
            if spliced.buffered:
                feed.write(spliced.buffered)
                self._fed(fill, writer, source, len(spliced.buffered))
            if spliced.splicer is not None:
                async for n in spliced.splicer.into(feed.fd):
                    self.counters["bytes_spliced"] += n
                    self._fed(fill, writer, source, n)
        except OSError as exc:  # the feed's write (the socket's errors are UpstreamError)
            raise _unheld(fill, exc) from None

    def _fed(self, fill: Fill, writer: TierWriter, source: str, n: int) -> None:
        """`n` more bytes are in a memory feed: announced, counted, and due for the tier file."""
        self._have(fill, fill.have + n)
        writer.grew(n)
        self.bytes_by_source[source] = self.bytes_by_source.get(source, 0) + n

    async def _settle(self, fill: Fill, target: asyncio.Future[str], writer: TierWriter, feed: FillFile | None,
                      length: int | None) -> None:
        """A fill's files after it ended: the temp file removed unless storage took it; the memory feed
        unlinked, or kept FEED_GRACE seconds when it is the clients' only copy or an anonymous memory file
        (which counts against the memory budget until it is closed)."""
        if not target.done():
            target.cancel()
        with contextlib.suppress(BaseException):
            await target
        if writer.sink is not None:
            with contextlib.suppress(BaseException):
                await writer.caught_up()  # a thread may still be writing to it
            writer.sink.discard()
        if feed is None:
            return
        held = length or 0
        if not feed.named:  # its path names our descriptor: not to be reused while a worker may open it
            asyncio.get_running_loop().call_later(FEED_GRACE, self._release_feed, feed, held)
            return
        self._feed_bytes -= held
        if fill.unstored:  # the clients' only copy: its name stays for workers catching up
            feed.close()
            asyncio.get_running_loop().call_later(FEED_GRACE, feed.discard)
        else:
            feed.discard()

    def _release_feed(self, feed: FillFile, held: int) -> None:
        """An anonymous memory feed's grace is over: closed, and its bytes leave the memory budget."""
        feed.close()
        self._feed_bytes -= held

    async def _write_failed(self, fill: Fill, tier: str, writer: TierWriter, length: int | None) -> StorageError:
        """The tier file that feeds the clients cannot be written: charge the tier; the fill fails."""
        error = writer.error
        if isinstance(error, OSError):
            await self.owner.call(Store.report_write_error, tier, error, length or writer.added)
        return StorageError(f"cannot write fill of {fill.store_key} to tier {tier}: {_describe(error)}")

    def _memory_feed(self, length: int | None) -> FillFile | None:
        """A memory feed for a fill of `length` bytes when it fits (oca.fetch.fillfile), else None."""
        if length is None:
            return None
        try:
            free = free_bytes(self.feed_dir) if self.feed_dir is not None else MEMORY_FEED_BUDGET + MEMORY_FEED_RESERVE
            if not memory_feed(length, self._feed_bytes, free):
                return None
            feed = FillFile.create_feed(self.feed_dir)
        except OSError as exc:
            log.warning("cannot make a memory feed in %s: %s; this fill is fed from disk", self.feed_dir, exc)
            return None
        self._feed_bytes += length
        return feed

    async def _tier_file(self, fill: Fill, length: int | None, writer: TierWriter) -> str:
        """Choose the tier and open its temp file for `writer`; the tier's name. A file that cannot be made is
        the writer's error (the caller charges the tier); a tier that cannot be chosen, the writer's too."""
        try:
            tier, tmp_dir = await self.owner.call(Store.fill_target, fill.store_key, length or 0, fill.hot,
                                                 fill.cold)
        except BaseException as exc:
            writer.fail(exc)
            raise
        # made on a writer thread: a tier's disk that stalls (its journal, a failing drive) must not stall the
        # loop, which feeds every other fill's clients
        creating = asyncio.get_running_loop().run_in_executor(self._pool, FillFile.create, tmp_dir)
        try:
            sink = await asyncio.shield(creating)
        except asyncio.CancelledError:  # the fill ended first: the file, once made, is removed
            creating.add_done_callback(_discard_made)
            raise
        except OSError as exc:
            writer.fail(exc)
        else:
            writer.attach(sink)
        return tier

    def _have(self, fill: Fill, n: int) -> None:
        """`n` bytes are in the feed. The workers hear of the first bytes at once (their clients' first byte
        waits for nothing else), and of ANNOUNCE_AT_ONCE more at once (bytes that pour in without a pause in
        the loop would otherwise wait for the last of them); else once per loop iteration, with the latest
        count (a slow source's many small reads cost one message each iteration, not one each)."""
        fill.have = n
        if fill.told == 0 or n - fill.told >= ANNOUNCE_AT_ONCE:
            self._announce(fill)
        elif not fill.announcing:
            fill.announcing = True
            asyncio.get_running_loop().call_soon(self._announce_due, fill)

    def _announce_due(self, fill: Fill) -> None:
        fill.announcing = False
        self._announce(fill)

    def _announce(self, fill: Fill) -> None:
        if not fill.ended and fill.have > fill.told:
            fill.told = fill.have
            self._tell(fill, Have(fill.store_key, fill.have))

    async def _install(self, fill: Fill, head: UpstreamHead, sink: FillFile, tier: str, digest: str,
                       path: str) -> str:
        """Adopt the durable, checked temp file into storage and tell the workers "done"."""
        if fill.purged:
            fill.ended = fill.unstored = True
            self._tell(fill, Done(fill.store_key, fill.have, path))
            return "purged"  # not a failure: its history says purged (the next miss is "invalidated")
        try:
            sink.close()
            sink.kept = True  # adopt removes the temp file, whatever happens
            info = await self.owner.call(Store.adopt, sink.path, fill.store_key, tier=tier, size=fill.have,
                                         digest=digest, hot=fill.hot, pin=fill.pin)
        except OcaError as exc:  # adopt found no tier that could take it (it charged them itself)
            return self._served_not_stored(fill, path, str(exc))
        if fill.store_key == fill.key:
            self.state.remember(fill.key, head.etag, head.last_modified, head.source)
            if fill.key in self.state.stale:
                await self.mark_fresh([fill.key])
        self.counters["fills"] += 1
        background = fill.rate is not None or fill.hint
        how = "revalidated, replaced" if fill.revalidate is not None else "prefetch" if background else "miss"
        self.history.record(fill.store_key, hist.FILLED,
                            f"from {head.source} ({how}), {fill.have} bytes, tier {info.tier}")
        fill.ended = True
        self._tell(fill, Done(fill.store_key, fill.have, info.path))
        return "stored"

    def _served_not_stored(self, fill: Fill, path: str, reason: str) -> str:
        """The whole body reached the clients, but storage could not keep it: they finish, nothing is cached."""
        log.warning("fill of %s was served but not stored: %s", fill.store_key, reason)
        self.counters["fills_not_stored"] += 1
        fill.ended = fill.unstored = True
        self._tell(fill, Done(fill.store_key, fill.have, path))
        return f"fail: not stored: {reason}"

    # -- purge and revalidation ---------------------------------------------------------------------

    async def purge(self, scope: str, value: str, soft: bool) -> int:
        """Remove (hard) or mark stale (soft) the objects of a key, prefix or title; returns how many."""
        prefix = f"titles/{value}/" if scope == "title" else value
        # fills in flight for what is purged finish for the clients they have but are not installed (their
        # bytes may predate the purge): a fill's install follows its clients' last byte by its tier write, so
        # a client that got an object and then purged it must not see it come back
        for fill in [f for f in self.fills.values() if f.key == value or (scope != "key" and f.key.startswith(prefix))]:
            fill.purged = True
            del self.fills[fill.store_key]  # a new ask starts a new fill
            self.history.record(fill.store_key, hist.PURGED, f"purge of {scope} {value} while it was filling")
        if scope == "key":
            infos = [i for i in [await self.owner.call(Store.get, value)] if i is not None]
            infos += await self.owner.call(Store.list, f"{value}@slice")
        else:
            infos = await self.owner.call(Store.list, prefix)
        keys = [i.key for i in infos]
        dropped_sliced = [k for k in self.state.sliced if k == value or (scope != "key" and k.startswith(prefix))]
        for key in [k for k in self.absent if k == value or (scope != "key" and k.startswith(prefix))]:
            del self.absent[key]
        if soft and not dropped_sliced:
            for key in keys:
                self.history.record(key, hist.STALE, f"soft purge of {scope} {value}")
            self.state.mark_stale(keys, self.clock())
            self._broadcast(Stale(tuple(keys)))
            return len(keys)
        for key in dropped_sliced:
            self.state.drop_sliced(key)
        if scope == "key":
            for key in keys:
                await self.owner.call(Store.evict, key)
        else:
            await self.owner.call(Store.evict_prefix, prefix)
        for key in keys:
            self.history.record(key, hist.PURGED, f"purge of {scope} {value}")
        self.state.clear_stale([k for k in keys if k in self.state.stale])
        self._broadcast(Purged(tuple(dropped_sliced)))
        return len(keys)

    async def mark_fresh(self, keys: list[str]) -> None:
        self.state.clear_stale(keys)
        self._broadcast(Fresh(tuple(keys)))

    def _broadcast(self, event: FillEvent) -> None:
        for link in self.links:
            link.send(event)

    # -- prefetch -----------------------------------------------------------------------------------

    async def prefetch_one(self, key: str, *, hot: bool, pin: bool, digest: str | None, size: int | None,
                           rate: Callable[[int, str], Coroutine[Any, Any, None]] | None,
                           sources: list[Source] | None = None) -> str:
        """Fill one object without a waiting client; "stored", "present", "absent" or "fail: reason".

        A copy whose digest is not the catalog's is dropped and fetched once more from the sources after the
        one that sent it."""
        stored = await self.owner.call(Store.get, key)
        if self.state.sliced.get(key) is not None or stored is not None:
            if stored is not None and digest is not None and stored.digest != digest:
                await self.owner.call(Store.evict, key)  # a stale or damaged copy: the plan's digest wins
            else:
                if pin:
                    with contextlib.suppress(OcaError):
                        await self.owner.call(Store.set_pinned, key, True)
                return "present"
        running = self.fills.get(key)
        if running is not None and running.done is not None:
            return await asyncio.shield(running.done)
        order = self.upstream.sources if sources is None else sources
        # why=: a client that joins this fill is told why the object was not there
        fill = Fill(key, key, hot=hot, pin=pin, cold=True, digest=digest, size=size, rate=rate, sources=order,
                    why=self.history.classify(key))
        result = await self._begin(fill, None)
        names = [s.name for s in order]
        if fill.wrong_digest and fill.source in names:
            rest = order[names.index(fill.source) + 1:]
            if rest:
                log.warning("%s: wrong digest from %s; fetching it once more from %s", key, fill.source,
                            ", ".join(s.name for s in rest))
                retry = Fill(key, key, hot=hot, pin=pin, cold=True, digest=digest, size=size, rate=rate,
                             sources=rest)
                result = await self._begin(retry, None)
        return result

    async def hint(self, key: str, start: int | None, session: str, guess: bool = False, waited: bool = False) -> None:
        """A player's next-object hint: fill `key` (the slice holding byte `start` of a sliced object) in the
        background unless it is held, being fetched, known absent, or over the bounds (oca.fetch.hints;
        `guess`: the worker's lookahead, which waits for the session's hint fill in its directory, or needs a
        slot to spare; `waited`: it did wait, and takes that fill's slot)."""
        first = start or 0
        meta = self.state.sliced.get(key)
        store_key = key
        if meta is not None:
            if first >= meta.total:
                return
            store_key = slice_key(key, first // meta.slice_size)
        until = self.absent.get(key)
        if store_key in self.fills or (until is not None and until > self.clock()):
            return
        if await self.owner.call(Store.get, store_key) is not None:  # held (stale ones are the client's to revalidate)
            return
        if guess and not waited and self.hints.park(key, session):
            return
        if store_key in self.fills or not self.hints.admit(store_key, session, guess, waited):
            return
        why = self.history.classify(store_key, slice_of=key if meta else None)
        fill = Fill(key, store_key, hint=store_key, why=why)
        size = self.config.slice_size
        if meta is not None:
            index = first // meta.slice_size
            fill.byte_range = slice_bounds(index, meta.slice_size, meta.total)
        elif size:  # as a client's first fetch: a small object comes whole, a large one becomes sliced
            index = first // size
            fill.probe, fill.byte_range = True, slice_bounds(index, size, (index + 1) * size)
        what = "lookahead after a player hint" if guess else "player hint"
        self.history.record(store_key, hist.PREFETCH, f"{what} (session {session[:40]})")
        self._begin(fill, None)

    def explain(self, key: str, held: bool) -> dict[str, Any]:
        """What the master knows of `key` for `oca cache why` (`held`: storage has it): stale, sliced, being
        filled, the reason a request would miss as now (None when it would hit), and its recent history."""
        stale = key in self.state.stale
        sliced = self.state.sliced.get(key)
        return {
            "stale": stale,
            "sliced": None if sliced is None else {"total": sliced.total, "slice_size": sliced.slice_size,
                                                   "etag": sliced.etag, "last_modified": sliced.last_modified,
                                                   "content_type": sliced.content_type},
            "filling": key in self.fills,
            "would_miss_as": None if held and not stale else self.history.classify(key, stale=stale),
            "events": [{"at": round(e.at, 3), "event": e.kind, "detail": e.detail} for e in self.history.events(key)],
            "remembered": f"the last {hist.MAX_EVENTS} events of each of the last {hist.MAX_KEYS} keys, since the "
                          "box started",
        }

    def eviction_watcher(self) -> Callable[[str, str], None]:
        """For Store.watch_evictions: capacity evictions, handed from the storage thread to the history."""
        loop = asyncio.get_running_loop()
        record = self.history.record

        def evicted(key: str, why: str) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while storage was still working
                loop.call_soon_threadsafe(record, key, hist.EVICT, why)
        return evicted

    def client_fills(self) -> int:
        """Fills players are waiting for right now (prefetches yield to them)."""
        return sum(1 for fill in self.fills.values() if fill.subscribers)

    # -- housekeeping -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.close()
        self._pool.shutdown(wait=True)
        self.state.close()

    def status(self) -> dict[str, Any]:
        return {"in_flight": len(self.fills), "stale": len(self.state.stale), "sliced_objects": len(self.state.sliced),
                **self.counters, "bytes_by_source": dict(self.bytes_by_source),
                "player_prefetch": self.hints.counters.as_json()}
