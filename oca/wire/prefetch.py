"""A box's prefetch jobs as they cross the wire: `POST /prefetch` (a PrefetchRequest: the fill job, the lab,
an operator) and the job's progress (`GET /prefetch/<id>`, `DELETE /prefetch/<id>`: a JobProgress).

Rules kept here:
- Every number a sender gives is range-checked: priority within ±MAX_PRIORITY, rate within 0..MAX_RATE
  bytes/s ("50MB" or an integer), an item's size within 0..MAX_SIZE; a key must be a valid content key.
- An item may be a bare key (`"titles/1/a.ts"`) and may say `"tier": "hot"` instead of `"hot": true`
  (what operators' scripts send); it is written back in the full form.
- A job's result per key is `stored`, `present`, `absent` or `fail: <reason>`; `failures` holds the first
  100 that were neither stored nor present.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oca.config.units import parse_size
from oca.keys import is_valid_key
from oca.wire.codec import Fields, WireError
from oca.wire.fill import Source

MAX_PRIORITY = 1_000_000
MAX_RATE = 10**12  # bytes per second: 8 Tbit/s, far past any box's egress
MAX_SIZE = 2**63 - 1  # an off_t: no file can be larger
JOB_STATES = ("queued", "running", "done", "cancelled")


@dataclass(frozen=True, slots=True)
class PrefetchItem:
    key: str
    size: int | None = None
    digest: str | None = None
    hot: bool = False
    pin: bool = False
    sources: tuple[Source, ...] = ()  # in order; () = the box's configured ones

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": self.key, "size": self.size, "digest": self.digest, "hot": self.hot,
                                "pin": self.pin}
        if self.sources:
            body["sources"] = [s.to_json() for s in self.sources]
        return body

    @classmethod
    def from_json(cls, raw: object, what: str = "item") -> PrefetchItem:
        f = Fields({"key": raw} if isinstance(raw, str) else raw, what)
        key = f.text("key")
        if not is_valid_key(key):
            raise f.fail("key", "a valid content key")
        tier = f.raw.get("tier")
        if tier not in (None, "hot", "cold"):
            raise f.fail("tier", "hot or cold")
        sources = f.items("sources") if f.has("sources") else []
        if f.has("sources") and not sources:
            raise f.fail("sources", "a non-empty list")
        return cls(key, f.optional_count("size", maximum=MAX_SIZE), f.optional_text("digest"),
                   f.flag("hot", default=False) or tier == "hot", f.flag("pin", default=False),
                   tuple(_source(s, f"{what}.sources[{j}]") for j, s in enumerate(sources)))


def _source(raw: object, what: str) -> Source:
    f = Fields(raw, what)
    url = f.text("url", empty=False)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise f.fail("url", "an http(s) URL")
    source = Source.from_json({**f.raw, "kind": f.raw.get("kind", "origin")}, what)
    return Source(source.name, url.rstrip("/"), source.kind)


@dataclass(frozen=True, slots=True)
class PrefetchRequest:
    """`POST /prefetch`: the items in fetch order, the job's priority (higher first) and its own rate cap in
    bytes per second (0: only the box's fetch.prefetch_rate)."""

    items: tuple[PrefetchItem, ...]
    priority: int = 0
    rate: int = 0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"items": [i.to_json() for i in self.items], "priority": self.priority}
        if self.rate:
            body["rate"] = self.rate
        return body

    @classmethod
    def from_json(cls, raw: object, what: str = "") -> PrefetchRequest:
        f = Fields(raw, what)
        entries = f.items("items")
        if not entries:
            raise f.fail("items", "a non-empty list")
        items = tuple(PrefetchItem.from_json(entry, f"items[{i}]") for i, entry in enumerate(entries))
        return cls(items, f.integer("priority", default=0, bound=MAX_PRIORITY), _rate(f))


def _rate(f: Fields) -> int:
    raw = f.raw.get("rate")
    try:
        rate = parse_size(raw) if raw else 0
    except ValueError as exc:
        raise WireError(f"{f.where('rate')} (bytes per second): {exc}") from None
    if rate > MAX_RATE:
        raise f.fail("rate", f"at most {MAX_RATE} bytes per second")
    return rate


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A prefetch job as the box reports it while it runs and after."""

    id: int
    state: str  # queued, running, done, cancelled
    priority: int
    items: int
    finished: int  # items with a result
    stored: int
    present: int
    failed: int
    failures: Mapping[str, str] = field(default_factory=dict)  # key -> reason, the first 100
    bytes: int = 0  # bytes received so far
    bytes_by_source: Mapping[str, int] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.state in ("done", "cancelled")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "priority": self.priority, "items": self.items,
                "finished": self.finished, "stored": self.stored, "present": self.present, "failed": self.failed,
                "failures": dict(self.failures), "bytes": self.bytes, "bytes_by_source": dict(self.bytes_by_source)}

    @classmethod
    def from_json(cls, raw: object, what: str = "prefetch job") -> JobProgress:
        f = Fields(raw, what)
        state = f.text("state")
        if state not in JOB_STATES:
            raise f.fail("state", " or ".join(JOB_STATES))
        failures = f.mapping("failures", default={})
        if not all(isinstance(v, str) for v in failures.values()):
            raise f.fail("failures", "an object of reasons")
        return cls(f.count("id"), state, f.integer("priority", bound=MAX_PRIORITY), f.count("items"),
                   f.count("finished"), f.count("stored"), f.count("present"), f.count("failed"),
                   {str(k): str(v) for k, v in failures.items()}, f.count("bytes"), f.counts("bytes_by_source"))
