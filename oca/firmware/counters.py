"""What the running release did since it began serving: the numbers the control plane's roll-out gate reads
from a box's /status (`firmware.release_stats`).

Rules kept here:
- Counting only: the master turns each worker report into (responses, errors) (oca/serve/stats.py
  `release_delta`, which knows which answers are no fault of the box) and adds them here, so firmware code
  never reads the worker report format.
- The master feeds it only the reports of workers running the current release, so the last answers of a
  retiring release never count against the new one (nor does a release's own gate, before it is current).
"""

from __future__ import annotations

from typing import Any


class ReleaseCounters:
    """Responses the current release's workers reported (and those that were errors), and its workers that
    died and were restarted."""

    __slots__ = ("errors", "requests", "restarts", "since", "version")

    def __init__(self, version: str, since: float) -> None:
        self.version = version
        self.since = since  # epoch seconds
        self.requests = 0
        self.errors = 0
        self.restarts = 0

    def add(self, requests: int, errors: int) -> None:
        """One worker report's responses and, of those, the errors."""
        self.requests += requests
        self.errors += errors

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "since": round(self.since, 3), "requests": self.requests,
                "errors": self.errors, "restarts": self.restarts}
