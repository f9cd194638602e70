"""oca.serve.backoff: the restart delay of a slot, from its streak of quick deaths and the clock (no loop)."""

from __future__ import annotations

import pytest

from oca.serve.backoff import Restart, restart_after


@pytest.mark.parametrize("streak, started, now, expected", [
    (0, 100.0, 160.0, Restart(0.0, 0)),  # lived a minute: restarted at once
    (4, 100.0, 160.0, Restart(0.0, 0)),  # a worker that lived ends the slot's crash loop
    (0, 100.0, 100.5, Restart(0.2, 1)),  # died at start: the first wait
    (1, 100.0, 100.5, Restart(0.4, 2)),  # and again: twice as long
    (3, 100.0, 101.999, Restart(1.6, 4)),  # just under QUICK is still a crash at start
    (3, 100.0, 102.0, Restart(0.0, 0)),  # QUICK itself is a worker that started fine
    (5, 100.0, 100.1, Restart(5.0, 6)),  # 6.4 s capped at LONGEST
    (40, 100.0, 100.1, Restart(5.0, 41)),  # however long the streak
])
def test_restart_delay(streak: int, started: float, now: float, expected: Restart) -> None:
    assert restart_after(streak, started, now) == expected


def test_a_crash_loop_backs_off_then_a_worker_that_starts_resets_it() -> None:
    streak, delays, now = 0, [], 1000.0
    for lived in (0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 30.0, 0.3):
        started, now = now, now + lived
        restart = restart_after(streak, started, now)
        streak = restart.streak
        delays.append(restart.delay)
        now += restart.delay
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 0.0, 0.2]
