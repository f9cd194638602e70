"""A box's health report, as it crosses the wire: the fields of `GET /status` the control plane reads on every
health poll (oca/admin builds them; control/health.py reads them). The rest of /status (firmware, fetch,
stats...) is for operators and stays beside these fields, untyped.

Rules kept here:
- A box of an older or a newer release may leave fields out or add some: every field but `box` and `tiers`
  is optional, and one missing or of the wrong type reads as None (`draining` as false unless it is
  `true`); unknown fields are ignored, at the top level and in a tier. A poller must not mark a box down
  because one counter changed shape.
- What is wrong at the top level is a WireError (a ValueError): the body is not an object, it is of another
  box than the one expected, or its `tiers` is not a list of objects (absent reads as no tiers).
- Integers are never booleans (JSON's `true` is not 1); `egress_bps` takes any number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oca.wire.codec import WireError


@dataclass(frozen=True, slots=True)
class TierReport:
    """One storage tier of the box (fastest first in `BoxReport.tiers`)."""

    name: str | None
    capacity: int | None = None  # bytes
    used: int | None = None  # bytes
    objects: int | None = None
    state: str | None = None  # up | full | failed (oca.storage)
    error: str | None = None  # why the tier is full or failed

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    @property
    def label(self) -> str:
        """The name to show, `?` when the box gave none."""
        return "?" if self.name is None else self.name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "capacity": self.capacity, "used": self.used, "objects": self.objects,
                "state": self.state, "error": self.error}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TierReport:
        return cls(_text(raw.get("name")), _integer(raw.get("capacity")), _integer(raw.get("used")),
                   _integer(raw.get("objects")), _text(raw.get("state")), _text(raw.get("error")))


@dataclass(frozen=True, slots=True)
class BoxReport:
    """The health facts of one box's `/status`."""

    box: str
    version: str | None = None  # the release its workers run
    draining: bool = False
    egress_bps: float | None = None  # bits/s sent to players now
    bytes_out: int | None = None  # body bytes sent since start
    connections: int | None = None
    inventory_sequence: int | None = None
    invalidation_seq: int | None = None  # the last invalidation applied
    hit_bytes: int | None = None  # body bytes sent on cache hits, for the hit ratio by bytes
    miss_bytes: int | None = None
    tiers: tuple[TierReport, ...] = ()

    @property
    def failed_tiers(self) -> tuple[str, ...]:
        return tuple(t.label for t in self.tiers if t.failed)

    def to_json(self) -> dict[str, Any]:
        return {"box": self.box, "version": self.version, "draining": self.draining, "egress_bps": self.egress_bps,
                "bytes_out": self.bytes_out, "connections": self.connections,
                "inventory_sequence": self.inventory_sequence, "invalidation_seq": self.invalidation_seq,
                "hit_bytes": self.hit_bytes, "miss_bytes": self.miss_bytes,
                "tiers": [t.to_json() for t in self.tiers]}

    @classmethod
    def from_json(cls, raw: object, box: str | None = None) -> BoxReport:
        """The report in a /status body; `box`, when given, is the box it must be of."""
        if not isinstance(raw, Mapping):
            raise WireError("/status is not a JSON object")
        of = raw.get("box")
        if (box is not None and of != box) or not isinstance(of, str):
            expected = "a box id" if box is None else repr(box)
            raise WireError(f"/status is of box {str(of)[:64]!r}, expected {expected}")
        tiers = raw.get("tiers", [])
        if not isinstance(tiers, list) or not all(isinstance(t, Mapping) for t in tiers):
            raise WireError("/status tiers is not a list of objects")
        return cls(of, _text(raw.get("version")), raw.get("draining") is True, _number(raw.get("egress_bps")),
                   _integer(raw.get("bytes_out")), _integer(raw.get("connections")),
                   _integer(raw.get("inventory_sequence")), _integer(raw.get("invalidation_seq")),
                   _integer(raw.get("hit_bytes")), _integer(raw.get("miss_bytes")),
                   tuple(TierReport.from_json(t) for t in tiers))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
