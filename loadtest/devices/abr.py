"""A buffer-based ABR and a playback buffer model for simulated devices: pure, no I/O, the clock is passed in.

The safeguards are the reference architecture's (netflix-architecture.txt, "Adaptive bitrate" and its pitfalls):
- three states: `startup` (nothing played yet: lowest rendition, start fast), `steady`, and `depleted` (the
  buffer is below `depleted_below` seconds while playing: drop at once, no stability window);
- the throughput estimate is a weighted mean of the last `samples` measurements, recent ones weighted more
  (weights 1, 2, ..., N), so one fast or slow segment does not swing the choice;
- the highest rendition whose bitrate is at most `safety` (0.75) x the estimate is the candidate;
- in `steady`, a switch (up or down) is held for `stability_window` (30 s) after the previous one.

`Playback` keeps the buffer level, startup time and rebuffer accounting: stall start and end, and the
rebuffer ratio = stall time / (play time + stall time).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

State = Literal["startup", "steady", "depleted"]


@dataclass(frozen=True, slots=True)
class AbrConfig:
    safety: float = 0.75  # fraction of the estimated throughput a rendition may use (70-80%)
    stability_window: float = 30.0  # seconds to hold a rendition after a switch (steady state)
    samples: int = 5  # recent throughput samples kept for the estimate
    depleted_below: float = 4.0  # buffer seconds under which a playing device is `depleted`


class Abr:
    """Chooses a rendition index (into `bitrates`, sorted ascending, bits per second) for each segment."""

    def __init__(self, bitrates: Sequence[int], config: AbrConfig | None = None) -> None:
        if not bitrates:
            raise ValueError("no renditions")
        if list(bitrates) != sorted(bitrates):
            raise ValueError("bitrates must be sorted ascending")
        self.bitrates = list(bitrates)
        self.config = config or AbrConfig()
        self._samples: deque[float] = deque(maxlen=self.config.samples)
        self.current = 0
        self.last_switch: float | None = None  # when the current rendition was chosen by a switch

    def add_sample(self, nbytes: int, seconds: float) -> None:
        """One download: `nbytes` in `seconds`. Downloads too short to time are counted at 1 ms."""
        self._samples.append(nbytes * 8 / max(seconds, 0.001))

    def estimate(self) -> float | None:
        """Weighted mean throughput (bits/s) of the recent samples, the newest weighted most."""
        if not self._samples:
            return None
        weights = range(1, len(self._samples) + 1)
        return sum(w * s for w, s in zip(weights, self._samples, strict=True)) / sum(weights)

    def state(self, buffer_s: float, playing_started: bool) -> State:
        if not playing_started:
            return "startup"
        return "depleted" if buffer_s < self.config.depleted_below else "steady"

    def candidate(self) -> int:
        """Highest rendition at most safety x estimate (the lowest when there is no estimate or none fits)."""
        est = self.estimate()
        if est is None:
            return 0
        budget = self.config.safety * est
        best = 0
        for i, br in enumerate(self.bitrates):
            if br <= budget:
                best = i
        return best

    def choose(self, now: float, buffer_s: float, playing_started: bool) -> int:
        state = self.state(buffer_s, playing_started)
        cand = self.candidate()
        if state == "startup":
            choice = 0  # start fast on the lowest rendition
        elif state == "depleted":
            # drop at once: never above the candidate, and at least one step down if we were above the lowest
            choice = min(cand, max(self.current - 1, 0))
        else:
            held = self.last_switch is not None and now - self.last_switch < self.config.stability_window
            choice = self.current if held else cand
        if choice != self.current:
            self.current = choice
            self.last_switch = now
        return choice


@dataclass(slots=True)
class Stall:
    start: float
    end: float | None = None


class Playback:
    """The device's buffer in media seconds, drained at real time once playing; stalls when it runs dry.

    Playback starts (and resumes after a stall) when the buffer holds `resume_at` seconds, or all the media.
    Call `advance(now)` before reading the state, and `add_media` after each segment arrives.
    """

    def __init__(self, started_at: float, total_media: float, resume_at: float = 2.0) -> None:
        self.started_at = started_at
        self.total_media = total_media
        self.resume_at = resume_at
        self.buffer = 0.0
        self.downloaded = 0.0
        self.played = 0.0  # media seconds played
        self.first_play: float | None = None
        self.playing = False
        self.stalls: list[Stall] = []
        self._t = started_at
        self.stall_time = 0.0

    @property
    def startup_time(self) -> float | None:
        return None if self.first_play is None else self.first_play - self.started_at

    @property
    def ended(self) -> bool:
        return self.played >= self.total_media - 1e-9

    @property
    def stalled(self) -> bool:
        return bool(self.stalls) and self.stalls[-1].end is None

    def advance(self, now: float) -> None:
        dt = max(now - self._t, 0.0)
        self._t = max(now, self._t)
        if self.stalled:
            self.stall_time += dt
            return
        if not self.playing:
            return
        if dt <= self.buffer:
            self.buffer -= dt
            self.played += dt
            return
        # the buffer runs dry `self.buffer` seconds into the interval
        self.played += self.buffer
        dry_at = now - dt + self.buffer
        self.buffer = 0.0
        self.playing = False
        if not self.ended:
            self.stalls.append(Stall(dry_at))
            self.stall_time += now - dry_at

    def add_media(self, seconds: float, now: float) -> None:
        self.advance(now)
        self.buffer += seconds
        self.downloaded += seconds
        if not self.playing and (self.buffer >= self.resume_at or self.downloaded >= self.total_media - 1e-9):
            self.playing = True
            if self.first_play is None:
                self.first_play = now
            if self.stalled:
                self.stalls[-1].end = now

    @property
    def play_time(self) -> float:
        return self.played

    def rebuffer_ratio(self) -> float:
        total = self.play_time + self.stall_time
        return self.stall_time / total if total > 0 else 0.0
