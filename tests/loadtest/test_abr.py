"""The simulated devices' ABR and buffer model: pure, table-driven, no event loop."""

from __future__ import annotations

import pytest

from loadtest.devices.abr import Abr, AbrConfig, Playback

LADDER = [58_000, 158_000, 289_248]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], None),
        ([(1000, 1.0)], 8000.0),
        # weights 1, 2: (1*8000 + 2*16000) / 3
        ([(1000, 1.0), (2000, 1.0)], 40000 / 3),
    ],
)
def test_estimate_weights_recent_samples(samples: list[tuple[int, float]], expected: float | None) -> None:
    abr = Abr(LADDER)
    for nbytes, seconds in samples:
        abr.add_sample(nbytes, seconds)
    assert abr.estimate() == (pytest.approx(expected) if expected is not None else None)


def test_estimate_keeps_only_last_n() -> None:
    abr = Abr(LADDER, AbrConfig(samples=2))
    for bps in (1e9, 1e3, 1e3):
        abr.add_sample(int(bps / 8), 1.0)
    assert abr.estimate() == pytest.approx(1e3)


@pytest.mark.parametrize(
    ("throughput_bps", "expected"),
    [
        (50_000, 0),  # nothing fits: the lowest
        (158_000 / 0.75 + 8, 1),  # at the 75% margin
        (158_000 / 0.75 - 8, 0),  # just under
        (289_248 / 0.75 + 8, 2),
        (10_000_000, 2),
    ],
)
def test_candidate_uses_safety_margin(throughput_bps: float, expected: int) -> None:
    abr = Abr(LADDER)
    abr.add_sample(round(throughput_bps), 8.0)  # bytes*8/8s = throughput_bps
    assert abr.candidate() == expected


@pytest.mark.parametrize(
    ("buffer_s", "started", "state"),
    [(0.0, False, "startup"), (20.0, False, "startup"), (1.0, True, "depleted"), (3.99, True, "depleted"),
     (4.0, True, "steady"), (30.0, True, "steady")],
)
def test_states(buffer_s: float, started: bool, state: str) -> None:
    assert Abr(LADDER).state(buffer_s, started) == state


def test_startup_is_lowest_then_steady_switches_up_and_holds_30s() -> None:
    abr = Abr(LADDER)
    abr.add_sample(10_000_000, 1.0)  # 80 Mb/s
    assert abr.choose(0.0, 0.0, playing_started=False) == 0
    # steady, never switched: up at once
    assert abr.choose(1.0, 10.0, playing_started=True) == 2
    # throughput collapses, but the buffer is fine: held for the 30 s window
    for _ in range(5):
        abr.add_sample(1000, 1.0)
    steps = [(10.0, 2), (30.9, 2), (31.0, 0)]
    for now, expected in steps:
        assert abr.choose(now, 10.0, playing_started=True) == expected, now


def test_depleted_drops_immediately_inside_window() -> None:
    abr = Abr(LADDER)
    abr.add_sample(10_000_000, 1.0)
    assert abr.choose(0.0, 10.0, playing_started=True) == 2
    # still fast, but the buffer is depleted: one step down at least, no window
    assert abr.choose(1.0, 2.0, playing_started=True) == 1
    assert abr.choose(2.0, 1.0, playing_started=True) == 0
    assert abr.choose(3.0, 0.0, playing_started=True) == 0


def test_switch_up_held_after_a_drop() -> None:
    abr = Abr(LADDER)
    abr.add_sample(10_000_000, 1.0)
    abr.choose(0.0, 10.0, True)
    abr.choose(1.0, 1.0, True)  # drop to 1 at t=1
    assert abr.choose(20.0, 10.0, True) == 1  # up is held
    assert abr.choose(31.0, 10.0, True) == 2


def test_rejects_bad_ladders() -> None:
    with pytest.raises(ValueError):
        Abr([])
    with pytest.raises(ValueError):
        Abr([2, 1])


# (event, time, arg): "add" media seconds, "adv" only advances the clock
@pytest.mark.parametrize(
    ("events", "startup", "stall_time", "play_time", "stalls"),
    [
        # 2 s segment at t=0.5: plays; the next at 2.5 keeps it going; drained by 4.5; total 4 s: ended, no stall
        ([("add", 0.5, 2.0), ("add", 2.5, 2.0), ("adv", 10.0, 0)], 0.5, 0.0, 4.0, 0),
        # second segment late: dry at 2.5, back at 3.5 -> 1 s stall
        ([("add", 0.5, 2.0), ("add", 3.5, 2.0), ("adv", 3.5, 0)], 0.5, 1.0, 2.0, 1),
        # stall ongoing counts up to now
        ([("add", 1.0, 2.0), ("adv", 5.0, 0)], 1.0, 2.0, 2.0, 1),
        # nothing yet: no startup, no ratio
        ([("adv", 5.0, 0)], None, 0.0, 0.0, 0),
    ],
)
def test_playback_accounting(events: list[tuple[str, float, float]], startup: float | None, stall_time: float,
                             play_time: float, stalls: int) -> None:
    pb = Playback(started_at=0.0, total_media=6.0 if stalls or startup is None else 4.0)
    for kind, now, arg in events:
        if kind == "add":
            pb.add_media(arg, now)
        else:
            pb.advance(now)
    assert pb.startup_time == (pytest.approx(startup) if startup is not None else None)
    assert pb.stall_time == pytest.approx(stall_time)
    assert pb.play_time == pytest.approx(play_time)
    assert len(pb.stalls) == stalls
    total = play_time + stall_time
    assert pb.rebuffer_ratio() == pytest.approx(stall_time / total if total else 0.0)


def test_stall_start_and_end_recorded() -> None:
    pb = Playback(started_at=0.0, total_media=10.0)
    pb.add_media(2.0, 1.0)
    pb.add_media(2.0, 4.0)  # dry at 3.0, resumes at 4.0
    assert [(s.start, s.end) for s in pb.stalls] == [(3.0, 4.0)]
    assert not pb.stalled and pb.playing
