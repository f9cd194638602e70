"""Every message the master and a worker exchange, one frozen record per kind.

Three channels carry them (oca.protocol.codec turns them into bytes and back):
- the control socket, worker -> master: `Hello` first (the versions the worker speaks), then `Ready` once it
  serves, then one `Report` per flush interval (counters, hits, I/O errors and damaged objects, batched so
  the hit path never talks to the master);
- the control socket, master -> worker: `Welcome` (the version chosen and the validated config) or `Refused`;
- the fill link, both ways: a worker asks (`FillRequest`, `SliceRequest`) and passes on players' next-object
  hints (`PrefetchHint`, never answered); the master answers with the fill's events (`Opened`, `Have`,
  `Moved`, `Done`, `Stored`, `Sliced`, `Absent`, `Failed`) and broadcasts soft-purge marks (`Stale`, `Fresh`,
  `Purged`).

Rules kept here:
- Wire names are short and, for every message a release before the handshake already sent, the same as
  it sent (version 1): renaming a field or a tag is a protocol change (oca.protocol.version).
- Records are msgspec Structs (frozen, like dataclasses, and checked field by field when decoded), so a
  message that does not fit its record is refused where it enters, never half-read deeper in.
- `FillState` is the one list of states a worker's fill goes through; `Sliced.meta` is the one shape of a
  sliced object's description.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

# -- states ---------------------------------------------------------------------------------------------


class FillState(enum.StrEnum):
    """Where a worker's fill of one key stands (oca.fetch.remote.RemoteFill.result); "" while it runs."""

    RUNNING = ""
    DONE = "done"  # the whole body is in the file, which is now in storage
    STORED = "stored"  # it was in storage (or went there) without this worker following its bytes
    SLICED = "sliced"  # the object is stored in slices: ask for those instead
    ABSENT = "absent"  # upstream said it does not exist (404, remembered for negative_ttl)
    FAIL = "fail"  # upstream or storage failed: the client gets `status`

    @property
    def ended(self) -> bool:
        return self is not FillState.RUNNING

    @property
    def failed(self) -> bool:
        return self in (FillState.ABSENT, FillState.FAIL)


# -- the control socket ---------------------------------------------------------------------------------


class Hello(msgspec.Struct, frozen=True, tag_field="t", tag="hello"):
    """A worker's first message: the protocol versions it speaks, newest first. Its shape never changes."""

    speaks: tuple[int, ...]


class Welcome(msgspec.Struct, frozen=True, tag_field="t", tag="welcome"):
    """The master's answer to Hello: the version both speak from now on, and the config to serve (the raw
    mapping oca.config reads, as the master validated it). Its shape never changes."""

    version: Annotated[int, msgspec.Meta(ge=1)] = msgspec.field(name="v")
    config: dict[str, Any]


class Refused(msgspec.Struct, frozen=True, tag_field="t", tag="refused"):
    """The master's answer to a Hello it has no version in common with: the worker exits. Never changes."""

    reason: str
    speaks: tuple[int, ...] = ()  # what the master speaks


class Ready(msgspec.Struct, frozen=True, tag_field="t", tag="ready"):
    """The worker serves on its listening socket."""


class PlayerReport(msgspec.Struct, frozen=True):
    """One worker's CMCD-derived counts since its last report (oca.serve.stats.PlayerStats)."""

    requests: dict[str, int]  # CMCD object type -> requests carrying CMCD
    startup: dict[str, int]  # ... with su
    rebuffers: dict[str, int]  # ... with bs
    rebuffer_seconds: float
    media_seconds: dict[str, float]
    buffer: list[int]  # one per oca.serve.stats.BUFFER_BUCKETS bound, then +Inf
    buffer_sum: float
    bitrate: list[int]
    bitrate_sum: float
    # sid -> (first su request, first request without su, last request), worker clock seconds
    sessions: dict[str, tuple[float | None, float | None, float]]


class Report(msgspec.Struct, frozen=True, tag_field="t", tag="report"):
    """One worker's deltas since its last report, sent once per flush interval (oca.serve.stats.WorkerStats)."""

    requests: list[tuple[int, str, int]] = []  # (status, cache result, responses)
    bytes_sent: list[tuple[str, str, int]] = msgspec.field(default_factory=list, name="bytes")  # (tier, cache, bytes)
    duration_buckets: list[int] = []  # one per oca.serve.stats.DURATION_BUCKETS bound, then +Inf
    duration_sum: float = 0.0
    hits: dict[str, int] = {}  # key -> hits, for the store's recency and promotion
    io_errors: list[tuple[str, str]] = []  # (tier, error)
    damaged: list[tuple[str, str]] = []  # (key, error)
    connections: int = 0  # open connections now (a gauge)
    player: PlayerReport | None = None  # None: no request carried CMCD
    misses: dict[str, int] = {}  # miss reason (oca.fetch.history.REASONS, or "unknown") -> misses
    hints_refused: int = 0  # CMCD next-object hints the request's token did not cover (oca.serve.hints)


class Duress(msgspec.Struct, frozen=True, tag_field="t", tag="duress"):
    """After the handshake, master -> worker: whether the box is in duress (draining, or over its egress
    target), which the worker's answers say to players in CMSD (`du`, `mb`: oca.http.cmsd). Sent when it
    changes, and to a worker that becomes ready while it holds."""

    on: bool


WorkerMessage = Hello | Ready | Report
MasterMessage = Welcome | Refused  # the answer to Hello
ControlMessage = Duress  # what the master may send after the answer


# -- the fill link: worker -> master --------------------------------------------------------------------


class FillRequest(msgspec.Struct, frozen=True, tag_field="op", tag="fill"):
    """Fill `key` (or join its fill); `start` is the client's first byte (which slice to fetch first)."""

    key: str = msgspec.field(name="k")
    start: Annotated[int, msgspec.Meta(ge=0)] = 0
    revalidate: bool = False  # the worker holds a soft-purged copy: revalidate it upstream


class SliceRequest(msgspec.Struct, frozen=True, tag_field="op", tag="slice"):
    """Fill slice `index` of the sliced object `key`."""

    key: str = msgspec.field(name="k")
    index: Annotated[int, msgspec.Meta(ge=0)] = msgspec.field(name="i")


class PrefetchHint(msgspec.Struct, frozen=True, tag_field="op", tag="prefetch"):
    """A player's CMCD next-object hint (`nor`/`nrr`, oca.serve.hints): fill `key` in the background if it is
    not held (the slice holding byte `start` of a sliced object). No answer is sent. Version 2 and later:
    a worker never sends it on a version-1 link (the master of that version would not know it)."""

    key: str = msgspec.field(name="k")
    start: Annotated[int, msgspec.Meta(ge=0)] | None = None
    session: str = msgspec.field(default="", name="sid")  # CMCD sid (or the client's address)
    # the box's own lookahead, not the player's hint (oca.serve.hints): admitted only with a session slot to
    # spare. A field with a default: a master that predates it ignores it, and reads its absence as False.
    guess: bool = msgspec.field(default=False, name="g")


FillAsk = FillRequest | SliceRequest | PrefetchHint


# -- the fill link: master -> worker --------------------------------------------------------------------


class SliceMeta(msgspec.Struct, frozen=True):
    """A sliced object: its whole size, the slice size, and what upstream said about it."""

    total: int
    slice_size: int
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None


class Stale(msgspec.Struct, frozen=True, tag_field="ev", tag="stale"):
    """These keys were soft-purged: serve them only after a revalidation (sent whole on attach)."""

    keys: tuple[str, ...]


class Fresh(msgspec.Struct, frozen=True, tag_field="ev", tag="fresh"):
    """These keys were revalidated: no longer stale."""

    keys: tuple[str, ...]


class Purged(msgspec.Struct, frozen=True, tag_field="ev", tag="purged"):
    """These sliced objects were purged: forget their slice descriptions."""

    keys: tuple[str, ...]


class Opened(msgspec.Struct, frozen=True, tag_field="ev", tag="open"):
    """The fill of `key` has its headers and writes its bytes to `path` (open it and follow `Have`)."""

    key: str = msgspec.field(name="k")
    path: str = ""
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = msgspec.field(default=None, name="lm")
    media_type: str | None = msgspec.field(default=None, name="type")
    source: str = msgspec.field(default="", name="src")
    why: str = ""  # the reason the first client missed (oca.fetch.history), for the access log


class Have(msgspec.Struct, frozen=True, tag_field="ev", tag="have"):
    """The first `n` bytes of `key`'s fill are in its file."""

    key: str = msgspec.field(name="k")
    n: int


class Moved(msgspec.Struct, frozen=True, tag_field="ev", tag="moved"):
    """The fill's tier write failed: the same bytes, and the rest, are in `path` now (oca.fetch.fillfile)."""

    key: str = msgspec.field(name="k")
    path: str


class Done(msgspec.Struct, frozen=True, tag_field="ev", tag="done"):
    """All `n` bytes are there; `path` is where they are now (storage, or memory when not stored)."""

    key: str = msgspec.field(name="k")
    n: int
    path: str = ""


class Stored(msgspec.Struct, frozen=True, tag_field="ev", tag="stored"):
    """`key` is in storage: serve it from there."""

    key: str = msgspec.field(name="k")


class Sliced(msgspec.Struct, frozen=True, tag_field="ev", tag="sliced"):
    """`key` is stored in slices: ask for them (SliceRequest)."""

    key: str = msgspec.field(name="k")
    meta: SliceMeta
    why: str = ""  # as Opened.why


class Absent(msgspec.Struct, frozen=True, tag_field="ev", tag="absent"):
    """Upstream has no `key` (404); the worker may answer 404 itself for `ttl` seconds."""

    key: str = msgspec.field(name="k")
    ttl: float = 0.0
    why: str = ""  # as Opened.why


class Failed(msgspec.Struct, frozen=True, tag_field="ev", tag="fail"):
    """The fill failed: the clients get `status` (and are cut short if their body had begun)."""

    key: str = msgspec.field(name="k")
    status: int = 502
    reason: str = "upstream fetch failed"
    why: str = ""  # as Opened.why


FillEvent = Stale | Fresh | Purged | Opened | Have | Moved | Done | Stored | Sliced | Absent | Failed
KeyedEvent = Opened | Have | Moved | Done | Stored | Sliced | Absent | Failed  # about one fill

# every kind, for the tests that go through all of them
ALL_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    Hello, Welcome, Refused, Ready, Duress, Report, FillRequest, SliceRequest, PrefetchHint,
    Stale, Fresh, Purged, Opened, Have, Moved, Done, Stored, Sliced, Absent, Failed)
