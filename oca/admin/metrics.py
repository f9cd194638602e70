"""Prometheus exposition of the box: the master's totals over all workers plus the store's state.

Names follow Prometheus conventions (base units, `_total` for counters, `_bytes`, `_seconds`).
- Peer misses (a peer's `only-if-cached` probe answered 504) are `oca_peer_misses_total`, never in
  `oca_requests_total`, so 5xx panels and alerts see only this box's faults.
- Cache hit ratio inputs: `oca_requests_total{status,cache}` and `oca_sent_bytes_total{tier,cache}` (by requests
  and by bytes: hit / (hit + miss)).
- `oca_player_*`: what players report in CMCD, from the requests that carry it (oca.serve.stats says how).
- `oca_prefetch_*`: fill progress, read from the master's prefetch jobs at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from oca import __version__
from oca.fetch.history import REASONS
from oca.serve.stats import (
    BITRATE_BUCKETS,
    BUFFER_BUCKETS,
    DURATION_BUCKETS,
    PEER_MISS,
    SESSION_WINDOW,
    STARTUP_BUCKETS,
    FleetStats,
    PlayerTotals,
)

if TYPE_CHECKING:
    from oca.fetch.prefetch import PrefetchJob


def _histogram(name: str, help_text: str, bounds: Sequence[float], counts: Sequence[int],
               total: float) -> HistogramMetricFamily:
    """A histogram family from per-bucket (not cumulative) counts: one per bound, then +Inf."""
    cumulative, buckets = 0, []
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    family = HistogramMetricFamily(name, help_text)
    family.add_metric([], buckets, total)
    return family


class _Snapshot:
    def __init__(self, stats: FleetStats, store_status: dict[str, Any], workers: int, draining: bool,
                 fetch: dict[str, Any] | None, prefetch: Iterable[PrefetchJob], now: float,
                 releases: Sequence[tuple[int, str]]) -> None:
        self.stats, self.store, self.workers, self.draining = stats, store_status, workers, draining
        self.releases = releases
        self.fetch = fetch or {}
        self.prefetch, self.now = prefetch, now

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        info = GaugeMetricFamily("oca_build_info", "The release the data port serves: one series per worker "
                                 "generation with a serving worker (two while a release switches).",
                                 labels=["version", "generation"])
        for generation, version in self.releases:
            info.add_metric([version, str(generation)], 1)
        yield info
        master = GaugeMetricFamily("oca_master_build_info", "The master's own code (it stays on the release the "
                                   "box started with until restarted).", labels=["version"])
        master.add_metric([__version__], 1)
        yield master
        requests = CounterMetricFamily("oca_requests", "Requests answered, by status and cache result (a peer's "
                                       "only-if-cached probe this box could not answer: oca_peer_misses_total).",
                                       labels=["status", "cache"])
        peer_misses = 0
        for (status, cache), n in sorted(stats.requests.items()):
            if cache == PEER_MISS:  # a peer asked for what this box lacks (504): no fault, not in 5xx panels
                peer_misses += n
                continue
            requests.add_metric([str(status), cache or "none"], n)
        yield requests
        yield CounterMetricFamily("oca_peer_misses", "Peer boxes' only-if-cached requests for objects this box "
                                  "does not hold (answered 504, as RFC 9111 says; the peer moves on).",
                                  value=peer_misses)
        sent = CounterMetricFamily("oca_sent_bytes", "Body bytes sent to clients, by the tier they came from "
                                   "(upstream: a miss streamed while filling) and the cache result.",
                                   labels=["tier", "cache"])
        for (tier, cache), n in sorted(stats.bytes_sent.items()):
            sent.add_metric([tier, cache or "none"], n)
        yield sent
        yield _histogram("oca_request_duration_seconds",
                         "Time from the request's last byte to the response's last byte.",
                         DURATION_BUCKETS, stats.duration_buckets, stats.duration_sum)
        yield GaugeMetricFamily("oca_connections", "Open client connections on the data port.",
                                value=sum(stats.connections.values()))
        yield GaugeMetricFamily("oca_workers", "Worker processes serving the data port.", value=self.workers)
        yield GaugeMetricFamily("oca_draining", "1 while the box is drained by an operator.", value=int(self.draining))
        tiers = self.store.get("tiers", [])
        for name, help_text, field in (
            ("oca_tier_capacity_bytes", "Configured capacity of a storage tier.", "capacity"),
            ("oca_tier_used_bytes", "Bytes of objects stored on a tier.", "used"),
            ("oca_tier_objects", "Objects stored on a tier.", "objects"),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["tier"])
            for tier in tiers:
                family.add_metric([tier["name"]], tier[field])
            yield family
        up = GaugeMetricFamily("oca_tier_up", "1 when a tier serves (up or full), 0 when it failed.", labels=["tier"])
        state = GaugeMetricFamily("oca_tier_state", "The state of each tier (1 for the current one).",
                                  labels=["tier", "state"])
        for tier in tiers:
            up.add_metric([tier["name"]], 0 if tier["state"] == "failed" else 1)
            for candidate in ("up", "full", "failed"):
                state.add_metric([tier["name"], candidate], int(tier["state"] == candidate))
        yield up
        yield state
        yield CounterMetricFamily("oca_promotions", "Objects moved up one tier after earning it by hits.",
                                  value=self.store.get("promotions", 0))
        yield CounterMetricFamily("oca_demotions", "Objects moved down one tier to make room.",
                                  value=self.store.get("demotions", 0))
        evictions = CounterMetricFamily("oca_evictions", "Objects deleted from the last tier to make room.",
                                        labels=["tier"])
        for tier, n in sorted(self.store.get("evictions", {}).items()):
            evictions.add_metric([tier], n)
        yield evictions
        yield from self._fetch_metrics()
        yield from self._prefetch_metrics()
        yield from self._miss_metrics()
        yield from _player_metrics(stats.player, self.now)

    def _fetch_metrics(self) -> Iterator[Metric]:
        fetch = self.fetch
        for name, help_text, field in (
            ("oca_fills", "Objects (or slices) filled from upstream and stored.", "fills"),
            ("oca_fill_failures", "Upstream fills that failed (nothing was stored).", "fill_failures"),
            ("oca_negative_hits", "Misses answered 404 from the remembered upstream 404.", "negative_hits"),
            ("oca_slices_dropped", "Sliced objects dropped because their upstream ETag changed.", "slices_dropped"),
            ("oca_fills_spliced", "Fills whose upstream body went to its memory feed by os.splice, not through "
                                  "Python.", "fills_spliced"),
        ):
            yield CounterMetricFamily(name, help_text, value=fetch.get(field, 0))
        revalidations = CounterMetricFamily(
            "oca_revalidations", "Soft-purged objects revalidated upstream: 304 kept them, 200 replaced them.",
            labels=["result"])
        revalidations.add_metric(["304"], fetch.get("revalidated_304", 0))
        revalidations.add_metric(["200"], fetch.get("revalidated_200", 0))
        yield revalidations
        tier_bytes = CounterMetricFamily(
            "oca_fill_tier_bytes", "Bytes the master wrote into fills' tier files: with O_DIRECT from a memory "
            "feed (no page-cache copy), or buffered.", labels=["write"])
        tier_bytes.add_metric(["direct"], fetch.get("tier_bytes_direct", 0))
        tier_bytes.add_metric(["buffered"], fetch.get("tier_bytes_buffered", 0))
        yield tier_bytes
        by_source = CounterMetricFamily("oca_fill_bytes", "Bytes received from upstream, by source.",
                                        labels=["source"])
        for source, n in sorted(fetch.get("bytes_by_source", {}).items()):
            by_source.add_metric([source], n)
        yield by_source
        yield GaugeMetricFamily("oca_fills_in_flight", "Upstream fills running now.", value=fetch.get("in_flight", 0))
        yield GaugeMetricFamily("oca_stale_objects", "Soft-purged objects not yet revalidated.",
                                value=fetch.get("stale", 0))

    def _miss_metrics(self) -> Iterator[Metric]:
        """Why misses were misses (oca.fetch.history), and player-aware prefetch (oca.fetch.hints)."""
        misses = CounterMetricFamily("oca_misses", "Client requests answered as misses, by reason: first, popular "
                                     "(first, its title in demand here but not pre-positioned), evicted, "
                                     "invalidated, revalidated, slice, absent, no_source.", labels=["reason"])
        counted = self.stats.misses
        for reason in (*REASONS, *sorted(set(counted) - set(REASONS))):
            misses.add_metric([reason], counted.get(reason, 0))
        yield misses
        hints = self.fetch.get("player_prefetch", {})
        yield CounterMetricFamily("oca_player_prefetch_started", "Fills started from a player's CMCD next-object "
                                  "hint (nor/nrr).", value=hints.get("started", 0))
        yield CounterMetricFamily("oca_player_prefetch_used", "Hinted objects a client then got as a hit.",
                                  value=hints.get("used", 0))
        yield CounterMetricFamily("oca_player_prefetch_late", "Hinted objects a client asked for while their fill "
                                  "was still running (it joined the fill).", value=hints.get("late", 0))
        yield CounterMetricFamily("oca_player_prefetch_late_most", "Of the late ones, those that joined once at "
                                  "least half of the bytes had arrived.", value=hints.get("late_most", 0))
        yield CounterMetricFamily("oca_player_prefetch_guessed", "Of the started ones, the box's lookaheads: the "
                                  "object after a hinted one in a stream read in order.",
                                  value=hints.get("guessed", 0))
        dropped = CounterMetricFamily("oca_player_prefetch_dropped", "Player hints not fetched or not used, by "
                                      "reason: box, session (bounds), token (outside the request's token), "
                                      "failed, unused.", labels=["reason"])
        for reason, n in sorted({**hints.get("dropped", {}), "token": self.stats.hints_refused}.items()):
            dropped.add_metric([reason], n)
        yield dropped

    def _prefetch_metrics(self) -> Iterator[Metric]:
        """Fill progress: the prefetch jobs the master holds (the nightly fill's among them)."""
        jobs = {state: 0 for state in ("queued", "running", "done", "cancelled")}
        results = {result: 0 for result in ("stored", "present", "absent", "failed")}
        pending = 0
        by_source: dict[str, int] = {}
        for job in self.prefetch:
            jobs[job.state] = jobs.get(job.state, 0) + 1
            for result in job.results.values():  # stored, present, absent or "fail: <reason>"
                results[result if result in results else "failed"] += 1
            if job.state in ("queued", "running"):
                pending += len(job.items) - len(job.results)
            for source, n in job.bytes_by_source.items():
                by_source[source] = by_source.get(source, 0) + n
        family = GaugeMetricFamily("oca_prefetch_jobs", "Prefetch jobs held by the box, by state.", labels=["state"])
        for state, n in jobs.items():
            family.add_metric([state], n)
        yield family
        items = CounterMetricFamily("oca_prefetch_items", "Prefetch items finished, by result.", labels=["result"])
        for result, n in results.items():
            items.add_metric([result], n)
        yield items
        yield GaugeMetricFamily("oca_prefetch_items_pending", "Items of queued and running prefetch jobs not "
                                "finished yet.", value=pending)
        sources = CounterMetricFamily("oca_prefetch_bytes", "Bytes prefetched, by source.", labels=["source"])
        for source, n in sorted(by_source.items()):
            sources.add_metric([source], n)
        yield sources


_OBJECT_TYPE = "CMCD object type (ot): m manifest, a audio, v video, av muxed, i init, c caption, tt timed " \
               "text, k key, o other, other absent or unknown"


def _player_metrics(player: PlayerTotals, now: float) -> Iterator[Metric]:
    """What players report in CMCD (only requests that carry it): startup, rebuffering, buffer, bitrate."""
    for name, help_text, counts in (
        ("oca_player_requests", f"Requests that carried CMCD, by {_OBJECT_TYPE}.", player.requests),
        ("oca_player_startup_requests", "CMCD requests flagged su (needed urgently: startup, seek, recovery).",
         player.startup),
        ("oca_player_rebuffers", "CMCD requests flagged bs (the buffer ran dry since the previous request).",
         player.rebuffers),
        ("oca_player_media_seconds", "Playback duration (CMCD d) of the objects requested.", player.media_seconds),
    ):
        family = CounterMetricFamily(name, help_text, labels=["ot"])
        for kind, n in sorted(counts.items()):
            family.add_metric([kind], n)
        yield family
    yield CounterMetricFamily("oca_player_rebuffer_seconds", "Buffer starvation time players reported (CMCD v2 "
                              "bsd).", value=player.rebuffer_seconds)
    yield _histogram("oca_player_buffer_length_seconds", "Buffer length players reported (CMCD bl).",
                     BUFFER_BUCKETS, player.buffer, player.buffer_sum)
    yield _histogram("oca_player_bitrate_bytes_per_second", "Encoded bitrate of the objects players requested "
                     "(CMCD br, in bytes per second: 8 bits a byte).", BITRATE_BUCKETS, player.bitrate,
                     player.bitrate_sum)
    yield _histogram("oca_player_startup_seconds", "Estimated startup time of new sessions (CMCD sid): from the "
                     "first su request to the first request without su.", STARTUP_BUCKETS, player.startup_time,
                     player.startup_time_sum)
    yield GaugeMetricFamily("oca_player_sessions", f"Sessions (CMCD sid) that sent a request in the last "
                            f"{SESSION_WINDOW:g} s.",
                            value=player.concurrent(now))
    yield CounterMetricFamily("oca_player_sessions_started", "Sessions (CMCD sid) seen for the first time.",
                              value=player.sessions_started)


def render_metrics(stats: FleetStats, store_status: dict[str, Any], workers: int, draining: bool,
                   fetch: dict[str, Any] | None = None, prefetch: Iterable[PrefetchJob] = (),
                   now: float | None = None, releases: Sequence[tuple[int, str]] = ()) -> bytes:
    """`now` (epoch seconds, default the wall clock) decides which CMCD sessions still count as concurrent;
    `releases`: (generation, version) of each serving worker generation (WorkersView.serving_releases)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)  # process_*: the master's (it serves the admin port), not a worker's
    registry.register(_Snapshot(stats, store_status, workers, draining, fetch, prefetch,
                                time.time() if now is None else now, releases))
    return generate_latest(registry)
