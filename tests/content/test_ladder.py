"""The ladder, the title specs and the ffmpeg command lines: pure, no process started."""

from __future__ import annotations

import pytest

from oca.content import ladder
from oca.content.ladder import AUDIO, FPS, GOP, LADDER, SEGMENT_SECONDS


def test_ladder_is_360p_720p_1080p_with_modest_rates() -> None:
    assert [(r.id, r.width, r.height) for r in LADDER] == [("360p", 640, 360), ("720p", 1280, 720),
                                                            ("1080p", 1920, 1080)]
    assert [r.bitrate for r in LADDER] == sorted(r.bitrate for r in LADDER)
    assert all(r.bitrate <= 5_000_000 for r in LADDER)
    assert GOP == FPS * SEGMENT_SECONDS == 50


def test_titles_are_numbered_and_distinct() -> None:
    specs = ladder.title_specs(6, 30, synthetic=False)
    assert [s.id for s in specs] == ["1001", "1002", "1003", "1004", "1005", "1006"]
    assert len({s.pattern for s in specs}) == 6
    assert len({s.frequency for s in specs}) == 6
    assert specs[1].countries == ("NL",)
    assert all(not s.countries for i, s in enumerate(specs) if i != 1)


@pytest.mark.parametrize(("titles", "duration", "problem"), [
    (3, 30, None),
    (1, 4, None),
    (50, 600, None),
    (0, 30, "--titles must be between 1 and 50, got 0"),
    (51, 30, "--titles must be between 1 and 50, got 51"),
    (3, 1, "--duration must be between 4 and 600 seconds, got 1"),
    (3, 601, "--duration must be between 4 and 600 seconds, got 601"),
])
def test_check_request(titles: int, duration: int, problem: str | None) -> None:
    assert ladder.check_request(titles, duration) == problem


@pytest.mark.parametrize(("duration", "segments", "packets"), [(4, 2, 187), (6, 3, 281), (7, 4, 328), (30, 15, 1406)])
def test_audio_ends_in_the_last_video_segment(duration: int, segments: int, packets: int) -> None:
    assert ladder.segment_count(duration) == segments
    assert ladder.audio_packets(duration) == packets
    audio_seconds = packets * 1024 / AUDIO.sample_rate
    assert (segments - 1) * SEGMENT_SECONDS < audio_seconds <= duration


def _option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == name]


def test_encode_args_fix_the_gop_and_write_one_file_per_rendition() -> None:
    spec = ladder.title_specs(1, 8, synthetic=False)[0]
    args = ladder.encode_args("ffmpeg", spec, "/usr/share/fonts/x.ttf", ".work")
    assert args[0] == "ffmpeg"
    assert _option(args, "-g") == _option(args, "-keyint_min") == ["50"] * 3
    assert _option(args, "-sc_threshold") == ["0"] * 3
    assert _option(args, "-b:v") == ["800000", "2400000", "4500000"]
    assert _option(args, "-frames:a") == [str(ladder.audio_packets(8))]
    assert [a for a in args if a.startswith(".work/")] == [".work/360p.mp4", ".work/720p.mp4", ".work/1080p.mp4",
                                                          ".work/audio.mp4"]
    graph = _option(args, "-filter_complex")[0]
    assert graph.count("drawtext=") == 3 and "OCA 1001 720p" in graph and "%{pts\\:hms}" in graph
    assert "sine=frequency=440" in " ".join(args)


def test_no_font_no_text() -> None:
    spec = ladder.title_specs(1, 8, synthetic=False)[0]
    assert "drawtext" not in ladder.filter_graph(spec, None)


@pytest.mark.parametrize(("path", "safe"), [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf", True),
    ("/fonts/a:b.ttf", False),
    ("/fonts/it's.ttf", False),
    ("/fonts/a,b[c].ttf", False),
    ("relative.ttf", False),
    (None, False),
])
def test_safe_font(path: str | None, safe: bool) -> None:
    assert (ladder.safe_font(path) is not None) is safe


def test_package_args_copy_and_never_encode() -> None:
    args = ladder.package_args("ffmpeg", ".work")
    assert _option(args, "-c") == ["copy"] * 7
    assert "libx264" not in args and "aac" not in args
    assert _option(args, "-hls_segment_type") == ["fmp4"] * 4 + ["mpegts"] * 3
    outputs = [a for a in args if a.endswith("index.m3u8")]
    assert outputs == ["360p/index.m3u8", "720p/index.m3u8", "1080p/index.m3u8", "audio/index.m3u8",
                       "ts/360p/index.m3u8", "ts/720p/index.m3u8", "ts/1080p/index.m3u8"]
