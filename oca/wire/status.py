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
- `BoxReport.decode(body)` reads the bytes of a /status answer: a body whose fields all have the types
  below is decoded by msgspec straight into the model (the control plane decodes one per box every
  `health.interval`: a poll's parse and decode of a 1.6 KB body cost 16 µs of CPU with json.loads and
  the field checks, 3 µs with msgspec, which skips the operator fields without building them); any
  other body (a field of another shape, not JSON to msgspec) is read the lenient way above, so both give
  the same report.
- The models are msgspec Structs kept out of the garbage collector (`gc=False`: they hold only strings,
  numbers and tiers, so they can make no reference cycle): 20,000 boxes' reports replaced every round
  were collector work for nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from oca.wire.codec import WireError


class TierReport(msgspec.Struct, frozen=True, gc=False):
    """One storage tier of the box (fastest first in `BoxReport.tiers`)."""

    name: str | None = None
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


class BoxReport(msgspec.Struct, frozen=True, gc=False):
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
    def decode(cls, body: bytes, box: str | None = None) -> BoxReport:
        """The report in the bytes of a /status answer (see the module rules); `box` as in `from_json`."""
        try:
            report = _DECODER.decode(body)
        except (msgspec.MsgspecError, RecursionError):  # a field of another shape, or not JSON to msgspec
            try:
                raw = json.loads(body)
            except (ValueError, RecursionError):
                raise WireError("/status is not JSON") from None
            return cls.from_json(raw, box)
        _box_of(report.box, box)
        return report

    @classmethod
    def from_json(cls, raw: object, box: str | None = None) -> BoxReport:
        """The report in a /status body; `box`, when given, is the box it must be of."""
        if not isinstance(raw, Mapping):
            raise WireError("/status is not a JSON object")
        of = _box_of(raw.get("box"), box)
        tiers = raw.get("tiers", [])
        if not isinstance(tiers, list) or not all(isinstance(t, Mapping) for t in tiers):
            raise WireError("/status tiers is not a list of objects")
        return cls(of, _text(raw.get("version")), raw.get("draining") is True, _number(raw.get("egress_bps")),
                   _integer(raw.get("bytes_out")), _integer(raw.get("connections")),
                   _integer(raw.get("inventory_sequence")), _integer(raw.get("invalidation_seq")),
                   _integer(raw.get("hit_bytes")), _integer(raw.get("miss_bytes")),
                   tuple(TierReport.from_json(t) for t in tiers))


_DECODER = msgspec.json.Decoder(BoxReport)


def _box_of(of: object, box: str | None) -> str:
    """The report's box id `of`, checked to be a box id and, when `box` is given, that one."""
    if (box is not None and of != box) or not isinstance(of, str):
        expected = "a box id" if box is None else repr(box)
        raise WireError(f"/status is of box {str(of)[:64]!r}, expected {expected}")
    return of


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
