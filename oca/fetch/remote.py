"""A worker's side of fills: ask the master once per key, and follow the file the master writes.

Rules kept here:
- One RemoteFill per key per worker, however many of the worker's clients wait for it; the master
  coalesces the workers. A RemoteFill lives while a client uses it and is forgotten when it ends.
- Clients are sent bytes from the master's temp file as soon as the master says they are there ("have"),
  with os.sendfile like any hit. After "done" the file has been renamed into storage; an open descriptor
  keeps working. If the temp file is gone before we open it (a very fast fill), the stored path from
  "done" is opened instead. "moved" says the master's write to the tier failed and the same bytes, and the
  rest, are in another file now (memory): the descriptor is swapped, the offsets stay.
- Waiters are callbacks, called once on the next change (open, more bytes, done, failed).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from oca.fetch.link import Link
from oca.fetch.slices import slice_key

log = logging.getLogger("oca.fetch")


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
        self.result = ""  # "" while running; then open-ended states: done, stored, absent, fail, sliced
        self.status = 0  # for fail/absent: the status the client gets
        self.reason = ""
        self.sliced: dict[str, Any] | None = None
        self.refs = 0
        self.why = ""  # the master's reason for the miss (oca.fetch.history), for the access log
        self._waiters: list[Callable[[], None]] = []

    # BodySource, as the connection sees it
    @property
    def available(self) -> int:
        return self.have if self.fd >= 0 else 0

    @property
    def failed(self) -> bool:
        return self.result in ("fail", "absent")

    @property
    def complete(self) -> bool:
        return self.result == "done"

    @property
    def opened(self) -> bool:
        return self.fd >= 0 or self.result != ""

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


class RemoteFills:
    """The worker's fills by key, fed by the master's messages on the fill link."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.link: Link | None = None
        self.fills: dict[str, RemoteFill] = {}
        self.absent: dict[str, float] = {}  # key -> monotonic time the master's 404 stands until
        self.stale: set[str] = set()
        self.sliced: dict[str, dict[str, Any]] = {}
        self.on_changed: Callable[[list[str]], None] = lambda keys: None  # forget local cache entries
        self._clock = clock

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
        if fill is None or fill.result in ("fail", "absent", "stored", "sliced"):
            fill = RemoteFill(key)
            self.fills[key] = fill
            self._ask({"op": "fill", "k": key, "start": start, "revalidate": revalidate}, fill)
        fill.refs += 1
        return fill

    def acquire_slice(self, key: str, index: int) -> RemoteFill:
        skey = slice_key(key, index)
        fill = self.fills.get(skey)
        if fill is None or fill.result in ("fail", "absent", "stored"):
            fill = RemoteFill(skey)
            self.fills[skey] = fill
            self._ask({"op": "slice", "k": key, "i": index}, fill)
        fill.refs += 1
        return fill

    def hint(self, key: str, start: int | None, session: str) -> None:
        """Pass a player's next-object hint to the master (oca.fetch.hints); nothing comes back."""
        if self.link is not None and not self.link.closed:
            self.link.send({"op": "prefetch", "k": key, "start": start, "sid": session})

    def release(self, fill: RemoteFill) -> None:
        fill.refs -= 1
        self._drop_if_unused(fill)

    def _drop_if_unused(self, fill: RemoteFill) -> None:
        if fill.refs <= 0 and fill.result != "":
            fill.close_fd()
            if self.fills.get(fill.key) is fill:
                del self.fills[fill.key]

    def _ask(self, message: dict[str, Any], fill: RemoteFill) -> None:
        if self.link is None or self.link.closed:
            fill.result, fill.status, fill.reason = "fail", 503, "no link to the master"
            return
        self.link.send(message)

    # -- messages from the master ---------------------------------------------------------------------

    def on_message(self, link: Link, message: dict[str, Any]) -> None:
        event = message.get("ev")
        if event == "stale":
            keys = [k for k in message.get("keys", ()) if isinstance(k, str)]
            self.stale.update(keys)
            self.on_changed(keys)
            return
        if event in ("fresh", "purged"):
            keys = [k for k in message.get("keys", ()) if isinstance(k, str)]
            self.stale.difference_update(keys)
            for key in keys:
                self.sliced.pop(key, None)
            self.on_changed(keys)
            return
        name = message.get("k")
        fill = self.fills.get(name) if isinstance(name, str) else None
        if fill is None:
            return
        why = message.get("why")
        if isinstance(why, str) and why:
            fill.why = why
        if event == "have":
            fill.have = int(message.get("n", fill.have))
        elif event == "open":
            fill.size = message.get("size")
            fill.etag, fill.last_modified = message.get("etag"), message.get("lm")
            fill.media_type, fill.source = message.get("type"), str(message.get("src", ""))
            fill._open(str(message.get("path", "")))
        elif event == "moved":
            fill._reopen(str(message.get("path", "")))
        elif event == "done":
            fill.have = int(message.get("n", fill.have))
            fill._open(str(message.get("path", "")))
            fill.result = "done"
            self.on_changed([fill.key])
        elif event == "stored":
            fill.result = "stored"
            self.on_changed([fill.key])
        elif event == "sliced":
            meta = message.get("meta")
            fill.result, fill.sliced = "sliced", meta if isinstance(meta, dict) else None
            if fill.sliced is not None:
                self.sliced[fill.key] = fill.sliced
        elif event == "absent":
            fill.result, fill.status, fill.reason = "absent", 404, "not found upstream"
            ttl = message.get("ttl")
            if isinstance(ttl, int | float) and ttl > 0:
                now = self._clock()
                if len(self.absent) >= 100_000:
                    self.absent = {k: t for k, t in self.absent.items() if t > now}
                self.absent[fill.key] = now + ttl
        elif event == "fail":
            fill.result, fill.status = "fail", int(message.get("status", 502))
            fill.reason = str(message.get("reason", "upstream fetch failed"))
        else:
            return
        fill._wake()
        self._drop_if_unused(fill)

    def on_close(self, link: Link) -> None:
        log.error("the fill link to the master closed: misses fail with 503 until the worker restarts")
        for fill in list(self.fills.values()):
            if not fill.result:
                fill.result, fill.status, fill.reason = "fail", 503, "the master went away"
                fill._wake()
