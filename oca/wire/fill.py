"""A box's nightly fill plan as it crosses the wire: the control plane plans (control/fill_plan.py) and answers
`GET /v1/fill-plans/<box>` with a PlanReply; the fill job on the box decodes it (fill/runner.py) and asks
the box for what is missing.

Rules kept here:
- A plan carries its version (PLAN_VERSION); a reader refuses any other, naming both.
- Every file names its sources (in fetch order) by name; the plan's `sources` holds each name's URL and kind
  (peer, parent or origin), and a file naming a source the plan lacks is refused.
- `bytes` in a plan's JSON is derived (the sum of its files' sizes) for people and scripts; readers ignore it.
- A planned file may carry `score`: the planner's prediction of its requests until the next plan (issue 19,
  "fill-aware"). It is optional both ways: a plan without scores (an older planner, or whole-title placement)
  decodes to None and means what it always meant; an older reader ignores the key.
- The fill job hands a plan's scores to its box as FillScores (`PUT /cache/fill-scores`), the whole plan's at
  once, so a file already on the box is scored as well as the ones it fetches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oca.keys import is_valid_key
from oca.wire.codec import Fields, WireError

PLAN_VERSION = 1
PEER, PARENT, ORIGIN = "peer", "parent", "origin"
SOURCE_KINDS = (PEER, PARENT, ORIGIN)


@dataclass(frozen=True, slots=True)
class FillSettings:
    """The planner's settings (control.yaml `fill:`); a plan reply carries them so an operator sees them."""

    head_share: float = 0.5  # share of a site's popularity mass whose titles go on every box of the site
    replication: int = 2  # boxes of a site that hold each title outside the head
    headroom: float = 0.1  # share of each tier kept free of the plan (client misses land there)
    pin: bool = True  # pin planned files until the next plan

    def __post_init__(self) -> None:
        if not 0.0 <= self.head_share <= 1.0:
            raise ValueError(f"head_share {self.head_share!r}: expected a share from 0 to 1")
        if self.replication < 1:
            raise ValueError(f"replication {self.replication!r}: expected at least 1")
        if not 0.0 <= self.headroom < 1.0:
            raise ValueError(f"headroom {self.headroom!r}: expected a share from 0 to below 1")

    def to_json(self) -> dict[str, Any]:
        return {"head_share": self.head_share, "replication": self.replication, "headroom": self.headroom,
                "pin": self.pin}

    @classmethod
    def from_json(cls, raw: object, what: str = "fill settings") -> FillSettings:
        f = Fields(raw, what)
        try:
            return cls(f.number("head_share"), f.count("replication"), f.number("headroom"), f.flag("pin"))
        except WireError:
            raise
        except ValueError as exc:
            raise WireError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Source:
    """Where a planned file may be fetched from: a peer or parent box's data URL, or the origin."""

    name: str  # a box id, or "origin"
    url: str  # the box's data URL or the origin's base URL, no trailing slash
    kind: str  # peer, parent or origin

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "kind": self.kind}

    @classmethod
    def from_json(cls, raw: object, what: str = "source") -> Source:
        f = Fields(raw, what)
        kind = f.text("kind")
        if kind not in SOURCE_KINDS:
            raise f.fail("kind", "peer, parent or origin")
        return cls(f.text("name", empty=False), f.text("url", empty=False), kind)


@dataclass(frozen=True, slots=True)
class PlannedFile:
    key: str  # the content path (the box's cache key)
    title: str
    size: int
    digest: str
    tier: str  # the tier it is budgeted on
    hot: bool  # ask the box to store it on its first tier
    pin: bool
    sources: tuple[str, ...]  # source names in order; BoxPlan.sources has their URLs and kinds
    score: float | None = None  # expected requests until the next plan; None: no per-file prediction

    def to_json(self) -> dict[str, Any]:
        out = {"key": self.key, "title": self.title, "size": self.size, "digest": self.digest, "tier": self.tier,
               "hot": self.hot, "pin": self.pin, "sources": list(self.sources)}
        if self.score is not None:
            out["score"] = round(self.score, 6)
        return out

    @classmethod
    def from_json(cls, raw: object, what: str = "planned file") -> PlannedFile:
        f = Fields(raw, what)
        score = f.number("score") if f.has("score") else None
        if score is not None and score < 0:
            raise f.fail("score", "a non-negative number")
        return cls(f.text("key", empty=False), f.text("title"), f.count("size"), f.text("digest"), f.text("tier"),
                   f.flag("hot"), f.flag("pin"), f.texts("sources"), score)


@dataclass(frozen=True, slots=True)
class TierUse:
    name: str
    capacity: int
    budget: int
    planned: int  # bytes of planned files on this tier (never above budget)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "capacity": self.capacity, "budget": self.budget, "planned": self.planned}

    @classmethod
    def from_json(cls, raw: object, what: str = "tier") -> TierUse:
        f = Fields(raw, what)
        return cls(f.text("name"), f.count("capacity"), f.count("budget"), f.count("planned"))


@dataclass(frozen=True, slots=True)
class PlannedTitle:
    id: str
    rank: int  # 1-based rank at the site
    score: float  # sent rounded to 6 decimals
    head: bool
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "rank": self.rank, "score": round(self.score, 6), "head": self.head,
                "size": self.size}

    @classmethod
    def from_json(cls, raw: object, what: str = "planned title") -> PlannedTitle:
        f = Fields(raw, what)
        return cls(f.text("id", empty=False), f.count("rank"), f.number("score"), f.flag("head"), f.count("size"))


@dataclass(frozen=True, slots=True)
class BoxPlan:
    box: str
    site: str
    tiers: tuple[TierUse, ...]
    titles: tuple[PlannedTitle, ...]  # in fetch order (rank order)
    files: tuple[PlannedFile, ...]  # in fetch order: by title rank, then path
    left_out: tuple[str, ...]  # head titles that did not fit this box's budget
    sources: Mapping[str, Source]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file_sources(self, planned: PlannedFile) -> list[Source]:
        return [self.sources[name] for name in planned.sources]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION, "box": self.box, "site": self.site, "bytes": self.bytes,
            "tiers": [t.to_json() for t in self.tiers],
            "titles": [t.to_json() for t in self.titles],
            "left_out": list(self.left_out),
            "sources": {name: self.sources[name].to_json() for name in sorted(self.sources)},
            "files": [f.to_json() for f in self.files],
        }

    @classmethod
    def from_json(cls, raw: object, what: str = "fill plan") -> BoxPlan:
        """The plan a control plane sent; WireError naming the first field that is wrong."""
        f = Fields(raw, what)
        if f.raw.get("version") != PLAN_VERSION:
            raise WireError(f"{what}: version {f.raw.get('version')!r:.20} is not {PLAN_VERSION}")
        sources = {}
        for name, entry in f.mapping("sources").items():
            source = Source.from_json(entry, f"{what} sources[{name!r:.40}]")
            if source.name != name:
                raise WireError(f"{what} sources[{name!r:.40}] is named {source.name!r:.40}")
            sources[name] = source
        files = tuple(PlannedFile.from_json(entry, f"{what} files[{i}]") for i, entry in enumerate(f.items("files")))
        for i, planned in enumerate(files):
            unknown = [n for n in planned.sources if n not in sources]
            if unknown:
                raise WireError(f"{what} files[{i}] ({planned.key!r:.60}) names unknown sources {unknown!r:.60}")
        return cls(f.text("box", empty=False), f.text("site"),
                   tuple(TierUse.from_json(t, f"{what} tiers[{i}]") for i, t in enumerate(f.items("tiers"))),
                   tuple(PlannedTitle.from_json(t, f"{what} titles[{i}]") for i, t in enumerate(f.items("titles"))),
                   files, f.texts("left_out", default=()), sources)


@dataclass(frozen=True, slots=True)
class PlanReply:
    """`GET /v1/fill-plans/<box>`: the box's plan, the fill window the control plane sets (None: `always`),
    when it was planned and with which settings."""

    plan: BoxPlan
    window: str | None
    generated_at: float  # epoch seconds
    settings: FillSettings

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "window": self.window, "generated_at": self.generated_at,
                "settings": self.settings.to_json()}

    @classmethod
    def from_json(cls, raw: object, what: str = "fill plan") -> PlanReply:
        f = Fields(raw, what)
        return cls(BoxPlan.from_json(raw, what), f.optional_text("window"), f.number("generated_at"),
                   FillSettings.from_json(f.mapping("settings"), f"{what} settings"))


@dataclass(frozen=True, slots=True)
class FillScores:
    """`PUT /cache/fill-scores` on a box's admin API: the plan's per-file predictions (PlannedFile.score), sent
    by the fill job before it asks for the missing files. They replace the previous plan's on every tier
    (Store.set_fill_scores); `{}` ends the previous plan. Keys must be valid content keys and scores finite
    non-negative numbers, else the box answers 400 naming the first bad one."""

    scores: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION, "scores": {k: round(v, 6) for k, v in self.scores.items()}}

    @classmethod
    def of(cls, plan: BoxPlan) -> FillScores:
        return cls({f.key: f.score for f in plan.files if f.score is not None})

    @classmethod
    def from_json(cls, raw: object, what: str = "fill scores") -> FillScores:
        f = Fields(raw, what)
        version = f.count("version")
        if version != PLAN_VERSION:
            raise f.fail("version", f"{PLAN_VERSION} (got {version})")
        scores: dict[str, float] = {}
        for key, value in f.mapping("scores").items():
            if not is_valid_key(key):
                raise WireError(f"{f.where('scores')}: {key[:200]!r} is not a valid content key")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise WireError(f"{f.where('scores')}[{key[:200]!r}] must be a finite non-negative number")
            scores[key] = float(value)
        return cls(scores)
