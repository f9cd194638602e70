"""Passive signals: what players measure of each box, from their steering reloads, turned into "slow" boxes.

hls.js and dash.js report, with each steering reload, the pathway they use and the throughput they measured
on it (`_HLS_pathway` + `_HLS_throughput`; `_DASH_pathway` + `_DASH_throughput`, one per pathway: HLS content
steering, rfc8216bis §7.2; ETSI TS 103 998 §6.5). A box whose players see far less throughput than players
see from its peers is ranked after the others for *new* sessions (control.steering, `slow`) before its
health poll turns bad: a box with a failing NIC, a saturated uplink or a sick disk is slow before it is dead.
Sessions already on it keep their ranking (moving them is the avoid rule's job, on what they report).

Rules kept here (pure: values and an injected `now` in, values out):
- Reports: per box, the last MAX_REPORTS (bits/s, time) within `window` seconds; the origin and ids that are
  not boxes are not kept. Memory: MAX_REPORTS per box of the fleet.
- A box's figure is the median of its reports (at least `min_reports` of them); its peers' figure is the
  median of the other boxes' figures in its site, or in the fleet when no other box of its site has one.
  ratio = box / peers. No figure or no peers: no evidence.
- Hysteresis, so a box never flaps:
  enter slow when ratio ≤ enter_ratio, or when ratio ≤ loaded_ratio while the box's own load (egress over
  capacity, from its health poll) is ≥ enter_load: a busy box needs less evidence;
  leave slow only after `min_dwell` seconds slow, and then when ratio ≥ leave_ratio and load < enter_load,
  or when there is no evidence any more (its reports aged out).
  The enter and leave regions do not meet (enter_ratio < leave_ratio; the loaded entry needs load ≥
  enter_load, leaving needs load < enter_load): with constant inputs the answer is constant from the first
  step on (a box that starts slow may leave once, after its dwell).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SlowRule:
    window: float = 60.0  # seconds of reports that count
    min_reports: int = 5  # a box's figure needs this many reports in the window
    enter_ratio: float = 0.5  # half its peers' throughput: slow
    loaded_ratio: float = 0.8  # ...or 80% of it while its load is at least enter_load
    enter_load: float = 0.7
    leave_ratio: float = 0.7
    min_dwell: float = 30.0  # seconds a box stays slow at least: a new session every reload would see it flip
    every: float = 1.0  # seconds between judgements: session starts never pay for more than one a second

    def __post_init__(self) -> None:
        if not 0 < self.enter_ratio < self.leave_ratio or self.loaded_ratio < self.enter_ratio:
            raise ValueError("slow-box hysteresis needs 0 < enter_ratio < leave_ratio and enter_ratio <= loaded_ratio")


MAX_REPORTS = 256


@dataclass(frozen=True, slots=True)
class Slow:
    since: float
    ratio: float | None  # the ratio when last judged (None: no evidence)

    def reason(self) -> str:
        shown = f"{self.ratio:.0%} of its peers'" if self.ratio is not None else "no recent reports"
        return f"players report slow throughput ({shown})"


class Reports:
    """The recent throughput reports per box (bounded)."""

    def __init__(self) -> None:
        self._by_box: dict[str, deque[tuple[float, int]]] = {}

    def add(self, box: str, bits_per_second: int, now: float) -> None:
        reports = self._by_box.get(box)
        if reports is None:
            reports = self._by_box[box] = deque(maxlen=MAX_REPORTS)
        reports.append((now, bits_per_second))

    def figures(self, rule: SlowRule, now: float) -> dict[str, float]:
        """Each box's median reported throughput over the window, when it has enough reports."""
        horizon = now - rule.window
        out = {}
        for box, reports in self._by_box.items():
            while reports and reports[0][0] < horizon:
                reports.popleft()
            if len(reports) >= rule.min_reports:
                out[box] = float(statistics.median(bps for _, bps in reports))
        return out


def ratios(figures: Mapping[str, float], site_of: Mapping[str, str]) -> dict[str, float]:
    """Each box's figure over its peers' (same site if any other box there has a figure, else the fleet)."""
    out = {}
    for box, figure in figures.items():
        others = {b: f for b, f in figures.items() if b != box}
        same_site = [f for b, f in others.items() if site_of.get(b) == site_of.get(box)]
        peers = same_site or list(others.values())
        if peers:
            median = statistics.median(peers)
            if median > 0:
                out[box] = figure / median
    return out


def judge(previous: Mapping[str, Slow], ratio_of: Mapping[str, float], load_of: Mapping[str, float],
          rule: SlowRule, now: float) -> dict[str, Slow]:
    """The slow boxes now, from those slow before (with since when) and the current ratios and loads."""
    slow: dict[str, Slow] = {}
    for box in set(previous) | set(ratio_of):
        ratio, load = ratio_of.get(box), load_of.get(box, 0.0)
        before = previous.get(box)
        if before is None:
            if ratio is not None and (ratio <= rule.enter_ratio
                                      or (load >= rule.enter_load and ratio <= rule.loaded_ratio)):
                slow[box] = Slow(now, ratio)
            continue
        recovered = ratio is None or (ratio >= rule.leave_ratio and load < rule.enter_load)
        if now - before.since >= rule.min_dwell and recovered:
            continue
        slow[box] = Slow(before.since, ratio)
    return slow


class PlayerSignals:
    """The control plane's running state: reports in, the slow boxes out (judged at most every `rule.every`)."""

    def __init__(self, rule: SlowRule | None = None) -> None:
        self.rule = rule or SlowRule()
        self.reports = Reports()
        self.slow: dict[str, Slow] = {}
        self._judged = float("-inf")

    def report(self, box: str, bits_per_second: int | None, now: float) -> None:
        if bits_per_second is not None and bits_per_second > 0:
            self.reports.add(box, bits_per_second, now)

    def current(self, site_of: Mapping[str, str], load_of: Mapping[str, float], now: float) -> dict[str, Slow]:
        if now - self._judged >= self.rule.every or now < self._judged:
            self._judged = now
            figures = self.reports.figures(self.rule, now)
            self.slow = judge(self.slow, ratios(figures, site_of), load_of, self.rule, now)
        return self.slow
