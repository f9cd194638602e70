"""The control plane's domain values: the fleet as configured, the titles as catalogued, boxes as polled.

Everything here is a frozen value. Pure decision code (steering, manifests, popularity, fill plans) takes
these and returns new values; only the service modules do I/O to build or refresh them.

Units: coordinates in decimal degrees; capacities and rates in bits per second; times in epoch seconds
(wall clock, from an injected clock) unless a field says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

ORIGIN_PATHWAY = "origin"  # the pathway id of the origin; always the last pathway offered


@dataclass(frozen=True, slots=True)
class Site:
    """An ISP location (or an internet exchange) where boxes are racked."""

    id: str
    latitude: float
    longitude: float
    country: str  # ISO 3166-1 alpha-2, upper case
    parent: str | None = None  # the site this one fills from and fails over to (a tier up)


@dataclass(frozen=True, slots=True)
class Box:
    """One appliance as the fleet config lists it."""

    id: str  # also its pathway id in manifests
    site: str
    data_url: str  # e.g. http://127.0.0.11:8080 (no trailing slash): players fetch /t/<jwt>/titles/...
    admin_url: str  # e.g. http://127.0.0.11:8081: /status, /inventory, purge, prefetch, drain
    egress_capacity: int  # bits per second the box may send; load = egress / capacity
    prefixes: tuple[str, ...] = ()  # client prefixes this box announces (embedded boxes: the ISP's own)


@dataclass(frozen=True, slots=True)
class CoverageArea:
    """A client prefix mapped to where its clients are and which country's licences apply to them."""

    prefix: str  # CIDR, IPv4 or IPv6
    latitude: float
    longitude: float
    country: str


@dataclass(frozen=True, slots=True)
class Fleet:
    sites: Mapping[str, Site]
    boxes: Mapping[str, Box]
    coverage: tuple[CoverageArea, ...]
    origin_url: str  # the origin's base URL; the last pathway of every manifest


class BoxHealth(msgspec.Struct, frozen=True, gc=False):
    """What the control plane last concluded about a box from polling its /status (with hysteresis).

    A Struct out of the collector's sight, not a dataclass: the poller makes one per box per poll (10,000 a
    second at 20,000 boxes), and a frozen slotted dataclass cost 8 µs to make (every field through
    object.__setattr__) against under 1 µs, and was one more object for the young collections to walk.
    Its fields hold no containers that could make a cycle (a tuple of strings at most)."""

    box_id: str
    healthy: bool
    draining: bool = False  # the box says so, or an operator drained it at the control plane
    load: float = 0.0  # egress / egress_capacity, 0.0 when idle, may exceed 1.0
    version: str | None = None
    failed_tiers: tuple[str, ...] = ()
    last_healthy_poll: float | None = None  # when the latest successful poll finished
    error: str | None = None  # why the last poll failed, if it did


@dataclass(frozen=True, slots=True)
class CatalogFile:
    path: str  # content path, the box's cache key: titles/<title_id>/<rendition>/<file>
    size: int
    digest: str  # xxh3_128 hex of the bytes (what the box's storage computes)


@dataclass(frozen=True, slots=True)
class Rendition:
    id: str  # the directory under titles/<title_id>/, e.g. 720p
    kind: str  # "video", "audio" or "subtitles"
    bandwidth: int  # peak bits per second (HLS BANDWIDTH, DASH @bandwidth)
    codecs: str = ""
    resolution: tuple[int, int] | None = None  # width, height
    average_bandwidth: int | None = None
    frame_rate: float | None = None
    playlist: str | None = None  # content path of its HLS media playlist, if packaged for HLS


@dataclass(frozen=True, slots=True)
class Title:
    id: str
    renditions: tuple[Rendition, ...]
    files: tuple[CatalogFile, ...]
    countries: frozenset[str] = frozenset()  # where it may play; empty = everywhere
    hls_master: str | None = None  # content path of the packaged multivariant playlist
    dash_manifest: str | None = None  # content path of the packaged MPD
    ingested_at: float = 0.0

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def licensed_in(self, country: str | None) -> bool:
        return not self.countries or (country is not None and country in self.countries)


@dataclass(frozen=True, slots=True)
class Inventory:
    """Which titles each box holds: box id -> title ids with at least one object on the box.

    `complete` lists, per box, the titles whose every catalogued file is on the box ("live").
    """

    holding: Mapping[str, frozenset[str]] = field(default_factory=dict)
    complete: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def holds(self, box_id: str, title_id: str) -> bool:
        return title_id in self.holding.get(box_id, frozenset())

    def live(self, box_id: str, title_id: str) -> bool:
        return title_id in self.complete.get(box_id, frozenset())
