"""Load aimed at a running lab during a roll-out: counting players of every lab title, a watch of the
fleet (which boxes were drained, how many at once), and reading `oca firmware roll --watch --json`. The
live roll-out tests (tests/rollout) and `loadtest.bench_rollout` share them, so both measure the same thing
the same way.

Rules kept here:
- Requests are told apart by box id or "control" (anything that is not a box's data port), so a caller can
  hold the boxes to zero failures on their own.
- The fleet watch never fails its caller: a control plane not answering (restarting) is a skipped sample.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from loadtest.devices.players import Players
from oca.lab import Lab
from oca.lab.procs import http_get


@dataclass
class FleetWatch:
    """Samples GET /v1/fleet every 0.2 s from a thread: the boxes ever seen drained by the control plane (the
    roll-out's drains) and the most at once; the boxes ever seen `draining` (what steering goes by: drained,
    or draining by the box's own /status as of its last health poll) and the most at once. A control plane
    not answering (restarting) is skipped."""

    lab: Lab = field(repr=False)
    drained: set[str] = field(default_factory=set)
    most_drained: int = 0
    box_draining: set[str] = field(default_factory=set)
    most_out: int = 0  # boxes steering gave no new sessions at once
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> FleetWatch:
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                status, body = http_get(self.lab.control_url + "/v1/fleet", self.lab.operator_token, timeout=2)
                boxes = json.loads(body)["boxes"] if status == 200 else None
            except (OSError, ValueError):
                boxes = None
            if boxes is None:
                continue
            now = {b["id"] for b in boxes if b.get("drained_by_operator")}
            self.drained |= now
            out = {b["id"] for b in boxes if b.get("draining")}
            self.box_draining |= out
            self.most_out = max(self.most_out, len(out))
            self.most_drained = max(self.most_drained, len(now))
            self.samples += 1


def players_for(lab: Lab, devices: int = 8, stagger: float = 0.75) -> Players:
    """Players of every lab title, spread over the lab's sites, device i starting i * `stagger` seconds in;
    requests told apart by box or "control"."""
    return Players([lab.master_url(t) for t in lab.titles], lab.client_header, list(lab.site_clients.values()),
                   lambda url: lab.box_serving(url) or "control", devices=devices, stagger=stagger)


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (`--watch --json` prints one per change)."""
    decoder, at = json.JSONDecoder(), 0
    out: list[Any] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return out
        document, at = decoder.raw_decode(text, at)
        out.append(document)
