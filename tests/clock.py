"""The suite's one fake clock: every clock the code takes as an argument is this in tests, so time is moved by
the test, never waited for."""

from __future__ import annotations

START = 1_700_000_000.0  # a plausible epoch time (November 2023), for code that formats or compares dates


class FakeClock:
    """Called for the time in seconds, like time.time or time.monotonic. A test sets `now` or calls `advance`;
    code that sleeps is given `sleep` (or `async_sleep`), which moves the clock at once and records the wait."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
