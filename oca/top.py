"""`oca top`'s pure part: two samples of a box (its admin API's /status and /metrics) or of the fleet (the
control plane's /v1/fleet), taken `seconds` apart, become the rows of one frame. No network, no clock, no
printing: the CLI takes the samples, renders the frame and redraws it.

Rates are counter deltas over the time between the samples (a counter that went down, as after a restart,
counts from zero). The hit ratio is by bytes: body bytes sent on hits / (hits + misses).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class BoxSample:
    """One look at a box: `at` (monotonic seconds), its /status answer and its /metrics samples."""

    at: float
    status: Mapping[str, Any]
    metrics: Mapping[tuple[str, Labels], float]

    @classmethod
    def parse(cls, at: float, status: Mapping[str, Any], metrics_text: str) -> BoxSample:
        metrics: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                metrics[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
        return cls(at, status, metrics)

    def total(self, name: str, **match: str) -> float:
        """The sum of `name`'s samples whose labels include `match`."""
        return sum(v for (n, labels), v in self.metrics.items()
                   if n == name and all((k, w) in labels for k, w in match.items()))

    def by(self, name: str, label: str) -> dict[str, float]:
        """`name`'s samples summed by the value of `label`."""
        sums: dict[str, float] = defaultdict(float)
        for (n, labels), v in self.metrics.items():
            if n == name:
                sums[dict(labels).get(label, "")] += v
        return dict(sums)


@dataclass(frozen=True)
class FleetSample:
    """One look at the fleet: `at` (monotonic seconds) and the control plane's /v1/fleet answer."""

    at: float
    fleet: Mapping[str, Any]


@dataclass
class Frame:
    """What one refresh shows: a title line, then tables (each a header row and rows of cells)."""

    title: str
    tables: list[tuple[str, list[list[str]]]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the same numbers, unformatted, for --json


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else new  # a counter that went down restarted from zero


def _rate(new: float, old: float, seconds: float) -> float:
    return _delta(new, old) / seconds if seconds > 0 else 0.0


def hit_ratio(hit_bytes: float, miss_bytes: float) -> float | None:
    """Hit ratio by bytes, or None when nothing was sent from the cache or upstream."""
    total = hit_bytes + miss_bytes
    return hit_bytes / total if total > 0 else None


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def box_frame(old: BoxSample, new: BoxSample, size: Callable[[float], str]) -> Frame:
    """The frame of one box from two samples: requests/s, egress, hit ratio by bytes (over the interval and
    since the box started), fills, tiers, and what players report in CMCD by object type."""
    seconds = new.at - old.at
    status = new.status

    def rate(name: str, **match: str) -> float:
        return _rate(new.total(name, **match), old.total(name, **match), seconds)

    req_rate = rate("oca_requests_total")
    egress = rate("oca_sent_bytes_total")
    hit_rate, miss_rate = rate("oca_sent_bytes_total", cache="hit"), rate("oca_sent_bytes_total", cache="miss")
    ratio_now = hit_ratio(hit_rate, miss_rate)
    ratio_all = hit_ratio(new.total("oca_sent_bytes_total", cache="hit"), new.total("oca_sent_bytes_total",
                                                                                      cache="miss"))
    fill_rate, fail_rate = rate("oca_fills_total"), rate("oca_fill_failures_total")
    fill_bytes = rate("oca_fill_bytes_total")
    in_flight = new.total("oca_fills_in_flight")
    summary = [
        ["METRIC", "NOW", "TOTAL"],
        ["requests/s", f"{req_rate:.1f}", f"{new.total('oca_requests_total'):.0f}"],
        ["egress/s", f"{size(egress)} ({egress * 8 / 1e6:.1f} Mbit/s)", size(new.total("oca_sent_bytes_total"))],
        ["hit ratio (bytes)", percent(ratio_now), percent(ratio_all)],
        ["fills/s", f"{fill_rate:.1f} ({in_flight:.0f} in flight)", f"{new.total('oca_fills_total'):.0f}"],
        ["fill failures/s", f"{fail_rate:.1f}", f"{new.total('oca_fill_failures_total'):.0f}"],
        ["fill in/s", size(fill_bytes), size(new.total("oca_fill_bytes_total"))],
    ]
    sent_new, sent_old = new.by("oca_sent_bytes_total", "tier"), old.by("oca_sent_bytes_total", "tier")
    tiers = [["TIER", "STATE", "USED", "CAPACITY", "USE", "OBJECTS", "EGRESS/s"]]
    tier_data = []
    names = [str(t.get("name")) for t in status.get("tiers") or []]
    for tier in status.get("tiers") or []:
        name = str(tier.get("name"))
        used, capacity = tier.get("used") or 0, tier.get("capacity") or 0
        out = _rate(sent_new.get(name, 0.0), sent_old.get(name, 0.0), seconds)
        tiers.append([name, str(tier.get("state", "-")), size(used), size(capacity),
                      percent(used / capacity if capacity else None), str(tier.get("objects", "-")), size(out)])
        tier_data.append({"name": name, "state": tier.get("state"), "used": used, "capacity": capacity,
                          "objects": tier.get("objects"), "egress_bytes_per_second": out})
    for name in sorted(set(sent_new) - set(names)):  # upstream: misses streamed while filling
        out = _rate(sent_new[name], sent_old.get(name, 0.0), seconds)
        tiers.append([name, "-", "-", "-", "-", "-", size(out)])
        tier_data.append({"name": name, "egress_bytes_per_second": out})
    req_new, req_old = new.by("oca_player_requests_total", "ot"), old.by("oca_player_requests_total", "ot")
    reb_new, reb_old = new.by("oca_player_rebuffers_total", "ot"), old.by("oca_player_rebuffers_total", "ot")
    sessions = new.total("oca_player_sessions")
    players = [["OBJECT TYPE", "REQUESTS/s", "REBUFFERS/s", "TOTAL"]]
    player_data = []
    for ot in sorted(set(req_new) | set(reb_new)):
        r = _rate(req_new.get(ot, 0.0), req_old.get(ot, 0.0), seconds)
        b = _rate(reb_new.get(ot, 0.0), reb_old.get(ot, 0.0), seconds)
        players.append([ot, f"{r:.1f}", f"{b:.1f}", f"{req_new.get(ot, 0.0):.0f}"])
        player_data.append({"ot": ot, "requests_per_second": r, "rebuffers_per_second": b,
                            "requests": req_new.get(ot, 0.0)})
    title = (f"box {status.get('box', '?')} site {status.get('site', '?')}  version {status.get('version') or '-'}"
             f"  up {_uptime(status.get('uptime'))}  workers {status.get('workers', '-')}  connections "
             f"{status.get('connections', '-')}  {'DRAINING' if status.get('draining') else 'serving'}"
             f"  ({seconds:.1f}s)")
    data = {
        "box": status.get("box"), "site": status.get("site"), "version": status.get("version"),
        "draining": bool(status.get("draining")), "interval": seconds,
        "requests_per_second": req_rate, "requests": new.total("oca_requests_total"),
        "egress_bytes_per_second": egress, "sent_bytes": new.total("oca_sent_bytes_total"),
        "hit_ratio_bytes": ratio_now, "hit_ratio_bytes_total": ratio_all,
        "fills_per_second": fill_rate, "fill_failures_per_second": fail_rate, "fills_in_flight": in_flight,
        "fill_bytes_per_second": fill_bytes, "tiers": tier_data,
        "players": {"sessions": sessions, "by_object_type": player_data},
    }
    tables = [("", summary), ("tiers", tiers)]
    tables.append((f"players (CMCD): {sessions:.0f} sessions", players if len(players) > 1 else
                   [players[0], ["-", "-", "-", "-"]]))
    return Frame(title, tables, data)


def fleet_frame(old: FleetSample, new: FleetSample, size: Callable[[float], str]) -> Frame:
    """The frame of the fleet from two /v1/fleet answers: per box its state, version, egress (the box's own
    measure), hit ratio by bytes (over the interval when the control plane polled in it, else since the box
    started), load and connections."""
    seconds = new.at - old.at
    before = {b["id"]: b for b in old.fleet.get("boxes") or []}
    rows = [["BOX", "SITE", "STATE", "VERSION", "EGRESS", "HIT", "LOAD", "CONN"]]
    boxes = []
    for box in new.fleet.get("boxes") or []:
        prev = before.get(box["id"], {})
        hit, miss = box.get("hit_bytes"), box.get("miss_bytes")
        ratio = None
        if isinstance(hit, int | float) and isinstance(miss, int | float):
            ratio = hit_ratio(_delta(hit, prev.get("hit_bytes") or 0), _delta(miss, prev.get("miss_bytes") or 0))
            if ratio is None or prev.get("hit_bytes") is None:
                ratio = hit_ratio(hit, miss)
        egress = box.get("egress_bps")
        state = _state(box)
        rows.append([str(box["id"]), str(box.get("site", "-")), state, str(box.get("version") or "-"),
                     "-" if egress is None else f"{size(egress / 8)}/s", percent(ratio),
                     f"{100 * float(box.get('load') or 0):.0f}%",
                     "-" if box.get("connections") is None else str(box["connections"])])
        boxes.append({"id": box["id"], "site": box.get("site"), "state": state, "version": box.get("version"),
                      "egress_bps": egress, "hit_ratio_bytes": ratio, "load": box.get("load"),
                      "connections": box.get("connections")})
    healthy = sum(1 for b in new.fleet.get("boxes") or [] if b.get("healthy"))
    total = len(new.fleet.get("boxes") or [])
    egress_all = sum(float(b.get("egress_bps") or 0) for b in new.fleet.get("boxes") or [])
    title = (f"fleet: {healthy}/{total} boxes healthy  egress {size(egress_all / 8)}/s  control plane "
             f"{new.fleet.get('version', '-')}  ({seconds:.1f}s)")
    return Frame(title, [("", rows)], {"healthy": healthy, "boxes_total": total, "egress_bps": egress_all,
                                       "interval": seconds, "boxes": boxes})


def _state(box: Mapping[str, Any]) -> str:
    if not box.get("healthy"):
        return "down" if box.get("healthy") is False else "unknown"
    if box.get("drained_by_operator"):
        return "drained"
    if box.get("draining"):
        return "draining"
    if box.get("failed_tiers"):
        return "degraded"
    return "up"


def _uptime(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return (f"{days}d" if days else "") + f"{hours:02d}:{minutes:02d}:{s:02d}"


def frame_lines(frame: Frame, table: Callable[[Sequence[Sequence[str]]], list[str]]) -> list[str]:
    """The frame as text lines: its title, then each table (under its name, if any) after a blank line."""
    lines = [frame.title]
    for name, rows in frame.tables:
        lines.append("")
        if name:
            lines.append(name)
        lines += table(rows)
    return lines
