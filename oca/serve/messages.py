"""What a worker's connection hands the handler and gets back: a parsed request and a planned response.

A response body is a list of parts: bytes to send as they are, or a FileSlice to send from a file with
os.sendfile. Only the connection code turns parts into syscalls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from oca.protocol.messages import FillState


class ObjectTruncated(Exception):
    """An object's file holds fewer bytes than the index says: the object is damaged, not the tier."""


class StorageFault(Exception):
    """A storage operation (reading an object's file) failed with this OSError: the only error that is
    charged to the tier the file lives on. A client that stops reading, resets or times out is not one."""

    def __init__(self, error: OSError, tier: str = "") -> None:
        super().__init__(f"{error.strerror or error} reading from storage")
        self.error = error
        self.tier = tier  # "" : the tier of the response it broke (Response.tier)


@dataclass(slots=True)
class Request:
    method: str
    target: bytes
    headers: dict[str, str]
    keep_alive: bool
    client: str
    started: float  # time.perf_counter() when the request's last byte arrived
    failure: tuple[int, str] | None = None  # set when the request could not be parsed: (status, reason)
    raw: bytes | None = None  # the whole read, when it held this one request head and nothing else (memo)


@dataclass(frozen=True, slots=True)
class FileSlice:
    """`length` bytes from `offset` of the open file `fd`; the connection closes fd when the response ends."""

    fd: int
    offset: int
    length: int


class KeptFile(Protocol):
    """A cache entry that may keep its file's descriptor open beside its body (oca.serve.objects.CachedObject):
    read when the body is sent, so a descriptor the cache let go meanwhile (-1) is never used."""

    fd: int


class HitCounted(Protocol):
    """What a plain hit from memory is counted on: its cache entry (oca.serve.objects.CachedObject). The
    worker's per-key hit count lives on it until the next report (oca.serve.stats), so counting a hit costs
    an attribute, not two look-ups in a table keyed by strings."""

    unreported: int  # hits not yet added to the worker's per-key counts

    @property
    def key(self) -> str: ...


class GrowingBody(Protocol):
    """A file being filled from upstream while clients are sent what has arrived (oca.fetch.remote.RemoteFill)."""

    fd: int
    result: FillState  # RUNNING (""), then DONE complete; FAIL/ABSENT failed; STORED in storage instead
    reason: str

    @property
    def available(self) -> int: ...

    def wait(self, callback: Callable[[], None]) -> None: ...


@dataclass(slots=True)
class Growing:
    """`length` bytes from `offset` of a file still being written: sent as they arrive. If the fill says the
    bytes went straight to storage instead ("stored"), `fallback` gives the part to send in its place."""

    body: GrowingBody
    offset: int
    length: int
    fallback: Callable[[], bytes | FileSlice | Growing] | None = None


@dataclass(slots=True)
class Lazy:
    """A part decided only when the connection reaches it (a slice of a sliced object: stored or filling)."""

    resolve: Callable[[], bytes | FileSlice | Growing]


Part = bytes | FileSlice | Growing | Lazy


@dataclass(slots=True)
class Response:
    status: int
    head: bytes  # status line and headers, ending with the blank line
    parts: list[Part] = field(default_factory=list)
    body_length: int = 0  # bytes the parts carry (0 for HEAD and bodiless statuses)
    close: bool = False  # close the connection after this response
    key: str = ""
    tier: str = ""  # the tier (or "memory") the body came from; "" when no body
    cache: str = ""  # hit, miss, or "" for non-content answers
    owned_fds: tuple[int, ...] = ()  # file descriptors to close after the last part went out
    kept: KeptFile | None = None  # a whole body from memory whose entry may keep a descriptor (sendfile)
    log: dict[str, object] | None = None  # extra fields for the access log (range, cmcd, error)
    log_fields: str = ""  # set on plain hits from memory: the access log's preformatted fixed fields...
    counted: HitCounted | None = None  # ...and the entry their hit is counted on
    # a miss: the answer is not known yet; defer(done) calls done(final response) once it is
    defer: Callable[[Callable[[Response], None]], None] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)  # run once the response has ended

    def release(self) -> None:
        """Run the cleanups (release fills, close late descriptors); for responses that never went out too."""
        cleanup, self.cleanup = self.cleanup, []
        for fn in cleanup:
            fn()
