"""Locust devices that behave like players (issue 8 item 1): `locust -f loadtest/locustfile.py --host CONTROL_URL`.

Each user is a device: it picks a title by Zipf popularity (rank r weighted 1/r), plays it through
`loadtest.devices.session.Session` (control plane manifest, content steering, ABR, CMCD, real-time pacing),
then picks another. Environment:
  OCA_LOCUST_TITLES   comma-separated title ids, most popular first (default 1001)
  OCA_LOCUST_CLIENTS  comma-separated client addresses sent in OCA_LOCUST_HEADER (default: the lab's sites)
  OCA_LOCUST_HEADER   the client header name (default X-OCA-Lab-Client; empty = none)
  OCA_LOCUST_FAILURES a file each failed request is appended to, one line "<unix time> <name> <error>" (default
                      none): loadtest.bench_replicas counts the failures before and after an instant with it
Custom statistics go through locust's request event (request_type "startup" and "rebuffer", response time in
ms) and a summary is printed at test stop: startup p50/p99, rebuffer ratio, bitrate distribution, pathway
switches, errors by kind.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

from locust import HttpUser, events, task
from locust.env import Environment

from loadtest.devices.session import HttpResult, PlaybackError, Session, SessionStats

TITLES = [t for t in os.environ.get("OCA_LOCUST_TITLES", "1001").split(",") if t]
CLIENTS = [c for c in os.environ.get("OCA_LOCUST_CLIENTS", "127.0.1.10,127.0.2.10").split(",") if c]
HEADER = os.environ.get("OCA_LOCUST_HEADER", "X-OCA-Lab-Client")
ZIPF = [1 / rank for rank in range(1, len(TITLES) + 1)]
FAILURES = os.environ.get("OCA_LOCUST_FAILURES") or None


@events.request.add_listener  # type: ignore[untyped-decorator]
def _record_failure(request_type: str, name: str, exception: BaseException | None = None, **_: Any) -> None:
    if FAILURES is not None and exception is not None:
        with open(FAILURES, "a", encoding="utf-8") as fh:
            fh.write(f"{time.time():.3f} {name} {' '.join(str(exception).split())[:200]}\n")


class Totals:
    """Every session's stats, finished or still playing when the test stops."""

    sessions: list[SessionStats] = []

    @classmethod
    def summary(cls) -> dict[str, Any]:
        startups = sorted(s.startup_time for s in cls.sessions if s.startup_time is not None)
        play = sum(s.play_time for s in cls.sessions)
        stall = sum(s.stall_time for s in cls.sessions)
        bitrates: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        for s in cls.sessions:
            bitrates.update(s.bitrates)
            errors.update(s.errors)

        def pct(p: float) -> float | None:
            return startups[min(int(p * len(startups)), len(startups) - 1)] if startups else None

        segments = sum(bitrates.values())
        return {
            "sessions": len(cls.sessions),
            "finished": sum(s.done for s in cls.sessions),
            "startup_p50_s": pct(0.50),
            "startup_p99_s": pct(0.99),
            "rebuffer_ratio": stall / (play + stall) if play + stall else 0.0,
            "stalls": sum(len(s.stalls) for s in cls.sessions),
            "bitrate_share": {br: n / segments for br, n in sorted(bitrates.items())},
            "pathway_switches": sum(s.pathway_switches for s in cls.sessions),
            "steering_reloads": sum(s.steering_reloads for s in cls.sessions),
            "errors": dict(errors),
        }


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _print_summary(environment: Environment, **_: Any) -> None:
    s = Totals.summary()

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}s"

    lines = [
        "OCA devices",
        f"  sessions        {s['sessions']} ({s['finished']} finished)",
        f"  startup         p50 {sec(s['startup_p50_s'])}  p99 {sec(s['startup_p99_s'])}",
        f"  rebuffer ratio  {s['rebuffer_ratio']:.4f} ({s['stalls']} stalls)",
        "  bitrates        " + ", ".join(f"{br // 1000} kb/s {share:.0%}" for br, share in s["bitrate_share"].items()),
        f"  pathway switches {s['pathway_switches']}  steering reloads {s['steering_reloads']}",
        f"  errors          {s['errors'] or 'none'}",
    ]
    print("\n".join(lines), flush=True)


class Device(HttpUser):
    """One simulated player; it paces itself at real time, so no wait_time between sessions is needed."""

    def wait_time(self) -> float:
        return 0.5

    def _get(self, url: str, headers: dict[str, str], name: str) -> HttpResult:
        started = time.perf_counter()
        with self.client.get(url, headers=headers, name=name, catch_response=True) as r:
            seconds = time.perf_counter() - started
            if r.status_code in (200, 206):
                r.success()
            else:
                r.failure(f"HTTP {r.status_code}")
            return HttpResult(r.status_code or 0, r.content or b"", seconds)

    def _event(self, kind: str, seconds: float) -> None:
        self.environment.events.request.fire(request_type=kind, name=kind, response_time=seconds * 1000,
                                             response_length=0, exception=None, context={})

    @task
    def play(self) -> None:
        title = random.choices(TITLES, weights=ZIPF)[0]
        header = (HEADER, random.choice(CLIENTS)) if HEADER and CLIENTS else None
        # time.sleep is gevent's here: locust monkey-patches the standard library on import
        session = Session(f"{self.host}/v1/play/{title}/master.m3u8", self._get, time.monotonic, time.sleep,
                          client_header=header, on_event=self._event)
        Totals.sessions.append(session.stats)
        try:
            session.run()
        except PlaybackError as e:
            session.stats.errors[f"playback: {e}"] += 1
