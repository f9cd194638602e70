"""Prometheus exposition of the box: the master's totals over all workers plus the store's state.

Names follow Prometheus conventions (base units, `_total` for counters, `_bytes`, `_seconds`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from oca import __version__
from oca.serve.stats import DURATION_BUCKETS, FleetStats


class _Snapshot:
    def __init__(self, stats: FleetStats, store_status: dict[str, Any], workers: int, draining: bool,
                 fetch: dict[str, Any] | None = None) -> None:
        self.stats, self.store, self.workers, self.draining = stats, store_status, workers, draining
        self.fetch = fetch or {}

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        info = GaugeMetricFamily("oca_build_info", "Version of the running box software.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        requests = CounterMetricFamily("oca_requests", "Requests answered, by status and cache result.",
                                       labels=["status", "cache"])
        for (status, cache), n in sorted(stats.requests.items()):
            requests.add_metric([str(status), cache or "none"], n)
        yield requests
        sent = CounterMetricFamily("oca_sent_bytes", "Body bytes sent to clients, by the tier they came from.",
                                   labels=["tier"])
        for tier, n in sorted(stats.bytes_by_tier.items()):
            sent.add_metric([tier], n)
        yield sent
        cumulative, buckets = 0, []
        for bound, n in zip((*DURATION_BUCKETS, float("inf")), stats.duration_buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        duration = HistogramMetricFamily("oca_request_duration_seconds",
                                         "Time from the request's last byte to the response's last byte.")
        duration.add_metric([], buckets, stats.duration_sum)
        yield duration
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

    def _fetch_metrics(self) -> Iterator[Metric]:
        fetch = self.fetch
        for name, help_text, field in (
            ("oca_fills", "Objects (or slices) filled from upstream and stored.", "fills"),
            ("oca_fill_failures", "Upstream fills that failed (nothing was stored).", "fill_failures"),
            ("oca_negative_hits", "Misses answered 404 from the remembered upstream 404.", "negative_hits"),
            ("oca_slices_dropped", "Sliced objects dropped because their upstream ETag changed.", "slices_dropped"),
        ):
            yield CounterMetricFamily(name, help_text, value=fetch.get(field, 0))
        revalidations = CounterMetricFamily(
            "oca_revalidations", "Soft-purged objects revalidated upstream: 304 kept them, 200 replaced them.",
            labels=["result"])
        revalidations.add_metric(["304"], fetch.get("revalidated_304", 0))
        revalidations.add_metric(["200"], fetch.get("revalidated_200", 0))
        yield revalidations
        by_source = CounterMetricFamily("oca_fill_bytes", "Bytes received from upstream, by source.",
                                        labels=["source"])
        for source, n in sorted(fetch.get("bytes_by_source", {}).items()):
            by_source.add_metric([source], n)
        yield by_source
        yield GaugeMetricFamily("oca_fills_in_flight", "Upstream fills running now.", value=fetch.get("in_flight", 0))
        yield GaugeMetricFamily("oca_stale_objects", "Soft-purged objects not yet revalidated.",
                                value=fetch.get("stale", 0))


def render_metrics(stats: FleetStats, store_status: dict[str, Any], workers: int, draining: bool,
                   fetch: dict[str, Any] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats, store_status, workers, draining, fetch))
    return generate_latest(registry)
