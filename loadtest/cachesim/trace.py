"""Traces for the cache replay: a synthetic video-CDN day generator, the CSV format, the access-log converter.

Rules kept here:
- A trace is a time-ordered stream of (time, key, size); the CSV form is the header `time,key,size` then one
  row per request. The same key always has the same size.
- The generator is deterministic: the same TraceSpec gives the same trace, byte for byte.
- Keys are content paths (`titles/<title>/<rendition>/seg<NNNNN>.m4s`), the box's own cache keys.
- Days: sessions of day d start within [d * DAY, (d + 1) * DAY); every day after the first replaces
  `churn` of the titles by new ones (new releases, which enter at high ranks), so the fill mode's day 2
  has content day 1 never asked for.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DAY = 86_400.0
RENDITIONS_KBPS = (400, 1200, 2500, 5000)
RENDITION_WEIGHTS = (0.10, 0.25, 0.35, 0.30)


@dataclass(frozen=True, slots=True)
class TraceSpec:
    requests: int = 2_000_000
    titles: int = 2000  # titles on offer each day
    alpha: float = 0.8  # Zipf exponent of title popularity
    days: int = 1
    churn: float = 0.1  # fraction of titles replaced by new ones at each new day
    seed: int = 1


@dataclass(frozen=True, slots=True)
class Title:
    number: int
    segment_seconds: int
    segments: int


def title(seed: int, number: int) -> Title:
    """A title's shape, from the seed and its number alone (so any day can name any title)."""
    rng = random.Random(seed * 1_000_003 + number)
    minutes = rng.uniform(20, 60) if rng.random() < 0.7 else rng.uniform(80, 150)  # episodes and films
    seconds = rng.choice((2, 4, 6))
    return Title(number, seconds, max(1, int(minutes * 60 / seconds)))


def segment_key(title: int, rendition: int, segment: int) -> str:
    return f"titles/t{title:05d}/r{rendition}/seg{segment:05d}.m4s"


def segment_size(t: Title, rendition: int, segment: int) -> int:
    """Bytes of one segment: the rendition's bitrate times its duration, ±20% by a hash of its place."""
    mix = ((t.number * 1_000_003 + rendition * 7919 + segment * 104_729) * 2_654_435_761) % 4_294_967_296
    jitter = 0.8 + 0.4 * mix / 4_294_967_296
    return max(1, int(RENDITIONS_KBPS[rendition] * 125 * t.segment_seconds * jitter))


def rankings(spec: TraceSpec) -> list[list[int]]:
    """Per day, the titles on offer, most popular first."""
    rng = random.Random(spec.seed)
    ranking = list(range(spec.titles))
    rng.shuffle(ranking)
    days = [ranking]
    next_number = spec.titles
    new = round(spec.churn * spec.titles)
    for _ in range(1, spec.days):
        ranking = list(ranking)
        for _ in range(new):  # retire titles, mostly from the tail
            ranking.pop(min(len(ranking) - 1, int(len(ranking) * (1 - rng.random() ** 2))))
        for _ in range(new):  # new releases enter high
            ranking.insert(int(len(ranking) * rng.random() ** 3), next_number)
            next_number += 1
        for _ in range(spec.titles // 10):  # yesterday's order drifts
            i = rng.randrange(len(ranking) - 1)
            ranking[i], ranking[i + 1] = ranking[i + 1], ranking[i]
        days.append(ranking)
    return days


class _Zipf:
    def __init__(self, n: int, alpha: float) -> None:
        weights = [1 / (rank + 1) ** alpha for rank in range(n)]
        total = sum(weights)
        acc, self.cdf = 0.0, []
        for w in weights:
            acc += w / total
            self.cdf.append(acc)

    def draw(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self.cdf, rng.random()), len(self.cdf) - 1)


def _session(rng: random.Random, t: Title) -> tuple[int, int, int]:
    """(rendition, first segment, segments watched): most start at the beginning, many quit early."""
    rendition = rng.choices(range(len(RENDITIONS_KBPS)), RENDITION_WEIGHTS)[0]
    first = 0 if rng.random() < 0.85 else int(rng.random() * 0.8 * t.segments)
    left = t.segments - first
    if rng.random() < 0.35:  # early quitter: a couple of minutes
        seconds = rng.expovariate(1 / 120)
    else:
        seconds = left * t.segment_seconds * min(1.0, rng.expovariate(1 / 0.5))
    return rendition, first, max(1, min(left, math.ceil(seconds / t.segment_seconds)))


def generate(spec: TraceSpec) -> Iterator[tuple[float, str, int]]:
    """The trace of `spec`, in time order: spec.requests requests spread evenly over spec.days days."""
    zipf = _Zipf(spec.titles, spec.alpha)
    shapes: dict[int, Title] = {}

    def shape(n: int) -> Title:
        if n not in shapes:
            shapes[n] = title(spec.seed, n)
        return shapes[n]

    rng = random.Random(spec.seed + 7)
    active: list[tuple[float, int, int, int, int, int]] = []  # (next time, seq, title, rendition, seg, last)
    seq = 0
    for day, ranking in enumerate(rankings(spec)):
        budget = spec.requests * (day + 1) // spec.days - spec.requests * day // spec.days
        probe = random.Random(spec.seed * 31 + day)
        mean = sum(_session(probe, shape(ranking[zipf.draw(probe)]))[2] for _ in range(2000)) / 2000
        rate = budget / mean / DAY
        start = day * DAY
        while budget > 0:
            start += rng.expovariate(rate)
            t = shape(ranking[zipf.draw(rng)])
            rendition, first, count = _session(rng, t)
            count = min(count, budget)
            budget -= count
            while active and active[0][0] <= start:  # emit what comes before this session starts
                yield from _step(active, shapes)
            heapq.heappush(active, (start, seq, t.number, rendition, first, first + count - 1))
            seq += 1
    while active:
        yield from _step(active, shapes)


def _step(active: list[tuple[float, int, int, int, int, int]], shapes: dict[int, Title]
          ) -> Iterator[tuple[float, str, int]]:
    now, seq, number, rendition, seg, last = active[0]
    t = shapes[number]
    yield now, segment_key(number, rendition, seg), segment_size(t, rendition, seg)
    if seg < last:
        heapq.heapreplace(active, (now + t.segment_seconds, seq, number, rendition, seg + 1, last))
    else:
        heapq.heappop(active)


def title_files(seed: int, number: int) -> Iterator[tuple[str, int]]:
    """Every file of a title (all renditions, all segments) as (key, size): what a catalog lists for it."""
    t = title(seed, number)
    for rendition in range(len(RENDITIONS_KBPS)):
        for segment in range(t.segments):
            yield segment_key(number, rendition, segment), segment_size(t, rendition, segment)


def title_number(key: str) -> int | None:
    """The title number in a generated key (titles/t00042/...), None for any other key."""
    parts = key.split("/")
    if len(parts) > 1 and parts[0] == "titles" and parts[1][:1] == "t" and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return None


# ---------------------------------------------------------------- files


def write_csv(path: str, trace: Iterable[tuple[float, str, int]]) -> int:
    """Write a trace as CSV; returns the number of requests written."""
    n = 0
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(("time", "key", "size"))
        for now, key, size in trace:
            out.writerow((f"{now:.3f}", key, size))
            n += 1
    return n


class TraceError(ValueError):
    """A trace file that cannot be read: names the file, the line and the problem."""


def read_csv(path: str) -> Iterator[tuple[float, str, int]]:
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != ["time", "key", "size"]:
            raise TraceError(f"{path}: line 1: the header must be time,key,size, got {header!r}")
        for line, row in enumerate(rows, start=2):
            try:
                now, key, size = float(row[0]), row[1], int(row[2])
            except (IndexError, ValueError) as e:
                raise TraceError(f"{path}: line {line}: {row!r}: {e}") from e
            if not key or size <= 0:
                raise TraceError(f"{path}: line {line}: needs a key and a positive size, got {row!r}")
            yield now, key, size


def from_access_log(lines: Iterable[str]) -> Iterator[tuple[float, str, int]]:
    """The box's JSON access log as a trace: whole-object answers (status 200) of content keys, whose
    `bytes` is the object's size. Range answers (206) and errors say nothing reliable about the size."""
    for text in lines:
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("status") != 200:
            continue
        key, size, ts = record.get("key"), record.get("bytes"), record.get("ts")
        if isinstance(key, str) and key and isinstance(size, int) and size > 0 and isinstance(ts, int | float):
            yield float(ts), key, size
