"""Playlists and MPD written from measured renditions: pure, read back with the m3u8 package and ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import m3u8
import pytest

from oca.content.manifests import (
    DASH_NS,
    Packaged,
    Segment,
    avc_codec,
    master_playlist,
    media_playlist,
    mpd,
    parse_media_playlist,
    ts_master_playlist,
)

NS = {"d": DASH_NS}


def _video(rid: str, width: int, height: int, sizes: list[int]) -> Packaged:
    segments = tuple(Segment(f"seg_{i:05d}.m4s", 2.0 if i < len(sizes) else 1.0, size)
                     for i, size in enumerate(sizes, 1))
    return Packaged(rid, "video", f"{rid}/index.m3u8", "avc1.42c01e", segments, "init.mp4", width, height, 25.0)


AUDIO = Packaged("audio", "audio", "audio/index.m3u8", "mp4a.40.2",
                 (Segment("seg_00001.m4s", 2.005333, 32_000), Segment("seg_00002.m4s", 2.005333, 32_100),
                  Segment("seg_00003.m4s", 0.989333, 16_000)), "init.mp4", sample_rate=48_000, channels=2)
VIDEO = [_video("1080p", 1920, 1080, [1_000_000, 1_200_000, 400_000]),
         _video("360p", 640, 360, [200_000, 250_000, 90_000])]


def test_rates_are_measured() -> None:
    v = VIDEO[1]
    assert v.peak_bitrate == 250_000 * 8 // 2
    assert v.average_bitrate == (200_000 + 250_000 + 90_000) * 8 // 5
    assert v.duration == 5.0


def test_master_playlist_lists_variants_lowest_first_with_audio_group() -> None:
    playlist = m3u8.loads(master_playlist(VIDEO, AUDIO))
    assert playlist.is_variant
    assert [p.uri for p in playlist.playlists] == ["360p/index.m3u8", "1080p/index.m3u8"]
    low = playlist.playlists[0].stream_info
    assert low.bandwidth == VIDEO[1].peak_bitrate + AUDIO.peak_bitrate
    assert low.average_bandwidth == VIDEO[1].average_bitrate + AUDIO.average_bitrate
    assert low.codecs == "avc1.42c01e,mp4a.40.2"
    assert low.resolution == (640, 360) and low.frame_rate == 25.0 and low.audio == "aud"
    (audio,) = playlist.media
    assert (audio.type, audio.group_id, audio.uri, audio.default) == ("AUDIO", "aud", "audio/index.m3u8", "YES")


def test_ts_master_is_relative_to_ts_directory() -> None:
    ts = [Packaged("ts/360p", "video", "ts/360p/index.m3u8", "avc1.42c01e,mp4a.40.2", VIDEO[1].segments,
                   width=640, height=360, frame_rate=25.0)]
    playlist = m3u8.loads(ts_master_playlist(ts))
    assert [p.uri for p in playlist.playlists] == ["360p/index.m3u8"]
    assert not playlist.media


def test_mpd_timeline_adds_up_and_names_the_hls_files() -> None:
    root = ET.fromstring(mpd(VIDEO, AUDIO))
    assert root.tag == f"{{{DASH_NS}}}MPD" and root.get("type") == "static"
    assert root.get("mediaPresentationDuration") == "PT5.000S"
    video_set, audio_set = root.findall("d:Period/d:AdaptationSet", NS)
    assert [r.get("id") for r in video_set.findall("d:Representation", NS)] == ["360p", "1080p"]
    assert [s.attrib for s in video_set.findall("d:SegmentTemplate/d:SegmentTimeline/d:S", NS)] == [
        {"t": "0", "d": "2000", "r": "1"}, {"d": "1000"}]
    audio_durations = [int(s.get("d", "0")) for s in audio_set.findall("d:SegmentTemplate/d:SegmentTimeline/d:S", NS)]
    assert audio_durations == [2005, 2006, 989]  # rounded on the running total: 2005, 4011, 5000
    template = audio_set.find("d:SegmentTemplate", NS)
    assert template is not None and template.get("media") == "$RepresentationID$/seg_$Number%05d$.m4s"


def test_media_playlist_round_trips() -> None:
    text = media_playlist(VIDEO[0].segments, "init.mp4")
    assert parse_media_playlist(text, "x") == ("init.mp4", [(s.uri, s.duration) for s in VIDEO[0].segments])
    parsed = m3u8.loads(text)
    assert parsed.is_endlist and parsed.target_duration == 2


@pytest.mark.parametrize("text", ["", "#EXTM3U\nseg.m4s\n#EXT-X-ENDLIST\n", "#EXTM3U\n#EXTINF:2,\nseg.m4s\n"])
def test_parse_media_playlist_refuses_odd_playlists(text: str) -> None:
    with pytest.raises(ValueError):
        parse_media_playlist(text, "x")


def test_avc_codec_reads_the_avcc_box() -> None:
    box = b"\x00\x00\x00\x30avcC\x01\x64\x00\x1f\xff"
    assert avc_codec(b"....stsd" + box) == "avc1.64001f"
    assert avc_codec(b"no such box") is None
