"""How long the master waits before it restarts a worker that died. Pure: every time is passed in.

Rules kept here:
- A worker that dies less than QUICK seconds after it started crashed at start (a broken config, a
  release that cannot import, a disk that fails at once); those deaths of one slot in a row are its streak.
  A worker that lived longer ends the streak: it started fine, so its death is not a crash loop.
- A worker that lived is restarted at once, so a box loses a slot for as little time as it can; one in a
  crash loop waits FIRST * 2^streak seconds, at most LONGEST, so a slot that cannot start does not spin
  a core on spawning Python processes nor flood the log.
- The state kept per slot is one number (the streak), whatever the number of deaths.
"""

from __future__ import annotations

from dataclasses import dataclass

QUICK = 2.0  # seconds: a worker dead sooner than this after it started crashed at start
FIRST = 0.1  # seconds: the shortest wait (the streak's first death waits twice this)
LONGEST = 5.0  # seconds: the longest wait, however long the streak


@dataclass(frozen=True)
class Restart:
    delay: float  # seconds until the slot's next worker starts
    streak: int  # the slot's quick deaths in a row, this one included (0: this worker lived)


def restart_after(streak: int, started: float, now: float) -> Restart:
    """The restart of a slot whose worker, started at `started`, is found dead at `now` (monotonic seconds),
    `streak` being the slot's quick deaths in a row before this one."""
    streak = streak + 1 if now - started < QUICK else 0
    return Restart(min(LONGEST, FIRST * 2 ** streak) if streak else 0.0, streak)
