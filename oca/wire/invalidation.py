"""Invalidations as they cross the wire: the control plane's sequence-numbered log, pushed to each box
(`POST <admin>/invalidations`, answered with the box's applied sequence) and pulled by it
(`GET <control>/v1/invalidations?since=N`).

Rules kept here:
- An entry's seq is an integer in 1..MAX_SEQ (the control plane's log numbers entries with an SQL INTEGER);
  its scope is key, prefix or title; a key is a valid content key, a title id a valid key without `/`.
- A batch is refused whole at its first bad entry (WireError naming its seq): a box applies entries strictly
  in order, so skipping one would break the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oca.keys import is_valid_key
from oca.wire.codec import Fields, WireError

SCOPES = ("key", "prefix", "title")
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One entry of the control plane's invalidation log."""

    seq: int
    scope: str  # key | prefix | title
    value: str
    soft: bool = False  # mark stale (revalidate) instead of removing
    reason: str = ""
    operator: str = ""  # who asked (X-OCA-Operator)
    time: float = 0.0  # epoch seconds it was appended
    client_id: str | None = None  # the operator's idempotency id, "id" on the wire

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "scope": self.scope, "value": self.value, "soft": self.soft, "reason": self.reason,
                "operator": self.operator, "time": self.time, "id": self.client_id}

    @classmethod
    def from_json(cls, raw: object, what: str = "invalidation") -> Invalidation:
        f = Fields(raw, what)
        seq = f.raw.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ:
            raise WireError(f"invalidation seq must be an integer from 1 to {MAX_SEQ}, got {seq!r:.80}")
        f.what = f"invalidation {seq}"
        scope = f.raw.get("scope")
        if scope not in SCOPES:
            raise f.fail("scope", "one of " + ", ".join(SCOPES))
        value = f.text("value", empty=False)
        if scope == "key" and not is_valid_key(value):
            raise WireError(f"invalidation {seq}: not a valid content key: {value!r:.80}")
        if scope == "title" and ("/" in value or not is_valid_key(value)):
            raise WireError(f"invalidation {seq}: not a valid title id: {value!r:.80}")
        return cls(seq, str(scope), value, f.flag("soft", default=False), f.optional_text("reason") or "",
                   f.optional_text("operator") or "", f.number("time", default=0.0), f.optional_text("id"))


@dataclass(frozen=True, slots=True)
class InvalidationBatch:
    """A push's body, or a pull's answer (with the log's last seq)."""

    entries: tuple[Invalidation, ...]
    last_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"invalidations": [e.to_json() for e in self.entries]}
        if self.last_seq is not None:
            body["last_seq"] = self.last_seq
        return body

    @classmethod
    def from_json(cls, raw: object, what: str = "invalidations") -> InvalidationBatch:
        f = Fields(raw, what)
        entries = tuple(Invalidation.from_json(e) for e in f.items("invalidations"))
        return cls(entries, f.optional_count("last_seq", maximum=MAX_SEQ))


@dataclass(frozen=True, slots=True)
class Applied:
    """A box's answer to a push: the last sequence number it has applied."""

    applied_seq: int

    def to_json(self) -> dict[str, int]:
        return {"applied_seq": self.applied_seq}

    @classmethod
    def from_json(cls, raw: object, what: str = "push answer") -> Applied:
        return cls(Fields(raw, what).count("applied_seq", maximum=MAX_SEQ))
