"""The content progress lines: the time-left estimate, a title's share of the work, the line's wording, and how
often `ContentProgress` speaks (a line per step change, one per interval while a title encodes), on a fake clock."""

from __future__ import annotations

import pytest

from oca.content.progress import ENCODE_SHARE, ContentProgress, progress_line, seconds_left, title_work
from tests.clock import FakeClock


@pytest.mark.parametrize(("elapsed", "done", "total", "left"), [
    (10.0, 0.0, 90.0, None),      # nothing done yet: no estimate
    (0.0, 5.0, 90.0, None),       # no time passed: no estimate
    (10.0, 30.0, 90.0, 20.0),     # a third in 10 s: 20 s more
    (40.0, 45.0, 90.0, 40.0),
    (12.0, 90.0, 90.0, 0.0),      # all done
    (12.0, 95.0, 90.0, 0.0),      # over-reported: still done
    (5.0, 0.0, 0.0, 0.0),         # nothing to do (every title reused)
])
def test_seconds_left(elapsed: float, done: float, total: float, left: float | None) -> None:
    assert seconds_left(elapsed, done, total) == (None if left is None else pytest.approx(left))


@pytest.mark.parametrize(("step", "media", "duration", "work"), [
    ("", 0.0, 30.0, 0.0),
    ("encoding", 0.0, 30.0, 0.0),
    ("encoding", 15.0, 30.0, 15.0 * ENCODE_SHARE),
    ("encoding", 45.0, 30.0, 30.0 * ENCODE_SHARE),   # ffmpeg's out_time past the end counts as the end
    ("encoding", -1.0, 30.0, 0.0),
    ("packaging", 30.0, 30.0, 30.0 * ENCODE_SHARE),
    ("done", 0.0, 30.0, 30.0),
    ("reused", 30.0, 30.0, 0.0),
])
def test_title_work(step: str, media: float, duration: float, work: float) -> None:
    assert title_work(step, media, duration) == pytest.approx(work)


@pytest.mark.parametrize(("args", "line"), [
    ((2, 3, "1002", "encoding", 14.6, 30.0, 52.2, 40.4),
     "content: title 2/3 (1002): encoding 360p/720p/1080p + audio, 14/30 s of media, 52 s so far, about 40 s left"),
    ((1, 3, "1001", "encoding", 0.0, 30.0, 0.3, None),
     "content: title 1/3 (1001): encoding 360p/720p/1080p + audio, 0/30 s of media, 0 s so far, "
     "estimating time left"),
    ((1, 1, "1001", "packaging", 30.0, 30.0, 130.0, 10.0),
     "content: title 1/1 (1001): packaging HLS fMP4, HLS TS, DASH, 2 min 10 s so far, about 10 s left"),
    ((3, 3, "1003", "done", 90.0, 90.0, 250.0, 0.0), "content: title 3/3 (1003): made, 4 min 10 s so far"),
    ((1, 3, "1001", "done", 90.0, 90.0, 83.0, 166.0),
     "content: title 1/3 (1001): made, 83 s so far, about 2 min 46 s left"),
])
def test_progress_line(args: tuple[int, int, str, str, float, float, float, float | None], line: str) -> None:
    assert progress_line(*args) == line


def test_a_line_per_step_and_one_per_interval_while_encoding() -> None:
    clock, lines = FakeClock(100.0), []
    shown = ContentProgress(2, 30, lines.append, interval=10.0, clock=clock)
    shown.step("1001", "encoding")
    for second in range(1, 31):  # ffmpeg reports many times a second; here once per media second, 1 s apart
        clock.now += 1.0
        shown.media("1001", float(second))
    shown.step("1001", "packaging")
    clock.now += 2.0
    shown.media("1001", 30.0)  # make_content's last report, after the packaging: no line of its own
    shown.step("1001", "done")
    assert [line.split(": ", 2)[2].split(",")[0] for line in lines] == [
        "encoding 360p/720p/1080p + audio", "encoding 360p/720p/1080p + audio", "encoding 360p/720p/1080p + audio",
        "encoding 360p/720p/1080p + audio", "packaging HLS fMP4", "made"]
    assert lines[0].endswith("estimating time left")
    assert "10/30 s of media, 10 s so far, about 57 s left" in lines[1]  # 9 of 60 units in 10 s: 10 x 51/9
    assert lines[-1] == "content: title 1/2 (1001): made, 32 s so far, about 32 s left"  # one title of two
    shown.step("1002", "encoding")
    assert lines[-1].startswith("content: title 2/2 (1002): encoding")


def test_reused_titles_are_no_work_and_not_counted() -> None:
    clock, lines = FakeClock(100.0), []
    shown = ContentProgress(3, 30, lines.append, clock=clock)
    shown.step("1001", "reused")
    shown.step("1002", "reused")
    assert lines == []
    clock.now += 8.0
    shown.step("1003", "done")  # a synthetic title: no encode, only its end
    assert lines == ["content: title 1/1 (1003): made, 8 s so far"]


def test_media_before_any_step_says_nothing() -> None:
    lines: list[str] = []
    shown = ContentProgress(1, 4, lines.append, clock=FakeClock(100.0))
    shown.media("1001", 4.0)
    assert lines == []
