"""oca.lab.watchdog: a box that stops pinging its notify socket is reported once, and only once it was heard.

The pinging "box" here is this test, speaking sd_notify(3) through oca.systemd with the environment
the watchdog hands out, as a box's master does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from unittest import mock

import pytest

from oca import systemd
from oca.lab.watchdog import BoxWatchdog, overdue


@pytest.mark.parametrize("now, last, timeout, late", [
    (10.0, None, 2.0, False),  # not watched (never heard, or restarted)
    (10.0, 9.0, 2.0, False),
    (10.0, 7.9, 2.0, True),
])
def test_overdue(now: float, last: float | None, timeout: float, late: bool) -> None:
    assert overdue(now, last, timeout) is late


@pytest.fixture
def watchdog() -> Iterator[tuple[BoxWatchdog, list[str], threading.Event]]:
    killed: list[str] = []
    event = threading.Event()

    def on_overdue(box_id: str) -> None:
        killed.append(box_id)
        event.set()

    dog = BoxWatchdog(0.5, on_overdue)
    yield dog, killed, event
    dog.stop()


def _ping(env: dict[str, str], message: str = "WATCHDOG=1") -> None:
    with mock.patch.dict(os.environ, env):
        assert systemd.notify(message)


def test_a_box_that_stops_pinging_is_killed_once(watchdog: tuple[BoxWatchdog, list[str], threading.Event]) -> None:
    dog, killed, event = watchdog
    env = dog.register("a1")
    quiet = dog.register("a2")  # never says anything: not watched (its start-up timeout is the lab's)
    assert env["WATCHDOG_USEC"] == "500000" and env["NOTIFY_SOCKET"].startswith("@")
    with mock.patch.dict(os.environ, env):
        assert systemd.watchdog_interval() == 0.25  # the master pings at half the timeout
    dog.start()
    _ping(env, "READY=1")
    for _ in range(8):  # 1.2 s of pings every 150 ms: alive
        time.sleep(0.15)
        _ping(env)
    assert killed == []
    started = time.monotonic()
    assert event.wait(3.0), "no kill after the pings stopped"
    assert 0.4 <= time.monotonic() - started <= 1.5
    time.sleep(1.0)
    assert killed == ["a1"]  # once: not watched again until its next message
    assert [box for _, box in dog.kills] == ["a1"] and quiet


def test_a_disabled_watchdog_kills_nobody(watchdog: tuple[BoxWatchdog, list[str], threading.Event]) -> None:
    dog, killed, _ = watchdog
    env = dog.register("a1")
    dog.enabled = False
    dog.start()
    _ping(env)
    time.sleep(1.0)
    assert killed == []
