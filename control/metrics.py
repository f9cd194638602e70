"""The control plane's Prometheus metrics (`GET /metrics`): steering, sessions, box health and versions,
invalidations, the roll-out under way, HTTP.

Rules kept here:
- One registry per app (`ControlMetrics`), never prometheus_client's global one: two planes in one process
  (the tests) do not mix their counts.
- Counters are moved by the request handlers (`decision`, `session_active`, the middleware) and by the
  invalidator (`invalidation_applied`); everything that is state (box health, active sessions, how far
  each box is behind the invalidation log) is read from the plane when Prometheus scrapes, not kept twice.
- Labels stay bounded: sites and boxes come from the fleet config, routes are the route templates
  (`/v1/fill-plans/{box}`), never the raw path; a path no route matched is counted as "unmatched".
- `/metrics` takes the operator token like every operator route (Prometheus sends it with
  `authorization: {credentials_file: ...}`): the metrics name every box, its health and its load.
- Active sessions: sessions that fetched their manifest or reloaded their steering manifest within 2 x TTL
  (players reload every TTL, so a live session is never older than one TTL plus one missed reload). A
  player that does not do content steering counts for 2 x TTL after its manifest only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from control.plane import ControlPlane
from control.steering import Decision

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROPAGATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ControlMetrics:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.registry = CollectorRegistry(auto_describe=False)
        self.decisions = Counter(
            "oca_control_steering_decisions", "Steering decisions for new sessions, by how the client was located "
            "(prefix, coverage, default, none) and the answer (200, or 451 when the title is not licensed there).",
            ["matched_by", "status"], registry=self.registry)
        self.sessions_started = Counter(
            "oca_control_sessions_started", "Sessions started (a master playlist or MPD served), by the client's "
            "site (unlocated when steering found none) and protocol.", ["site", "protocol"], registry=self.registry)
        self.reloads = Counter(
            "oca_control_steering_reloads", "Steering manifest reloads, by whether the pathway priority changed.",
            ["changed"], registry=self.registry)
        self.propagation = Histogram(
            "oca_control_invalidation_propagation_seconds", "Seconds from an invalidation's append to a box "
            "having applied it (one observation per box; invalidations submitted to this replica).",
            buckets=PROPAGATION_BUCKETS, registry=self.registry)
        self.http = Counter(
            "oca_control_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=self.registry)
        self.registry.register(_State(self))
        ProcessCollector(registry=self.registry)  # process_*: this replica's CPU, memory, open fds, start time
        self._active: OrderedDict[str, float] = OrderedDict()  # session id -> last manifest/reload, oldest first

    # -- moved by the handlers -------------------------------------------------------------------------

    def decision(self, decision: Decision, protocol: str) -> None:
        """A new session's steering decision (master playlist or MPD)."""
        self.decisions.labels(decision.matched_by, str(decision.status)).inc()
        if decision.allowed:
            self.sessions_started.labels(decision.client_site or "unlocated", protocol).inc()

    def session_active(self, session_id: str, now: float, *, reload: bool = False, changed: bool = False) -> None:
        """The session fetched its manifest (reload=False) or its steering manifest."""
        if reload:
            self.reloads.labels("yes" if changed else "no").inc()
        active = self._active
        active[session_id] = now
        active.move_to_end(session_id)
        while len(active) > self.plane.config.steering.max_sessions:
            active.popitem(last=False)

    def invalidation_applied(self, box_id: str, seconds: float) -> None:
        self.propagation.observe(max(0.0, seconds))

    def active_sessions(self, now: float) -> int:
        horizon = now - 2 * self.plane.config.steering.ttl
        active = self._active
        while active:
            session_id, seen = next(iter(active.items()))
            if seen >= horizon:
                break
            del active[session_id]
        return len(active)

    # -- HTTP ------------------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: counts the status the client got (errors included, as the inner middleware answers them)."""
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            self.http.labels(route, request.method, str(status)).inc()

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE})


class _State:
    """What is read from the plane at scrape time."""

    def __init__(self, metrics: ControlMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        plane = self.metrics.plane
        health = plane.health()
        invalidator = plane.invalidator
        up = GaugeMetricFamily("oca_control_box_up", "1 when the health poller judges the box healthy.",
                               labels=["box", "site"])
        draining = GaugeMetricFamily("oca_control_box_draining", "1 while the box is drained (by an operator or "
                                     "itself).", labels=["box", "site"])
        load = GaugeMetricFamily("oca_control_box_load", "Egress over egress capacity, from the health polls.",
                                 labels=["box", "site"])
        behind = GaugeMetricFamily("oca_control_box_invalidations_behind", "Invalidations appended to the log "
                                   "that the box has not applied yet.", labels=["box", "site"])
        version = GaugeMetricFamily("oca_control_box_version", "1 for the release each box last reported (a "
                                    "roll-out's progress, box by box).", labels=["box", "site", "version"])
        slow = GaugeMetricFamily("oca_control_box_slow", "1 while players find the box slow (their steering "
                                 "reloads' throughput, control.signals): ranked last for new sessions.",
                                 labels=["box", "site"])
        failed = CounterMetricFamily("oca_control_box_failed_polls", "Health polls of the box judged bad since "
                                     "start (no answer in time, a bad answer, every tier failed), whether or not "
                                     "they marked it down: one miss in health.down_after shows only here.",
                                     labels=["box", "site"])
        slow_now = plane.signals.slow  # as last judged: a scrape never judges (nor moves a session)
        for box in plane.config.fleet.boxes.values():
            labels = [box.id, box.site]
            slow.add_metric(labels, int(box.id in slow_now))
            h = health.get(box.id)
            if h is not None and h.version:
                version.add_metric([*labels, h.version], 1)
            up.add_metric(labels, int(bool(h and h.healthy)))
            draining.add_metric(labels, int(bool(h and h.draining)))
            load.add_metric(labels, h.load if h else 0.0)
            behind.add_metric(labels, max(0, invalidator.last_seq - invalidator.applied.get(box.id, 0)))
            failed.add_metric(labels, plane.poller.poll_counts(box.id)[1])
        yield from (up, draining, load, behind, version, slow, failed)
        rollout = plane.rollouts.running()
        steps = GaugeMetricFamily("oca_control_rollout_steps", "Steps of the firmware roll-out under way: done and "
                                  "total (absent when none runs).", labels=["rollout", "version", "of"])
        if rollout is not None:
            labels = [rollout.id, rollout.plan.version]
            steps.add_metric([*labels, "done"], len(rollout.progress.completed))
            steps.add_metric([*labels, "total"], len(rollout.plan.steps()))
        yield steps
        yield GaugeMetricFamily("oca_control_state_store_up", "1 while this replica's state store answers (the "
                                "last refresh worked); 0: serving from memory, writes answer 503.",
                                value=int(plane.follower.error is None))
        yield GaugeMetricFamily("oca_control_rollout_leader", "1 while this replica holds the roll-out lease.",
                                value=int(plane.rollouts.leader))
        yield GaugeMetricFamily("oca_control_invalidation_last_seq", "The last sequence number of the "
                                "invalidation log.", value=invalidator.last_seq)
        yield GaugeMetricFamily("oca_control_active_sessions", "Sessions that fetched their manifest or reloaded "
                                "their steering manifest within 2 x TTL.",
                                value=self.metrics.active_sessions(plane.clock()))
        poller = plane.poller
        yield GaugeMetricFamily("oca_control_health_rounds", "Health poll rounds done since start (every box "
                                "polled once per round).", value=poller.rounds)
        yield GaugeMetricFamily("oca_control_health_round_seconds", "How long the latest health round took, "
                                "from its start to its last poll's end (above health.interval: polls run late).",
                                value=poller.last_round if poller.last_round is not None else float("nan"))
        yield GaugeMetricFamily("oca_control_health_unpolled_boxes", "Boxes not polled once since start.",
                                value=poller.unpolled)
        yield GaugeMetricFamily("oca_control_health_skipped_polls", "Polls not started because the box's "
                                "previous poll was still running.", value=poller.skipped)
        yield GaugeMetricFamily("oca_control_inventory_pending", "Boxes whose inventory refresh is queued or "
                                "running (a poll saw their inventory sequence move).", value=plane.inventory.pending)
        yield GaugeMetricFamily("oca_control_session_memory", "Sessions this replica remembers (an LRU bounded "
                                "by steering.max_sessions).", value=len(plane.sessions))


METRICS = web.AppKey("metrics", ControlMetrics)
