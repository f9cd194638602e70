"""Per-worker counters, shipped to the master as deltas; the master's sums feed /metrics and /status.

Counting in plain dicts inside each worker keeps the hit path free of locks and shared memory; the
master adds the deltas up, so totals are exact across workers (at most one flush interval late).

Rules kept here:
- The per-request counters are exact `dict`s, not Counter: CPython 3.11 specialises item access for exact
  dicts only, and `observe` runs once per request; plain hits from memory come in batches
  (`observe_hits`, oca.serve.server), counted exactly as `observe` would count each.
- A plain hit's per-key count is kept on its cache entry (`unreported`, oca.serve.messages.HitCounted) and
  added to `hits` by key at the report (`take`): one look-up per key and report instead of two per hit. The
  entries counted are held until then, at most MAX_FLUSH_HITS of them (an entry let go by the cache has
  no body: its memory is its metadata's).
- Player experience (CTA-5004 CMCD) is counted only for requests that carry CMCD (`observe_player`); a
  plain hit never reaches that code. Sessions (`sid`) are joined in the master, across workers: the
  sessions seen in the last SESSION_WINDOW seconds, and an estimated startup time per new session (from
  its first `su` request to its first request without `su`: the time the player spent filling its buffer
  urgently before playback began).
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

from oca.protocol.messages import PlayerReport, Report
from oca.serve.accesslog import Hit
from oca.serve.messages import HitCounted

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# CMCD-derived histograms, in base units (seconds, bits per second)
BUFFER_BUCKETS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
# bytes per second (Prometheus base units): 250 kbit/s, 500 kbit/s, 1, 2, 3, 5, 8, 12, 20, 40 Mbit/s
BITRATE_BUCKETS = tuple(bits / 8 for bits in (250e3, 500e3, 1e6, 2e6, 3e6, 5e6, 8e6, 12e6, 20e6, 40e6))
STARTUP_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)
OBJECT_TYPES = frozenset(("m", "a", "v", "av", "i", "c", "tt", "k", "o"))  # CMCD `ot`; others count as "other"
PEER_MISS = "peer-miss"  # the cache result of a peer's only-if-cached request for an object this box lacks
SESSION_WINDOW = 30.0  # seconds: a session with no CMCD request for this long no longer counts as concurrent
# bounds on the sessions remembered (per worker per flush; in the master): a flood of made-up sids costs no more
MAX_FLUSH_SESSIONS = 10_000
# keys whose hits a worker counts per flush: beyond it (a scan of the whole store within one flush interval)
# hits on further keys are not reported; the store's recency and promotion lose a little, the worker's memory
# stays bounded
MAX_FLUSH_HITS = 65_536
MAX_SESSIONS = 200_000
_HIT_200 = (200, "hit")  # a plain hit from memory: its requests slot...
_MEMORY_HIT = ("memory", "hit")  # ...and its bytes slot


class WorkerStats:
    __slots__ = ("_counted", "bytes_sent", "damaged", "duration_buckets", "duration_sum", "hints_refused", "hits",
                 "io_errors", "misses", "player", "requests")

    requests: dict[tuple[int, str], int]  # (status, cache result) -> requests
    bytes_sent: dict[tuple[str, str], int]  # (tier, cache result) -> body bytes
    duration_buckets: list[int]  # one per DURATION_BUCKETS bound, then +Inf; they add up to the count
    duration_sum: float
    hits: dict[str, int]  # key -> hits, for the store's LRU and promotion (plain hits added at take())
    io_errors: list[tuple[str, str]]  # (tier, error)
    damaged: list[tuple[str, str]]  # (key, error)
    misses: dict[str, int]  # miss reason (oca.fetch.history.REASONS, or "unknown") -> misses
    hints_refused: int  # CMCD next-object hints the request's token did not cover (oca.serve.hints)
    player: PlayerStats | None  # CMCD-derived; None until a request carried CMCD

    def __init__(self) -> None:
        self.player = None
        self._counted: list[HitCounted] = []  # entries whose plain hits are not yet in `hits` (observe_hits)
        self._start_over()

    def _start_over(self) -> None:
        self.requests = {}
        self.bytes_sent = {}
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.hits = {}
        self.io_errors = []
        self.damaged = []
        self.misses = {}
        self.hints_refused = 0

    def observe(self, status: int, cache: str, tier: str, body_bytes: int, seconds: float, key: str) -> None:
        # plain dicts and dict.get: this runs once per request
        requests = self.requests
        slot = (status, cache)
        requests[slot] = requests.get(slot, 0) + 1
        if body_bytes:
            sent = self.bytes_sent
            where = (tier, cache)
            sent[where] = sent.get(where, 0) + body_bytes
        self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        if cache == "hit":
            hits = self.hits
            count = hits.get(key)
            if count is not None:
                hits[key] = count + 1
            elif len(hits) < MAX_FLUSH_HITS:
                hits[key] = 1

    def observe_hits(self, hits: list[Hit]) -> None:
        """Plain hits from memory (status 200, cache hit, tier memory): `observe` for each, in one call."""
        count = len(hits)
        requests, sent, buckets = self.requests, self.bytes_sent, self.duration_buckets
        requests[_HIT_200] = requests.get(_HIT_200, 0) + count
        total = 0
        seconds_sum = 0.0
        counted = self._counted
        for entry, body_bytes, seconds, _, _, _ in hits:
            total += body_bytes
            seconds_sum += seconds
            buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            unreported = entry.unreported
            if unreported:
                entry.unreported = unreported + 1
            elif len(counted) < MAX_FLUSH_HITS:
                entry.unreported = 1
                counted.append(entry)
        if total:
            sent[_MEMORY_HIT] = sent.get(_MEMORY_HIT, 0) + total
        self.duration_sum += seconds_sum

    def observe_miss(self, reason: object) -> None:
        """One answer whose cache result is "miss", with the access log's reason for it."""
        label = reason if isinstance(reason, str) and reason else "unknown"
        self.misses[label] = self.misses.get(label, 0) + 1

    def observe_player(self, cmcd: object, now: float) -> None:
        """One request that carried CMCD (oca.http.cmcd.parse_cmcd's dict); never called for plain requests."""
        if not isinstance(cmcd, dict):
            return
        if self.player is None:
            self.player = PlayerStats()
        self.player.observe(cmcd, now)

    def take(self, connections: int) -> Report:
        """The deltas since the last take() as the worker's report, plus the open connections (a gauge);
        the counters start again from zero."""
        keyed = self.hits
        for entry in self._counted:
            key = entry.key
            count = keyed.get(key)
            if count is not None:
                keyed[key] = count + entry.unreported
            elif len(keyed) < MAX_FLUSH_HITS:
                keyed[key] = entry.unreported
            entry.unreported = 0
        self._counted = []
        report = Report(
            requests=[(s, c, n) for (s, c), n in self.requests.items()],
            bytes_sent=[(t or "none", c, n) for (t, c), n in self.bytes_sent.items()],
            duration_buckets=self.duration_buckets,
            duration_sum=self.duration_sum,
            hits=self.hits,
            io_errors=self.io_errors,
            damaged=self.damaged,
            connections=connections,
            player=self.player.take() if self.player is not None and self.player.requests else None,
            misses=self.misses,
            hints_refused=self.hints_refused,
        )
        self._start_over()
        return report


def _number(value: object) -> float | None:
    """A CMCD numeric value (an int or decimal, possibly with parameters); None when absent or not a number."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def _flag(value: object) -> bool:
    """CMCD v1 sends `su`/`bs` bare (True) when set; v2 always sends them, as ?1 or ?0."""
    if isinstance(value, dict):
        value = value.get("value")
    return value is True


class PlayerStats:
    """One worker's CMCD-derived counts since the last take(); pure (the time is passed in)."""

    def __init__(self) -> None:
        self._start_over()

    def _start_over(self) -> None:
        self.requests: dict[str, int] = {}  # ot -> requests carrying CMCD
        self.startup: dict[str, int] = {}  # ot -> requests with su
        self.rebuffers: dict[str, int] = {}  # ot -> requests with bs
        self.rebuffer_seconds = 0.0  # sum of bsd (CMCD v2)
        self.media_seconds: dict[str, float] = {}  # ot -> sum of d, the playback duration of objects requested
        self.buffer = [0] * (len(BUFFER_BUCKETS) + 1)
        self.buffer_sum = 0.0
        self.bitrate = [0] * (len(BITRATE_BUCKETS) + 1)
        self.bitrate_sum = 0.0
        self.sessions: dict[str, list[float | None]] = {}  # sid -> [first su time, first non-su time, last seen]

    def observe(self, cmcd: dict[str, object], now: float) -> None:
        ot = cmcd.get("ot")
        kind = ot if isinstance(ot, str) and ot in OBJECT_TYPES else "other"
        self.requests[kind] = self.requests.get(kind, 0) + 1
        startup = _flag(cmcd.get("su"))
        if startup:
            self.startup[kind] = self.startup.get(kind, 0) + 1
        if _flag(cmcd.get("bs")):
            self.rebuffers[kind] = self.rebuffers.get(kind, 0) + 1
        if (starved := _number(cmcd.get("bsd"))) is not None:
            self.rebuffer_seconds += starved / 1000
        if (duration := _number(cmcd.get("d"))) is not None:
            self.media_seconds[kind] = self.media_seconds.get(kind, 0.0) + duration / 1000
        if (buffer := _number(cmcd.get("bl"))) is not None:
            self.buffer[bisect.bisect_left(BUFFER_BUCKETS, buffer / 1000)] += 1
            self.buffer_sum += buffer / 1000
        if (bitrate := _number(cmcd.get("br"))) is not None:
            self.bitrate[bisect.bisect_left(BITRATE_BUCKETS, bitrate * 125)] += 1  # kbit/s -> bytes/s
            self.bitrate_sum += bitrate * 125
        sid = cmcd.get("sid")
        if isinstance(sid, str) and sid:
            sid = sid[:64]  # CTA-5004: at most 64 characters
            seen = self.sessions.get(sid)
            if seen is None:
                if len(self.sessions) >= MAX_FLUSH_SESSIONS:
                    return
                seen = self.sessions[sid] = [None, None, now]
            slot = 0 if startup else 1
            if seen[slot] is None:
                seen[slot] = now
            seen[2] = now

    def take(self) -> PlayerReport:
        report = PlayerReport(self.requests, self.startup, self.rebuffers, self.rebuffer_seconds, self.media_seconds,
                              self.buffer, self.buffer_sum, self.bitrate, self.bitrate_sum,
                              {sid: (su, plain, last or 0.0) for sid, (su, plain, last) in self.sessions.items()})
        self._start_over()
        return report


class PlayerTotals:
    """The master's CMCD-derived totals over every worker, and the sessions joined across workers."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.startup: Counter[str] = Counter()
        self.rebuffers: Counter[str] = Counter()
        self.rebuffer_seconds = 0.0
        self.media_seconds: dict[str, float] = {}
        self.buffer = [0] * (len(BUFFER_BUCKETS) + 1)
        self.buffer_sum = 0.0
        self.bitrate = [0] * (len(BITRATE_BUCKETS) + 1)
        self.bitrate_sum = 0.0
        self.startup_time = [0] * (len(STARTUP_BUCKETS) + 1)
        self.startup_time_sum = 0.0
        self.sessions_started = 0
        self._last_seen: dict[str, float] = {}  # sid -> last request time, within SESSION_WINDOW
        self._starting: dict[str, float] = {}  # sid -> its first su request, until its first request without su

    def add(self, delta: PlayerReport) -> None:
        self.requests.update(delta.requests)
        self.startup.update(delta.startup)
        self.rebuffers.update(delta.rebuffers)
        for kind, seconds in delta.media_seconds.items():
            self.media_seconds[kind] = self.media_seconds.get(kind, 0.0) + seconds
        self.rebuffer_seconds += delta.rebuffer_seconds
        for i, n in enumerate(delta.buffer[: len(self.buffer)]):
            self.buffer[i] += n
        self.buffer_sum += delta.buffer_sum
        for i, n in enumerate(delta.bitrate[: len(self.bitrate)]):
            self.bitrate[i] += n
        self.bitrate_sum += delta.bitrate_sum
        for sid, (first_su, first_plain, last) in delta.sessions.items():
            self._session(sid, first_su, first_plain, last)

    def _session(self, sid: str, first_su: float | None, first_plain: float | None, last: float) -> None:
        known = sid in self._last_seen
        if not known:
            if len(self._last_seen) >= MAX_SESSIONS:
                self.prune(last)
                if len(self._last_seen) >= MAX_SESSIONS:
                    return
            self.sessions_started += 1
        if first_su is not None and (first_plain is None or first_su <= first_plain):
            if not known:  # a session that starts with su requests
                self._starting[sid] = first_su
            elif sid in self._starting:  # another worker saw an earlier su request of it
                self._starting[sid] = min(self._starting[sid], first_su)
        began = self._starting.get(sid)
        if began is not None and first_plain is not None and first_plain >= began:
            seconds = first_plain - began
            self.startup_time[bisect.bisect_left(STARTUP_BUCKETS, seconds)] += 1
            self.startup_time_sum += seconds
            del self._starting[sid]
        self._last_seen[sid] = max(last, self._last_seen.get(sid, last))

    def prune(self, now: float) -> None:
        """Forget sessions silent for SESSION_WINDOW (a session that never left startup goes with them)."""
        horizon = now - SESSION_WINDOW
        gone = [sid for sid, last in self._last_seen.items() if last < horizon]
        for sid in gone:
            del self._last_seen[sid]
            self._starting.pop(sid, None)

    def concurrent(self, now: float) -> int:
        """Sessions that sent a CMCD request in the last SESSION_WINDOW seconds."""
        self.prune(now)
        return len(self._last_seen)


class FleetStats:
    """The master's running totals over every worker, past and present."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[int, str]] = Counter()
        self.bytes_sent: Counter[tuple[str, str]] = Counter()  # (tier, cache result) -> body bytes
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.connections: dict[int, int] = {}  # worker pid -> open connections
        self.player = PlayerTotals()
        self.misses: Counter[str] = Counter()  # miss reason -> misses (oca.fetch.history)
        self.hints_refused = 0

    def add(self, pid: int, delta: Report) -> None:
        for status, cache, n in delta.requests:
            self.requests[(status, cache)] += n
        for tier, cache, n in delta.bytes_sent:
            self.bytes_sent[(tier, cache)] += n
        for i, n in enumerate(delta.duration_buckets[: len(self.duration_buckets)]):
            self.duration_buckets[i] += n
        self.duration_sum += delta.duration_sum
        self.connections[pid] = delta.connections
        self.misses.update(delta.misses)
        self.hints_refused += delta.hints_refused
        if delta.player is not None:
            self.player.add(delta.player)

    def worker_gone(self, pid: int) -> None:
        self.connections.pop(pid, None)

    @property
    def bytes_by_tier(self) -> Counter[str]:
        by_tier: Counter[str] = Counter()
        for (tier, _), n in self.bytes_sent.items():
            by_tier[tier] += n
        return by_tier

    def summary(self) -> dict[str, Any]:
        total = sum(self.requests.values())
        by_tier = self.bytes_by_tier
        hits = sum(n for (_, cache), n in self.requests.items() if cache == "hit")
        lookups = sum(n for (_, cache), n in self.requests.items() if cache in ("hit", "miss"))
        return {
            "requests": total,
            "bytes_out": sum(by_tier.values()),
            "bytes_by_tier": dict(by_tier),
            "hit_ratio": round(hits / lookups, 4) if lookups else None,
            # body bytes sent on hits and on misses (hit ratio by bytes: hit / (hit + miss), e.g. `oca top`)
            "hit_bytes": sum(n for (_, cache), n in self.bytes_sent.items() if cache == "hit"),
            "miss_bytes": sum(n for (_, cache), n in self.bytes_sent.items() if cache == "miss"),
            "connections": sum(self.connections.values()),
        }


def release_delta(delta: Report) -> tuple[int, int]:
    """A worker report's (responses, errors) for the running release's counters (oca/firmware/counters.py):
    errors are responses with status >= 500, except a peer's only-if-cached ask for what this box lacks."""
    requests = errors = 0
    for status, cache, n in delta.requests:
        requests += n
        if status >= 500 and cache != PEER_MISS:  # a peer asked for what this box lacks: no fault
            errors += n
    return requests, errors
