"""The HLS multivariant playlist, read back with an independent parser (the m3u8 package) and a regex."""

from __future__ import annotations

import re

import m3u8
import pytest

from control.manifests import HlsTemplate, PathwayBase
from control.model import ORIGIN_PATHWAY, Rendition, Title
from control.steering import Pathway

TID = "81239481"
TITLE = Title(TID, (
    Rendition("1080p", "video", 6_000_000, "avc1.640028", (1920, 1080), 4_800_000, 25.0,
              f"titles/{TID}/1080p/index.m3u8"),
    Rendition("720p", "video", 3_000_000, "avc1.64001f", (1280, 720), 2_400_000, 29.97,
              f"titles/{TID}/720p/index.m3u8"),
    Rendition("mezzanine", "video", 50_000_000, "avc1.640033", (3840, 2160)),  # not packaged for HLS: skipped
    Rendition("aac", "audio", 128_000, "mp4a.40.2", average_bandwidth=120_000, playlist=f"titles/{TID}/aac/a.m3u8"),
    Rendition("ac3", "audio", 384_000, "ac-3", playlist=f"titles/{TID}/ac3/a.m3u8"),
    Rendition("en", "subtitles", 1_000, playlist=f"titles/{TID}/en/subs.m3u8"),
), ())
PATHWAYS = [Pathway("lon-2", "lon", "http://lon-2.test:8080"), Pathway("lon-1", "lon", "http://lon-1.test:8080"),
            Pathway("fra-1", "fra", "http://fra-1.test:8080"), Pathway(ORIGIN_PATHWAY, None, "http://origin.test")]
BASES = [PathwayBase.of(p, "TOKEN") for p in PATHWAYS[:-1]] + [PathwayBase.of(PATHWAYS[-1], None)]
STEER = "http://control.test/v1/steer/s-123?title=81239481&x=1"


def render() -> str:
    return HlsTemplate.build(TITLE).render(BASES, STEER)


def test_it_parses_as_a_multivariant_playlist_with_the_steering_tag() -> None:
    text = render()
    playlist = m3u8.loads(text)
    assert playlist.is_variant
    assert playlist.version == 6
    assert playlist.is_independent_segments
    assert playlist.content_steering is not None
    assert (playlist.content_steering.uri, playlist.content_steering.pathway_id) == (STEER, "lon-2")


def test_the_steering_tag_attribute_list_read_by_a_regex() -> None:
    lines = [line for line in render().splitlines() if line.startswith("#EXT-X-CONTENT-STEERING:")]
    assert len(lines) == 1
    attributes = dict(re.findall(r'([A-Z0-9-]+)=(?:"([^"]*)"|[^,]*)', lines[0].split(":", 1)[1]))
    assert attributes == {"SERVER-URI": STEER, "PATHWAY-ID": "lon-2"}


def test_every_pathway_has_the_full_set_of_variants() -> None:
    playlist = m3u8.loads(render())
    by_pathway: dict[str, list[str]] = {}
    for variant in playlist.playlists:
        by_pathway.setdefault(variant.stream_info.pathway_id, []).append(variant.stream_info.stable_variant_id)
    assert list(by_pathway) == ["lon-2", "lon-1", "fra-1", ORIGIN_PATHWAY]  # priority order kept
    assert all(ids == ["1080p", "720p"] for ids in by_pathway.values())


def test_variant_uris_are_absolute_on_their_own_pathway_and_carry_the_token() -> None:
    playlist = m3u8.loads(render())
    expected = {"lon-2": "http://lon-2.test:8080/t/TOKEN/", "lon-1": "http://lon-1.test:8080/t/TOKEN/",
                "fra-1": "http://fra-1.test:8080/t/TOKEN/", ORIGIN_PATHWAY: "http://origin.test/"}
    for variant in playlist.playlists:
        rendition = variant.stream_info.stable_variant_id
        assert variant.uri == f"{expected[variant.stream_info.pathway_id]}titles/{TID}/{rendition}/index.m3u8"


def test_variant_attributes_cover_the_audio_they_play_with() -> None:
    first = m3u8.loads(render()).playlists[0].stream_info
    assert first.bandwidth == 6_000_000 + 384_000  # the largest audio peak
    assert first.average_bandwidth == 4_800_000 + 384_000  # ac3 has no average: its peak stands in
    assert first.codecs == "avc1.640028,mp4a.40.2,ac-3"
    assert first.resolution == (1920, 1080)
    assert first.frame_rate == pytest.approx(25.0)
    assert m3u8.loads(render()).playlists[1].stream_info.frame_rate == pytest.approx(29.97)


def test_alternate_renditions_are_grouped_per_pathway() -> None:
    playlist = m3u8.loads(render())
    audio = [m for m in playlist.media if m.type == "AUDIO"]
    subtitles = [m for m in playlist.media if m.type == "SUBTITLES"]
    assert len(audio) == 2 * 4 and len(subtitles) == 4
    for variant in playlist.playlists:
        pathway = variant.stream_info.pathway_id
        assert variant.stream_info.audio == f"aud.{pathway}"
        assert variant.stream_info.subtitles == f"sub.{pathway}"
        group = [m for m in audio if m.group_id == f"aud.{pathway}"]
        assert [m.stable_rendition_id for m in group] == ["aac", "ac3"]
        assert [m.default for m in group] == ["YES", "NO"]
        host = variant.uri.split("/titles/")[0]
        assert all(m.uri.startswith(host + "/titles/") for m in group)
    assert {m.stable_rendition_id for m in subtitles} == {"en"}


def test_an_audio_only_title_lists_its_audio_as_variants() -> None:
    title = Title("a1", (Rendition("aac", "audio", 128_000, "mp4a.40.2", playlist="titles/a1/aac/a.m3u8"),), ())
    playlist = m3u8.loads(HlsTemplate.build(title).render(BASES[:1], STEER))
    assert [(v.stream_info.stable_variant_id, v.stream_info.audio) for v in playlist.playlists] == [("aac", None)]
    assert playlist.media == []


def test_rendition_ids_outside_the_stable_id_alphabet_are_cleaned_and_kept_unique() -> None:
    title = Title("t", (Rendition("720p@hi", "video", 1, playlist="titles/t/720p@hi/i.m3u8"),
                        Rendition("720p!hi", "video", 2, playlist="titles/t/720p!hi/i.m3u8")), ())
    playlist = m3u8.loads(HlsTemplate.build(title).render(BASES[:1], STEER))
    assert [v.stream_info.stable_variant_id for v in playlist.playlists] == ["720p-hi", "720p-hi.2"]


@pytest.mark.parametrize(("bases", "uri", "words"), [
    ([], STEER, "no pathway"),
    ([PathwayBase("a b", "http://x")], STEER, "pathway id 'a b'"),
    ([PathwayBase("a", "http://x"), PathwayBase("a", "http://y")], STEER, "listed twice"),
    ([PathwayBase("a", 'http://x"')], STEER, "base URL"),
    (BASES, 'http://control.test/"evil"', "steering URI"),
    (BASES, "", "steering URI"),
])
def test_bad_render_arguments_raise_value_error(bases: list[PathwayBase], uri: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        HlsTemplate.build(TITLE).render(bases, uri)


def test_a_title_with_nothing_packaged_for_hls_is_refused() -> None:
    with pytest.raises(ValueError, match="no rendition with an HLS playlist"):
        HlsTemplate.build(Title("x", (Rendition("mezz", "video", 1),), ()))


def test_pathway_base_puts_the_token_in_the_path() -> None:
    assert PathwayBase.of(Pathway("b", "s", "http://b:8080/"), "J.W.T").base_url == "http://b:8080/t/J.W.T"
    assert PathwayBase.of(Pathway("origin", None, "http://o"), None).base_url == "http://o"
