"""Content-Type by file extension."""

from __future__ import annotations

import pytest

from oca.http.media import is_playlist, media_type


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("t/1/master.m3u8", "application/vnd.apple.mpegurl"),
        ("t/1/manifest.mpd", "application/dash+xml"),
        ("t/1/seg_00001.ts", "video/mp2t"),
        ("t/1/720p/seg_00001.m4s", "video/iso.segment"),
        ("t/1/movie.mp4", "video/mp4"),
        ("t/1/audio.m4a", "audio/mp4"),
        ("t/1/clip.m4v", "video/mp4"),
        ("t/1/audio.aac", "audio/aac"),
        ("t/1/subs_en.vtt", "text/vtt"),
        ("t/1/poster.jpg", "image/jpeg"),
        ("t/1/poster.jpeg", "image/jpeg"),
        ("t/1/poster.png", "image/png"),
        ("t/1/meta.json", "application/json"),
        ("t/1/video.cmfv", "video/mp4"),
        ("t/1/audio.cmfa", "audio/mp4"),
        ("t/1/trailer.webm", "video/webm"),
        # case-insensitive extension
        ("t/1/SEG_00001.M4S", "video/iso.segment"),
        ("t/1/Master.M3u8", "application/vnd.apple.mpegurl"),
        ("t/1/POSTER.JPG", "image/jpeg"),
        # unknown or missing extension
        ("t/1/readme.txt", "application/octet-stream"),
        ("t/1/init", "application/octet-stream"),
        ("t/1/file.", "application/octet-stream"),
        ("", "application/octet-stream"),
        ("t/1.m3u8/init", "application/octet-stream"),  # only the last segment counts
        ("t/1/.mp4", "application/octet-stream"),  # a dot-file has no extension
        ("t/1/seg.mp4.bak", "application/octet-stream"),
        ("t/1/archive.tar.mp4", "video/mp4"),
    ],
)
def test_media_type(key: str, expected: str) -> None:
    assert media_type(key) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("t/1/master.m3u8", True),
        ("t/1/720p/index.M3U8", True),
        ("t/1/manifest.mpd", True),
        ("t/1/seg_00001.m4s", False),
        ("t/1/seg_00001.ts", False),
        ("t/1/m3u8", False),
        ("t/1.mpd/seg.m4s", False),
        ("", False),
    ],
)
def test_is_playlist(key: str, expected: bool) -> None:
    assert is_playlist(key) is expected
