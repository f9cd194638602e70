"""The nightly fill mode of the cache replay: day 1's requests -> popularity and watch model -> the real
planner (control/fill_plan.py) -> the plan placed on the replayed box before day 2 -> day 2 measured.

Rules kept here:
- The box replays day 1 reactively (it is warm, as a box is), then the plan is applied the way the fill job
  applies it: the previous day's pins do not exist, every planned file is stored with the plan's hot and pin
  flags (store.fill_target then store.adopt, the box's own calls) in plan order; then day 2 is replayed and
  only day 2's requests are counted.
- The planner sees only what the control plane would: day 1's requests per file (popularity per title, and
  the watch model from them), a catalog and the box's tiers; never day 2's requests. The catalog lists every
  file of the titles day 1 watched (a generated trace's titles are known from its seed; the planner places
  nothing of an unwatched title). It must be whole: a catalog of only the requested files would make every
  title look as long as its furthest viewer got, and the watch-depth curve would see no one quit. For a trace
  file, only the requested files are known, and the curve is biased so.
- One site, one box, one country: the comparison is about what to hold, not where.
- `static_fill` (the clairvoyant reference) pins the keys with the most day-2 requests (hits per byte held)
  that fit, and nothing else: it needs day 2's own counts, so no planner can reach it.
- `model_fill` (generated traces only) is the ceiling of prediction: the same static fill, ranked by each
  key's expected day-2 requests under the generator's own model (the true day-2 popularity of every title
  that existed on day 1, times the share of sessions that read the key, from the generator's own session
  draw). It knows how the dice are loaded, not how they fell; no planner learning from day 1 does better
  on average with a static fill.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from control.fill_plan import TierCapacity, WatchModel, learn_watch, plan_fleet
from control.model import Box, CatalogFile, CoverageArea, Fleet, Rendition, Site, Title
from loadtest.cachesim.reference import POLICIES, Result, Trace
from loadtest.cachesim.replay import FAKE_FILE, replay, scaled
from loadtest.cachesim.trace import (  # the generator's own Zipf and session draw: model_fill's model
    DAY,
    RENDITIONS_KBPS,
    TraceSpec,
    _session,
    _Zipf,
    rankings,
    segment_key,
    title,
    title_files,
    title_number,
)
from oca.config.model import StorageConfig
from oca.errors import InsufficientStorage
from oca.storage.store import Store
from oca.wire.fill import BoxPlan, FillSettings

BOX, SITE = "box1", "site1"
DEFAULT_SETTINGS = FillSettings()
FLEET = Fleet({SITE: Site(SITE, 0.0, 0.0, "ZZ")},
              {BOX: Box(BOX, SITE, "http://127.0.0.1:1", "http://127.0.0.1:2", 10**9)},
              (CoverageArea("0.0.0.0/0", 0.0, 0.0, "ZZ"),), "http://127.0.0.1:3")


def title_of(key: str) -> str:
    """The title id of a content path titles/<title>/...; "" for anything else."""
    parts = key.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "titles" else ""


def catalog(files: Iterable[tuple[str, int]]) -> list[Title]:
    """Titles as the control plane's catalog would hold them, from (content path, size) pairs."""
    by_title: dict[str, dict[str, int]] = {}
    for key, size in files:
        if title_of(key):
            by_title.setdefault(title_of(key), {})[key] = size
    titles = []
    for title_id, sizes in sorted(by_title.items()):
        renditions = sorted({key.split("/")[2] for key in sizes if key.count("/") >= 3})
        titles.append(Title(title_id, tuple(Rendition(r, "video", 0) for r in renditions),
                            tuple(CatalogFile(key, size, "") for key, size in sorted(sizes.items()))))
    return titles


def day_counts(trace: Trace, lo: int, hi: int) -> dict[str, int]:
    """Content path -> requests among trace requests [lo, hi)."""
    counts: dict[int, int] = {}
    for i in range(lo, hi):
        n = trace.ids[i]
        counts[n] = counts.get(n, 0) + 1
    return {trace.keys[n]: c for n, c in counts.items()}


def popularity(counts: Mapping[str, int]) -> dict[str, float]:
    """Title -> its requests that day (the site's popularity the planner ranks by)."""
    out: dict[str, float] = {}
    for key, n in counts.items():
        if title_of(key):
            out[title_of(key)] = out.get(title_of(key), 0.0) + n
    return out


def plan(titles: Sequence[Title], counts: Mapping[str, int], tiers: Sequence[TierCapacity],
         settings: FillSettings, per_file: bool = True) -> tuple[BoxPlan, WatchModel | None]:
    """The real planner's plan for the replayed box from day 1's counts (per_file: with the watch model)."""
    watch = learn_watch(titles, counts) if per_file else None
    fill_plan = plan_fleet(FLEET, titles, {SITE: popularity(counts)}, {BOX: tiers}, settings=settings,
                           watch=watch)
    return fill_plan.boxes[BOX], watch


def place(store: Store, box_plan: BoxPlan, path: str) -> int:
    """Hand the box the plan's per-file scores, then store every planned file the way the fill job would;
    returns the bytes placed."""
    store.set_fill_scores({f.key: f.score for f in box_plan.files if f.score is not None})
    placed = 0
    for f in box_plan.files:
        if store.get(f.key) is not None:  # present: kept, pinned if the plan pins it (fill/plan.py's rule)
            if f.pin:
                store.set_pinned(f.key, True)
            placed += f.size
            continue
        try:
            tier, _ = store.fill_target(f.key, f.size, hot=f.hot, cold=True)  # as the box's prefetch asks
            store.adopt(path, f.key, tier=tier, size=f.size, digest="", hot=f.hot, pin=f.pin)
        except InsufficientStorage:
            continue  # no room that is not pinned: the fill job reports it and moves on
        placed += f.size
    return placed


def static_fill(trace: Trace, capacity: int, start: int) -> Result:
    """Clairvoyant static fill: the keys with the most requests from `start` on, as many as fit, held all
    along (ties by key number, so it is deterministic)."""
    counts: dict[int, int] = {}
    for i in range(start, len(trace.ids)):
        n = trace.ids[i]
        counts[n] = counts.get(n, 0) + 1
    used = hit_bytes = hits = 0
    for n in sorted(counts, key=lambda n: (-counts[n], n)):
        size = trace.sizes[n]
        if used + size > capacity:
            continue
        used += size
        hit_bytes += counts[n] * size
        hits += counts[n]
    return hit_bytes, hits


def expected_day2(spec: TraceSpec, sessions: int = 400) -> dict[str, float]:
    """Key -> its expected share of day 2's sessions under the generator's model, for every title on offer on
    day 1 (see model_fill): the title's day-2 Zipf probability times the share of `sessions` draws of the
    generator's own session model (trace._session) that read the key."""
    zipf = _Zipf(spec.titles, spec.alpha)
    day1, day2 = rankings(spec)[:2]
    known = set(day1)
    out: dict[str, float] = {}
    rng = random.Random(spec.seed * 17 + 5)
    previous = 0.0
    for rank, number in enumerate(day2):
        probability, previous = zipf.cdf[rank] - previous, zipf.cdf[rank]
        if number not in known:
            continue  # a new release: nothing on day 1 could name it
        shape = title(spec.seed, number)
        reads = [[0] * (shape.segments + 1) for _ in RENDITIONS_KBPS]  # difference arrays per rendition
        for _ in range(sessions):
            rendition, first, count = _session(rng, shape)
            reads[rendition][first] += 1
            reads[rendition][first + count] -= 1
        for rendition, diffs in enumerate(reads):
            running = 0
            for segment in range(shape.segments):
                running += diffs[segment]
                if running:
                    out[segment_key(number, rendition, segment)] = probability * running / sessions
    return out


def model_fill(trace: Trace, capacity: int, start: int, expected: Mapping[str, float]) -> Result:
    """The static fill ranked by `expected` (expected_day2) instead of day 2's own counts; measured on them."""
    counts: dict[int, int] = {}
    for i in range(start, len(trace.ids)):
        counts[trace.ids[i]] = counts.get(trace.ids[i], 0) + 1
    number = {key: n for n, key in enumerate(trace.keys)}
    used = hit_bytes = hits = 0
    for key in sorted(expected, key=lambda k: (-expected[k], k)):
        n = number.get(key)
        if n is None:
            continue  # never requested in the trace: its size is unknown here, and it would earn nothing
        if used + trace.sizes[n] > capacity:
            continue
        used += trace.sizes[n]
        hit_bytes += counts.get(n, 0) * trace.sizes[n]
        hits += counts.get(n, 0)
    return hit_bytes, hits


def measure_day2(trace: Trace, storage: StorageConfig, fraction: float, policies: Sequence[str],
                 settings: FillSettings = DEFAULT_SETTINGS, spec: TraceSpec | None = None) -> list[dict[str, Any]]:
    """Rows {policy, size, fill, byte_hit_ratio, object_hit_ratio} on day 2 of a two-day trace at `fraction`
    of day 2's unique bytes: `policies` without the fill (each warmed by day 1), then `oca` with the nightly
    fill, the clairvoyant `static` fill and, for a generated trace, the `model` fill. `spec`: the trace is the
    generator's, so the catalog lists every file of the titles day 1 watched (else only the files day 1
    requested)."""
    start = trace.first_at(DAY)
    capacity = int(fraction * trace.unique_bytes(start))
    total = sum(trace.sizes[trace.ids[i]] for i in range(start, len(trace)))
    requests = len(trace) - start
    rows = []

    def row(policy: str, fill: bool, result: Result) -> None:
        rows.append({"policy": policy, "size": fraction, "fill": fill, "byte_hit_ratio": result[0] / total,
                     "object_hit_ratio": result[1] / requests})

    for policy in policies:
        if policy == "oca":
            row(policy, False, replay(trace, storage, capacity, start)[0])
        else:
            row(policy, False, POLICIES[policy](trace, capacity, start))
    counts = day_counts(trace, 0, start)
    sizes = {trace.keys[n]: trace.sizes[n] for n in range(len(trace.keys))}
    tiers = [TierCapacity(t.name, t.capacity) for t in scaled(storage, capacity).tiers]
    if spec is None:
        titles = catalog((key, sizes[key]) for key in counts)
    else:
        numbers = sorted({n for n in map(title_number, counts) if n is not None})
        titles = catalog(f for n in numbers for f in title_files(spec.seed, n))
    box_plan, _ = plan(titles, counts, tiers, settings)
    row("oca", True, replay(trace, storage, capacity, start, lambda store: place(store, box_plan, FAKE_FILE))[0])
    row("static", True, static_fill(trace, capacity, start))
    if spec is not None:
        row("model", True, model_fill(trace, int(capacity * (1 - settings.headroom)), start, expected_day2(spec)))
    return rows
