"""Player-aware prefetch in the master: a player's CMCD `nor`/`nrr` hint becomes a background fill.

A worker that sees a request carrying CMCD `nor` (next object request) or `nrr` (next range request) checks
what it can on its own (the token's scope covers the next object, the object is not held) and passes the
hint on (oca.serve.hints). Here the master decides whether to fetch, within two bounds:

- Per box: at most MAX_BOX hint fills in flight. A hint is a guess about a request a second or two away;
  client misses come first, so hints may take at most a quarter of `fetch.max_fills` (and never more
  than MAX_BOX) of the box's upstream fetches.
- Per session (CMCD `sid`, else the client address): at most MAX_SESSION in flight. hls.js and dash.js load
  one fragment at a time per stream (video, audio, subtitles), and each request names one next object; a
  session with more hints in flight than streams is seeking or switching faster than the box can fetch,
  and its newer hints are dropped rather than queued (a queued guess is stale by the time it runs).

- A guess (the worker's lookahead: the object after a hinted one, oca.serve.hints) never runs beside the
  session's hint fill in the same directory: it waits for it (`park`, one waiting per such fill, the newest
  kept) and starts when it is stored, in the slot it leaves. Why: the two would share the upstream and the
  master while the player is about to ask for the first, which must win the race; one after the other,
  the stream still gets a whole object's lead. A guess with nothing to wait for is admitted only with a
  slot to spare, in the session and in the box: it never takes the place of a player's own hint, which
  names what the player will certainly ask for next.

Counters: `started` (a fill began; `guessed` of them were lookaheads), `used` (a client then got that key
as a hit), `late` (a client asked while the hint's fill was still running: it joined the fill, a shorter
miss, and still a miss in the access log; `late_most` of them joined once at least half of the bytes had
arrived, so the client waited for less than half of a fill), `dropped` by reason:
box (box bound), session (session bound), failed (the fill failed), unused (no client asked for it within
UNUSED_AFTER seconds). A hint for a key that is held or already being fetched starts nothing and is
counted nowhere. Memory: at most MAX_TRACKED started keys and MAX_SESSIONS sessions are remembered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_BOX = 16
MAX_SESSION = 3
MAX_SESSIONS = 10_000
MAX_TRACKED = 10_000
UNUSED_AFTER = 120.0  # seconds: a prefetched object nobody asked for in this long counts as unused


@dataclass
class HintCounters:
    started: int = 0
    guessed: int = 0
    used: int = 0
    late: int = 0
    late_most: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"box": 0, "session": 0, "failed": 0, "unused": 0})

    def as_json(self) -> dict[str, object]:
        return {"started": self.started, "guessed": self.guessed, "used": self.used, "late": self.late,
                "late_most": self.late_most, "dropped": dict(self.dropped)}


class HintBook:
    """The bookkeeping of hint fills: admission within the bounds, and what became of each. Pure: no I/O;
    the FillManager starts the fills and reports their ends."""

    def __init__(self, max_fills: int, clock: Callable[[], float] = time.time) -> None:
        self.box_limit = max(1, min(MAX_BOX, max_fills // 4))
        self.counters = HintCounters()
        self._clock = clock
        self._running: dict[str, str] = {}  # key -> session, for hint fills in flight
        self._sessions: OrderedDict[str, int] = OrderedDict()  # session -> hint fills in flight
        self._started: OrderedDict[str, float] = OrderedDict()  # key -> when its hint fill began
        self._parked: dict[str, str] = {}  # running key -> the guess waiting for it (at most one each)

    def park(self, key: str, session: str) -> bool:
        """Whether the guess `key` waits for a hint fill of its session in its directory (module rules)."""
        directory = key.rpartition("/")[0]
        for running, owner in self._running.items():
            if owner == session and running.rpartition("/")[0] == directory:
                self._parked[running] = key
                return True
        return False

    def admit(self, key: str, session: str, guess: bool = False, waited: bool = False) -> bool:
        """Whether a hint for `key` (not held, not being fetched) may start a fill now; counts a refusal.
        A guess needs a slot to spare, unless it `waited` for a fill and takes its slot (module rules)."""
        spare = 1 if guess and not waited else 0
        if len(self._running) + spare >= self.box_limit:
            self.counters.dropped["box"] += 1
            return False
        if self._sessions.get(session, 0) + spare >= MAX_SESSION:
            self.counters.dropped["session"] += 1
            return False
        self._running[key] = session
        self._sessions[session] = self._sessions.get(session, 0) + 1
        self._sessions.move_to_end(session)
        while len(self._sessions) > MAX_SESSIONS:
            oldest, running = next(iter(self._sessions.items()))
            if running > 0:
                break  # a session with fills in flight is never forgotten (at most box_limit of them)
            del self._sessions[oldest]
        self.counters.started += 1
        self.counters.guessed += guess
        return True

    def running(self, key: str) -> bool:
        return key in self._running

    def ended(self, key: str, stored: bool) -> tuple[str, str] | None:
        """The hint fill of `key` ended, stored or not; the guess that waited for it and its session, to start
        now (None when there is none, or the fill failed: its successor would most likely fail too)."""
        session = self._running.pop(key, None)
        if session is None:
            return None
        follow = self._parked.pop(key, None)
        left = self._sessions.get(session, 1) - 1
        if left > 0:
            self._sessions[session] = left
        else:
            self._sessions.pop(session, None)
        if not stored:
            self.counters.dropped["failed"] += 1
            return None
        self._expire()
        self._started[key] = self._clock()
        self._started.move_to_end(key)
        if len(self._started) > MAX_TRACKED:
            self._started.popitem(last=False)
            self.counters.dropped["unused"] += 1
        return None if follow is None else (follow, session)

    def joined(self, key: str, have: int, length: int | None) -> None:
        """A client asked for `key` while its hint fill was running, `have` of its `length` bytes in."""
        if key in self._running:
            self.counters.late += 1
            if length and have * 2 >= length:
                self.counters.late_most += 1

    def hits(self, keys: Iterable[str]) -> None:
        """Keys workers served as hits (their reports): a prefetched one was used."""
        if not self._started:
            return
        for key in keys:
            if self._started.pop(key, None) is not None:
                self.counters.used += 1
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - UNUSED_AFTER
        started = self._started
        while started:
            key, at = next(iter(started.items()))
            if at >= horizon:
                break
            del started[key]
            self.counters.dropped["unused"] += 1
