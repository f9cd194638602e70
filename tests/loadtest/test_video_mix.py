"""The video mix is what player sessions over a title request, with the shares they request it in (no servers)."""

from __future__ import annotations

import collections
import json
import os
from fractions import Fraction

import pytest

from loadtest.bench import BenchError, place_video_mix, video_title
from loadtest.video_mix import (
    AUDIO,
    INIT,
    MASTER,
    PLAYLIST,
    VIDEO,
    SessionModel,
    build_mix,
    load_title,
    render_summary,
)
from oca.content.make import make_content

MASTER_TEXT = """\
#EXTM3U
#EXT-X-VERSION:7
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",DEFAULT=YES,URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=5000000,CODECS="avc1.42c028,mp4a.40.2",AUDIO="aud"
1080p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1000000,CODECS="avc1.42c01e,mp4a.40.2",AUDIO="aud"
360p/index.m3u8
"""


def media_playlist(segments: int) -> str:
    body = "".join(f"#EXTINF:2.0,\nseg_{i:05d}.m4s\n" for i in range(1, segments + 1))
    return ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n"
            f"{body}#EXT-X-ENDLIST\n")


SEGMENTS = 4
PLAYLISTS = {"master.m3u8": MASTER_TEXT, **{f"{r}/index.m3u8": media_playlist(SEGMENTS)
                                             for r in ("audio", "360p", "1080p")}}
SIZES = {"master.m3u8": 400, **{f"{r}/index.m3u8": 300 for r in ("audio", "360p", "1080p")},
         **{f"{r}/init.mp4": 800 for r in ("audio", "360p", "1080p")},
         **{f"audio/seg_{i:05d}.m4s": 32_000 for i in range(1, SEGMENTS + 1)},
         **{f"360p/seg_{i:05d}.m4s": 200_000 + i for i in range(1, SEGMENTS + 1)},
         **{f"1080p/seg_{i:05d}.m4s": 1_100_000 + i for i in range(1, SEGMENTS + 1)}}


def weights(model: SessionModel) -> dict[str, Fraction]:
    mix = build_mix("titles/7", "master.m3u8", PLAYLISTS, SIZES, model)
    return {entry.key.removeprefix("titles/7/"): entry.weight for entry in mix.entries}


def test_a_vod_session_without_startup_requests_every_object_once_or_by_rung_share() -> None:
    w = weights(SessionModel(startup_segments=0, rung_weights=(1, 1), reload_playlists=False))
    assert w["master.m3u8"] == 1
    assert (w["audio/index.m3u8"], w["audio/init.mp4"], w["audio/seg_00001.m4s"]) == (1, 1, 1)
    # half the sessions play 360p, half 1080p: each variant's playlist, init and segments at 1/2
    assert {w[f"{r}/{f}"] for r in ("360p", "1080p") for f in ("index.m3u8", "init.mp4", "seg_00004.m4s")} \
        == {Fraction(1, 2)}
    assert len(w) == 1 + 3 * (2 + SEGMENTS)


def test_startup_plays_the_lowest_variant_first_then_the_rungs_share_the_rest() -> None:
    w = weights(SessionModel(startup_segments=1, rung_weights=(3, 1), reload_playlists=False))
    # variants are ordered by BANDWIDTH, not by their order in the master: 360p is the lowest
    assert (w["360p/index.m3u8"], w["360p/init.mp4"], w["360p/seg_00001.m4s"]) == (1, 1, 1)
    assert w["360p/seg_00002.m4s"] == Fraction(3, 4)
    assert "1080p/seg_00001.m4s" not in w  # nobody plays the first segment at 1080p
    assert (w["1080p/index.m3u8"], w["1080p/init.mp4"], w["1080p/seg_00002.m4s"]) == (Fraction(1, 4),) * 3


def test_reloads_fetch_the_active_playlists_once_per_segment_played() -> None:
    w = weights(SessionModel(startup_segments=1, rung_weights=(1, 1), reload_playlists=True))
    assert w["audio/index.m3u8"] == 1 + SEGMENTS
    # 360p: loaded once at start, then after its startup segment and half of the other three
    assert w["360p/index.m3u8"] == 1 + 1 + Fraction(3, 2)
    assert w["1080p/index.m3u8"] == Fraction(1, 2) + Fraction(3, 2)
    assert w["master.m3u8"] == 1


def test_request_lines_reproduce_the_shares_exactly_with_the_fewest_lines() -> None:
    mix = build_mix("titles/7", "master.m3u8", PLAYLISTS, SIZES,
                    SessionModel(startup_segments=1, rung_weights=(1, 1), reload_playlists=True))
    lines = mix.request_lines()
    counts = collections.Counter(lines)
    total = mix.requests_per_session
    for entry in mix.entries:
        assert Fraction(counts[entry.key], len(lines)) == entry.weight / total
    assert len(lines) == total * 2  # halves are the finest share here


def test_summary_groups_kinds_with_counts_size_ranges_and_shares() -> None:
    mix = build_mix("titles/7", "master.m3u8", PLAYLISTS, SIZES,
                    SessionModel(startup_segments=0, rung_weights=(1, 1), reload_playlists=False))
    lines = {line.kind: line for line in mix.summary()}
    assert set(lines) == {MASTER, PLAYLIST, INIT, AUDIO, f"{VIDEO} 360p", f"{VIDEO} 1080p"}
    assert (lines[PLAYLIST].objects, lines[INIT].objects, lines[AUDIO].objects) == (3, 3, SEGMENTS)
    assert (lines[f"{VIDEO} 360p"].min_size, lines[f"{VIDEO} 360p"].max_size) == (200_001, 200_004)
    # master; playlists and inits: audio's, plus half a session each at 360p and 1080p; audio; video (halves)
    requests = 1 + 2 + 2 + SEGMENTS + SEGMENTS
    assert lines[AUDIO].request_share == pytest.approx(SEGMENTS / requests)
    assert sum(line.request_share for line in lines.values()) == pytest.approx(1)
    assert sum(line.byte_share for line in lines.values()) == pytest.approx(1)
    table = render_summary(mix)
    assert table.splitlines()[0].startswith("| kind | objects | size range |")
    assert "| audio segment | 4 | 31.2 KiB |" in table


def test_bad_rung_weights_and_missing_files_are_named() -> None:
    with pytest.raises(ValueError, match="2 video variants"):
        build_mix("titles/7", "master.m3u8", PLAYLISTS, SIZES, SessionModel(rung_weights=(1, 1, 1)))
    sizes = dict(SIZES)
    del sizes["1080p/seg_00003.m4s"]
    with pytest.raises(ValueError, match=r"1080p/seg_00003\.m4s"):
        build_mix("titles/7", "master.m3u8", PLAYLISTS, sizes)


def test_load_title_reads_the_playlists_and_the_size_of_every_file_they_name(tmp_path: object) -> None:
    root = str(tmp_path)
    for path, size in SIZES.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)) or root, exist_ok=True)
        with open(os.path.join(root, path), "wb") as fh:
            fh.write(PLAYLISTS[path].encode() if path in PLAYLISTS else b"x" * size)
    playlists, sizes = load_title(root)
    assert playlists == PLAYLISTS
    assert sizes == {p: len(PLAYLISTS[p].encode()) if p in PLAYLISTS else s for p, s in SIZES.items()}


def test_the_mix_of_a_title_from_oca_content_make_covers_every_rendition(tmp_path: object) -> None:
    # the synthetic title has the layout and playlists of an encoded one (only the segment bytes differ):
    # this pins the mix to what `oca content make` really writes
    media = str(tmp_path)
    make_content(media, 1, 6, synthetic=True)
    with open(os.path.join(media, "catalog.json"), encoding="utf-8") as fh:
        catalog = json.load(fh)
    with pytest.raises(BenchError, match="synthetic"):
        video_title(catalog, media)
    catalog["titles"][0]["synthetic"] = False
    title, master = video_title(catalog, media)
    assert (title, master) == ("titles/1001", "master.m3u8")
    mix = place_video_mix(media, title, master, os.path.join(media, "copy"))
    kinds = {line.kind: line for line in mix.summary()}
    assert set(kinds) == {MASTER, PLAYLIST, INIT, AUDIO, *(f"{VIDEO} {r}" for r in ("360p", "720p", "1080p"))}
    assert (kinds[PLAYLIST].objects, kinds[INIT].objects, kinds[AUDIO].objects) == (4, 4, 3)
    for entry in mix.entries:
        assert os.path.getsize(os.path.join(media, "copy", entry.key)) == entry.size
