"""A worker's side of fills: ask the master once per key, and follow the file the master writes.

Rules kept here:
- One RemoteFill per key per worker, however many of the worker's clients wait for it; the master
  coalesces the workers. A RemoteFill lives while a client uses it and is forgotten when it ends.
- Clients are sent bytes from the file the master feeds (a memory file, or its temp file: oca.fetch.fillfile)
  as soon as the master says they are there ("have"), with os.sendfile like any hit. After "done" the feed
  is removed or renamed into storage; an open descriptor keeps working. If the feed is gone before we open
  it (a very fast fill), the stored path from "done" is opened instead. "moved" (from masters before the
  memory feed) says the same bytes, and the rest, are in another file now: the descriptor is swapped, the
  offsets stay.
- Waiters are callbacks, called once on the next change (open, more bytes, done, failed).
- The per-key tables that outlive a fill are bounded: at most MAX_ABSENT negative answers and MAX_SLICED
  sliced objects' metadata, least recently stored out first (forgetting one costs a question to the
  master, never a wrong answer). `stale` is not bounded here: it mirrors the master's soft purges, which a
  worker must not forget.
- The master's messages are oca.protocol records, handled from a table (one method per kind); the states a
  fill goes through are oca.protocol.messages.FillState.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from oca.bounded import LimitedDict
from oca.fetch.link import Link
from oca.fetch.slices import slice_key
from oca.protocol.codec import Dispatch
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
    KeyedEvent,
    Moved,
    Opened,
    PrefetchHint,
    Purged,
    Sliced,
    SliceMeta,
    SliceRequest,
    Stale,
    Stored,
)

log = logging.getLogger("oca.fetch")
MAX_ABSENT = 100_000  # keys whose "not found upstream" a worker remembers
MAX_SLICED = 10_000  # sliced objects whose slice layout a worker remembers
E = TypeVar("E", bound=KeyedEvent)


class RemoteFill:
    """A fill seen from a worker: the file it grows in, how much of it is there, and how it ended."""

    __slots__ = (
        "_waiters",
        "etag",
        "fd",
        "have",
        "key",
        "last_modified",
        "media_type",
        "reason",
        "refs",
        "result",
        "size",
        "sliced",
        "source",
        "status",
        "why",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.fd = -1
        self.size: int | None = None
        self.have = 0
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.media_type: str | None = None
        self.source = ""
        self.result = FillState.RUNNING
        self.status = 0  # for fail/absent: the status the client gets
        self.reason = ""
        self.sliced: SliceMeta | None = None
        self.refs = 0
        self.why = ""  # the master's reason for the miss (oca.fetch.history), for the access log
        self._waiters: list[Callable[[], None]] = []

    # BodySource, as the connection sees it
    @property
    def available(self) -> int:
        return self.have if self.fd >= 0 else 0

    @property
    def failed(self) -> bool:
        return self.result.failed

    @property
    def complete(self) -> bool:
        return self.result is FillState.DONE

    @property
    def opened(self) -> bool:
        return self.fd >= 0 or self.result.ended

    def wait(self, callback: Callable[[], None]) -> None:
        self._waiters.append(callback)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            try:
                callback()
            except Exception:  # one client's bug must not stop the others' bytes
                log.exception("fill waiter for %s failed", self.key)

    def _open(self, path: str) -> None:
        if self.fd >= 0:
            return
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1  # renamed already: "done" brings the stored path

    def _reopen(self, path: str) -> None:
        """The master moved the fill to another file holding the same bytes (a tier write failed: memory)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("fill of %s moved to %s, which cannot be opened: %s", self.key, path, exc)
            return  # the clients get what the old file holds, then are cut short
        self.close_fd()
        self.fd = fd

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_RENEW = frozenset((FillState.FAIL, FillState.ABSENT, FillState.STORED, FillState.SLICED))  # ask afresh
_RENEW_SLICE = frozenset((FillState.FAIL, FillState.ABSENT, FillState.STORED))


class RemoteFills:
    """The worker's fills by key, fed by the master's messages on the fill link."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.link: Link[FillEvent] | None = None
        self.fills: dict[str, RemoteFill] = {}
        # key -> monotonic time the master's 404 stands until
        self.absent: LimitedDict[str, float] = LimitedDict(MAX_ABSENT)
        self.stale: set[str] = set()
        self.sliced: LimitedDict[str, SliceMeta] = LimitedDict(MAX_SLICED)
        self.on_changed: Callable[[list[str]], None] = lambda keys: None  # forget local cache entries
        self._clock = clock
        keyed = self._keyed
        self._dispatch = Dispatch[FillEvent]({
            Stale: self._on_stale, Fresh: self._on_fresh, Purged: self._on_fresh,
            Have: keyed(self._on_have), Opened: keyed(self._on_open), Moved: keyed(self._on_moved),
            Done: keyed(self._on_done), Stored: keyed(self._on_stored), Sliced: keyed(self._on_sliced),
            Absent: keyed(self._on_absent), Failed: keyed(self._on_failed)})

    def is_absent(self, key: str) -> bool:
        until = self.absent.get(key)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self.absent[key]
        return False

    def acquire(self, key: str, *, start: int = 0, revalidate: bool = False) -> RemoteFill:
        """The fill of `key` (asking the master if this worker has not yet); release() it when done."""
        fill = self.fills.get(key)
        if fill is None or fill.result in _RENEW:
            fill = RemoteFill(key)
            self.fills[key] = fill
            self._ask(FillRequest(key, start, revalidate), fill)
        fill.refs += 1
        return fill

    def acquire_slice(self, key: str, index: int) -> RemoteFill:
        skey = slice_key(key, index)
        fill = self.fills.get(skey)
        if fill is None or fill.result in _RENEW_SLICE:
            fill = RemoteFill(skey)
            self.fills[skey] = fill
            self._ask(SliceRequest(key, index), fill)
        fill.refs += 1
        return fill

    def hint(self, key: str, start: int | None, session: str, guess: bool = False) -> None:
        """Pass a player's next-object hint to the master (oca.fetch.hints); nothing comes back. Not on a link
        whose version has no PrefetchHint (version 1): a hint is only ever an optimisation."""
        link = self.link
        if link is not None and not link.closed and link.codec.carries(PrefetchHint):
            link.send(PrefetchHint(key, start, session, guess))

    def release(self, fill: RemoteFill) -> None:
        fill.refs -= 1
        self._drop_if_unused(fill)

    def _drop_if_unused(self, fill: RemoteFill) -> None:
        if fill.refs <= 0 and fill.result.ended:
            fill.close_fd()
            if self.fills.get(fill.key) is fill:
                del self.fills[fill.key]

    def _ask(self, message: FillAsk, fill: RemoteFill) -> None:
        if self.link is None or self.link.closed:
            fill.result, fill.status, fill.reason = FillState.FAIL, 503, "no link to the master"
            return
        self.link.send(message)

    # -- messages from the master ---------------------------------------------------------------------

    def on_message(self, link: Link[FillEvent], message: FillEvent) -> None:
        self._dispatch(message)

    def _keyed(self, handle: Callable[[RemoteFill, E], None]) -> Callable[[E], None]:
        """A handler of one fill's event: it runs on this worker's fill of the key (if any), then the fill's
        waiters look at what changed."""
        def run(message: E) -> None:
            fill = self.fills.get(message.key)
            if fill is not None:
                handle(fill, message)
                fill._wake()
                self._drop_if_unused(fill)
        return run

    def _on_stale(self, message: Stale) -> None:
        keys = list(message.keys)
        self.stale.update(keys)
        self.on_changed(keys)

    def _on_fresh(self, message: Fresh | Purged) -> None:
        keys = list(message.keys)
        self.stale.difference_update(keys)
        for key in keys:
            self.sliced.pop(key, None)
        self.on_changed(keys)

    def _on_have(self, fill: RemoteFill, message: Have) -> None:
        fill.have = message.n

    def _on_open(self, fill: RemoteFill, message: Opened) -> None:
        fill.why = message.why or fill.why
        fill.size, fill.etag, fill.last_modified = message.size, message.etag, message.last_modified
        fill.media_type, fill.source = message.media_type, message.source
        fill._open(message.path)

    def _on_moved(self, fill: RemoteFill, message: Moved) -> None:
        fill._reopen(message.path)

    def _on_done(self, fill: RemoteFill, message: Done) -> None:
        fill.have = message.n
        fill._open(message.path)
        fill.result = FillState.DONE
        self.on_changed([fill.key])

    def _on_stored(self, fill: RemoteFill, message: Stored) -> None:
        fill.result = FillState.STORED
        self.on_changed([fill.key])

    def _on_sliced(self, fill: RemoteFill, message: Sliced) -> None:
        fill.result, fill.sliced = FillState.SLICED, message.meta
        fill.why = message.why or fill.why
        self.sliced[fill.key] = message.meta

    def _on_absent(self, fill: RemoteFill, message: Absent) -> None:
        fill.result, fill.status, fill.reason = FillState.ABSENT, 404, "not found upstream"
        fill.why = message.why or fill.why
        if message.ttl > 0:
            self.absent[fill.key] = self._clock() + message.ttl

    def _on_failed(self, fill: RemoteFill, message: Failed) -> None:
        fill.result, fill.status, fill.reason = FillState.FAIL, message.status, message.reason
        fill.why = message.why or fill.why

    def on_close(self, link: Link[FillEvent]) -> None:
        log.error("the fill link to the master closed: misses fail with 503 until the worker restarts")
        for fill in list(self.fills.values()):
            if not fill.result.ended:
                fill.result, fill.status, fill.reason = FillState.FAIL, 503, "the master went away"
                fill._wake()
