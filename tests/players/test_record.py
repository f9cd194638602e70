"""What the player tests compute from a page's record: stalls and the fragments since a moment. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from tests.players.browser import Record


def _record(samples: list[tuple[float, float]], *, first_playing: float | None = 0.0, paused_at: float = -1,
            ended_from: float = 1e9, waiting: list[list[Any]] | None = None) -> Record:
    rows = [[t, current, t == paused_at, t >= ended_from, 4, current + 4] for t, current in samples]
    return Record({"firstPlaying": first_playing, "samples": rows, "waiting": waiting or [], "fragments": [
        {"t": 150.0, "start": 100.0, "url": "http://b1/x.m4s"}, {"t": 400.0, "start": 300.0, "url": "http://b2/y.m4s"},
    ]})


@pytest.mark.parametrize(("samples", "kwargs", "expected"), [
    ([(0, 0.0), (100, 0.1), (200, 0.2)], {}, (0, 0.0)),  # always advancing
    ([(0, 0.0), (100, 0.1), (200, 0.1), (300, 0.1), (400, 0.2)], {}, (100, 200.0)),  # frozen 100..300
    ([(0, 0.0), (100, 0.1), (200, 0.1), (300, 0.2), (400, 0.2), (500, 0.2), (600, 0.2)], {}, (300, 300.0)),
    # not yet playing, paused, ended: not stalls
    ([(0, 0.0), (100, 0.0), (200, 0.0), (300, 0.1)], {"first_playing": 250.0}, (250, 0.0)),
    ([(0, 0.0), (100, 0.1), (200, 0.1), (300, 0.1), (400, 0.1), (500, 0.2)], {"paused_at": 200}, (300, 100.0)),
    ([(0, 0.0), (100, 0.1), (200, 0.1), (300, 0.1)], {"ended_from": 200}, (0, 0.0)),
    ([(0, 0.0), (100, 0.0)], {"first_playing": None}, (float("inf"), 0.0)),
])
def test_longest_stall(samples: list[tuple[float, float]], kwargs: dict[str, Any],
                       expected: tuple[float, float]) -> None:
    assert _record(samples, **kwargs).longest_stall() == expected


def test_longest_waiting_counts_an_open_interval_to_the_last_sample() -> None:
    record = _record([(0, 0.0), (900, 0.5)], waiting=[[100, 250], [500, None]])
    assert record.waiting_ms() == 400
    assert record.waiting_ms(since=600) == 0


def test_fragments_since_go_by_when_they_were_requested() -> None:
    record = _record([(0, 0.0)])
    assert record.fragments(since=120) == [(300.0, "http://b2/y.m4s")]
    assert [url for _, url in record.fragments()] == ["http://b1/x.m4s", "http://b2/y.m4s"]
