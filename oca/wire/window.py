"""The daily fill window: when a box's nightly fill job may run, and (with `in_fill_window`) when a firmware
roll-out may touch a box. The control plane sends it as text in a fill plan (`"window": "02:00-14:00"`); the
fill job and the control plane's roll-outs read it against the box's local time of day.

Rules kept here:
- `HH:MM[:SS]-HH:MM[:SS]` in local time; a window may cross midnight (`22:00-06:00`); `always` is no window.
- Pure: the time of day comes in as an argument (`local_second_of_day` is the one place that reads the zone).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\Z")
DAY = 86400


@dataclass(frozen=True, slots=True)
class Window:
    """A daily window in the box's local time, `02:00-14:00` (may cross midnight: `22:00-06:00`)."""

    start: int  # seconds after local midnight
    end: int  # seconds after local midnight, up to 86400

    @classmethod
    def parse(cls, text: str) -> Window | None:
        """`HH:MM[:SS]-HH:MM[:SS]`, or `always` (None: no window). ValueError naming the text otherwise."""
        if text.strip().lower() == "always":
            return None
        first, sep, second = text.strip().partition("-")
        start, end = _seconds(first) if sep else None, _seconds(second) if sep else None
        if start is None or end is None or start == end or start >= DAY:
            raise ValueError(f"window {text!r}: expected HH:MM-HH:MM such as 02:00-14:00, or always")
        return cls(start, end)

    def remaining(self, second_of_day: float) -> float:
        """Seconds left in the window at this local time of day; 0 when outside it."""
        if self.start < self.end:
            inside = self.start <= second_of_day < self.end
            return self.end - second_of_day if inside else 0.0
        if second_of_day >= self.start:
            return DAY - second_of_day + self.end
        return self.end - second_of_day if second_of_day < self.end else 0.0

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def local_second_of_day(now: float) -> float:
    """Seconds after local midnight at epoch time `now` (what a Window is read against)."""
    t = time.localtime(now)
    return t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec + (now % 1)


def _seconds(text: str) -> int | None:
    match = _CLOCK.match(text.strip())
    if match is None:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if minutes > 59 or seconds > 59 or hours > 24 or (hours == 24 and (minutes or seconds)):
        return None
    return hours * 3600 + minutes * 60 + seconds


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")
