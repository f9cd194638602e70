"""Progress of `make_content` as lines a person can read: step, title, media done, seconds left.

`make_content` reports two kinds of event through callbacks: a title's step (`reused`, `encoding`,
`packaging`, `done`) and, while a title encodes, how many seconds of its media are done. `ContentProgress`
turns them into at most one line per step change plus one every `interval` seconds while a step lasts (not
one per ffmpeg progress report), each with an estimate of the time left; it prints nothing itself: it hands
each line to `say`. `seconds_left` and `progress_line` are the pure parts.

The estimate: the work is the media seconds of the titles still to make (a reused title is no work); each
title counts its encode as ENCODE_SHARE of its work and the packaging (and ffprobe) as the rest. Left = the
elapsed time x work left / work done, once anything is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

ENCODE_SHARE = 0.9  # of a title's time: one ffmpeg encodes every rendition; the packaging copies streams
STEPS = ("reused", "encoding", "packaging", "done")
RENDITIONS = "360p/720p/1080p + audio"  # what the one encode writes (oca.content.ladder.LADDER, AUDIO)


def seconds_left(elapsed: float, done: float, total: float) -> float | None:
    """Seconds left when `done` of `total` units took `elapsed` seconds; None before any unit is done."""
    if total <= 0 or done >= total:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return elapsed * (total - done) / done


def title_work(step: str, media_done: float, duration: float) -> float:
    """Units of work done on one title of `duration` media seconds (a title is `duration` units)."""
    if step == "done":
        return duration
    if step == "packaging":
        return duration * ENCODE_SHARE
    if step == "encoding" and duration > 0:
        return duration * ENCODE_SHARE * min(1.0, max(0.0, media_done) / duration)
    return 0.0


def _seconds(value: float) -> str:
    value = round(value)
    return f"{value // 60} min {value % 60:02d} s" if value >= 120 else f"{value} s"


def progress_line(index: int, count: int, title_id: str, step: str, media_done: float, duration: float,
                  elapsed: float, left: float | None) -> str:
    """`content: title 2/3 (1002): encoding 360p/720p/1080p + audio, 14/30 s of media, 52 s so far,
    about 40 s left`."""
    what = {"encoding": f"encoding {RENDITIONS}, {int(media_done)}/{int(duration)} s of media",
            "packaging": "packaging HLS fMP4, HLS TS, DASH",
            "done": "made"}.get(step, step)
    eta = "" if step == "done" and left == 0 else (
        ", estimating time left" if left is None else f", about {_seconds(left)} left")
    return f"content: title {index}/{count} ({title_id}): {what}, {_seconds(elapsed)} so far{eta}"


@dataclass
class _Title:
    index: int
    step: str = ""
    media: float = 0.0
    shown_step: str = ""
    shown_at: float = 0.0


class ContentProgress:
    """Feed it `step(title_id, step)` and `media(title_id, seconds)` (make_content's callbacks, any thread);
    it says a line on every step change and every `interval` seconds of one step."""

    def __init__(self, count: int, duration: int, say: Callable[[str], None], *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count  # titles to make; a reused one is taken off
        self.duration = float(duration)
        self.say = say
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._titles: dict[str, _Title] = {}
        self._lock = threading.Lock()

    def work_left(self) -> tuple[float, float]:
        """(units done, units in all) over the titles to make."""
        done = sum(title_work(t.step, t.media, self.duration) for t in self._titles.values())
        return done, self.count * self.duration

    def step(self, title_id: str, step: str) -> None:
        with self._lock:
            if step == "reused":
                self.count = max(0, self.count - 1)
                return
            title = self._title(title_id)
            title.step = step
            if step != "encoding":
                title.media = self.duration
            self._maybe_say(title_id, title, force=True)

    def media(self, title_id: str, seconds: float) -> None:
        with self._lock:
            title = self._title(title_id)
            title.media = max(title.media, seconds)
            if title.step == "encoding":
                self._maybe_say(title_id, title, force=False)

    def _title(self, title_id: str) -> _Title:
        title = self._titles.get(title_id)
        if title is None:
            title = self._titles[title_id] = _Title(index=len(self._titles) + 1)
        return title

    def _maybe_say(self, title_id: str, title: _Title, *, force: bool) -> None:
        now = self.clock()
        if not force and title.shown_step == title.step and now - title.shown_at < self.interval:
            return
        if force and title.shown_step == title.step:
            return
        title.shown_step, title.shown_at = title.step, now
        elapsed = now - self.started
        done, total = self.work_left()
        self.say(progress_line(title.index, max(self.count, title.index), title_id, title.step, title.media,
                               self.duration, elapsed, seconds_left(elapsed, done, total)))
