"""Is a worker stuck, or was it the master that did not run? Pure: every time is passed in.

Rules kept here:
- A worker reports every flush interval; one the master has not heard from for `stall_after` seconds of
  the master's own running time is stuck (the master kills it, and so restarts it). `stall_after` is ten
  report intervals and never under 2 s: a worker's loop busy for a moment with a large response or a
  slow disk is not stuck.
- The master measures its own pauses with the monotonic clock, between its supervision ticks: a tick due
  `tick` seconds after the previous one that comes later than that did not run in between (the box was
  stopped with SIGSTOP, the machine suspended, the master's loop blocked). CLOCK_MONOTONIC runs on while a
  process is stopped, so without this a whole box stopped and continued would blame every worker for the
  master's own absence: the master could not read their reports while it did not run.
- So the master's pause is credited to every worker before any is judged: `heard` moves forward by it.
  Lateness up to one tick is scheduling jitter and is not a pause.
- The master's watchdog ping (systemd's WATCHDOG=1) says the box serves, not only that the master's loop
  runs: it is sent only while at least one serving worker reported within `stall_after`. A box whose
  workers all stopped reporting (hung, or dying as fast as they are restarted) stops pinging, and its
  supervisor (systemd's WatchdogSec, the lab's watchdog) kills it, which resets its connections so that
  players move on at once instead of waiting for their own timeouts.
"""

from __future__ import annotations

REPORTS_MISSED = 10  # report intervals of silence before a worker is stuck
SHORTEST = 2.0  # seconds: the shortest silence that makes a worker stuck


def stall_after(report_interval: float) -> float:
    """Seconds of silence (of the master's running time) after which a worker that reports every
    `report_interval` seconds is stuck."""
    return max(SHORTEST, REPORTS_MISSED * report_interval)


def own_pause(previous_tick: float, now: float, tick: float) -> float:
    """Seconds the master did not run between its supervision tick at `previous_tick` and this one at `now`,
    `tick` seconds being the interval it asked for: 0 when the tick came on time (within one tick)."""
    late = now - previous_tick - tick
    return late if late > tick else 0.0


def is_stalled(now: float, heard: float, stall_after: float) -> bool:
    """True if a worker last heard of at `heard` (already credited with the master's pauses) is stuck."""
    return now - heard > stall_after


def workers_report(now: float, heard: list[float], stall_after: float) -> bool:
    """True if any serving worker (`heard`: when each was last heard of) reported within `stall_after`: the
    condition for the master's watchdog ping. No serving worker at all is False."""
    return any(now - h <= stall_after for h in heard)
