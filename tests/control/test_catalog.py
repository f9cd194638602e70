"""Catalog ingest: a synthetic HLS + DASH title from a directory and from an origin URL; bad packages refused."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest
import xxhash
from aiohttp import web

from control.catalog import ingest_source, title_from_json, title_to_json
from control.catalog.dash import parse_duration, parse_mpd
from control.catalog.hls import parse_attributes
from oca.errors import BadRequest, NotFound
from tests.control.fixtures import SEGMENTS, VARIANTS, package_files, write_package


def _check_title(title: Any, files: dict[str, bytes]) -> None:
    assert title.id == "42"
    assert {f.path for f in title.files} == {f"titles/42/{rel}" for rel in files}
    for f in title.files:
        data = files[f.path.removeprefix("titles/42/")]
        assert f.size == len(data) and f.digest == xxhash.xxh3_128_hexdigest(data)
    assert title.hls_master == "titles/42/master.m3u8" and title.dash_manifest == "titles/42/manifest.mpd"
    by_id = {r.id: r for r in title.renditions}
    assert set(by_id) == {name for name, _, _ in VARIANTS} | {"audio"}
    v720 = by_id["720p"]
    assert (v720.kind, v720.bandwidth, v720.resolution, v720.frame_rate) == ("video", 2_500_000, (1280, 720), 25.0)
    assert v720.codecs == "avc1.4d401f,mp4a.40.2" and v720.average_bandwidth == 2_250_000
    assert v720.playlist == "titles/42/720p/index.m3u8"
    assert by_id["audio"].kind == "audio" and by_id["audio"].playlist == "titles/42/audio/index.m3u8"
    assert title_from_json(title_to_json(title)) == title


async def test_ingest_from_a_directory(tmp_path: Any) -> None:
    root = write_package(str(tmp_path / "pkg"))
    (tmp_path / "pkg" / "countries.txt").write_text("# where it may play\nnl, be\nlu\n")
    ingested = await ingest_source(root, "42", now=7.0)
    _check_title(ingested.title, package_files())
    assert ingested.title.countries == frozenset({"NL", "BE", "LU"}) and ingested.title.ingested_at == 7.0
    assert ingested.mpd is not None and "SegmentTemplate" in ingested.mpd
    explicit = await ingest_source(root, "42", countries=["us", "CA"])
    assert explicit.title.countries == frozenset({"US", "CA"})


async def test_ingest_from_an_origin_url(aiohttp_server: Any) -> None:
    files = package_files()
    requested: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        rel = request.match_info["rel"]
        requested.append(rel)
        if rel not in files:
            raise web.HTTPNotFound()
        return web.Response(body=files[rel])

    app = web.Application()
    app.router.add_get("/titles/42/{rel:.+}", serve)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        ingested = await ingest_source(f"http://127.0.0.1:{server.port}/titles/42/", "42", session=session)
        _check_title(ingested.title, files)
        assert ingested.title.countries == frozenset()  # no sidecar: everywhere
        assert "countries.txt" in requested
        only_hls = await ingest_source(f"http://127.0.0.1:{server.port}/titles/42/master.m3u8", "42",
                                       session=session, countries=[])
        assert only_hls.title.dash_manifest is None and only_hls.mpd is None
        assert len(only_hls.title.files) == len(files) - 1
        with pytest.raises(NotFound, match="no HLS multivariant playlist"):
            await ingest_source(f"http://127.0.0.1:{server.port}/titles/43/", "43", session=session)


async def test_bad_packages_are_refused(tmp_path: Any) -> None:
    files = package_files()
    extra = b"#EXT-X-STREAM-INF:BANDWIDTH=1\n../../etc/x.m3u8\n"
    escaping = dict(files, **{"master.m3u8": files["master.m3u8"] + extra})
    root = write_package(str(tmp_path / "a"), escaping)
    os.remove(os.path.join(root, "manifest.mpd"))
    with pytest.raises(BadRequest, match="outside the package"):
        await ingest_source(root, "42")
    missing = write_package(str(tmp_path / "b"))
    os.remove(os.path.join(missing, "720p", "index.m3u8"))
    with pytest.raises(NotFound, match=r"720p/index\.m3u8"):
        await ingest_source(missing, "42")
    absent = write_package(str(tmp_path / "c"))
    os.remove(os.path.join(absent, "720p", "seg_00002.m4s"))
    with pytest.raises(NotFound, match="seg_00002"):
        await ingest_source(absent, "42")
    with pytest.raises(BadRequest, match="not a title id"):
        await ingest_source(str(tmp_path / "b"), "../42")
    with pytest.raises(NotFound, match="not a directory"):
        await ingest_source(str(tmp_path / "nothing"), "42")
    junk = write_package(str(tmp_path / "d"), {"manifest.mpd": b"<MPD><oops"})
    with pytest.raises(BadRequest, match="not well-formed"):
        await ingest_source(junk, "42")


def test_hls_attribute_lists() -> None:
    assert parse_attributes('BANDWIDTH=1,CODECS="a,b",NAME="x"', "t") == {"BANDWIDTH": "1", "CODECS": "a,b",
                                                                         "NAME": "x"}
    with pytest.raises(ValueError, match="malformed"):
        parse_attributes("bandwidth=1", "t")


def test_mpd_segment_addressing() -> None:
    reps = {r.id: r for r in parse_mpd(package_files()["manifest.mpd"])}
    assert reps["720p"].files == ("720p/init.mp4", *(f"720p/seg_{i:05d}.m4s" for i in range(1, SEGMENTS + 1)))
    assert reps["audio"].files[0] == "audio/init.mp4" and reps["audio"].kind == "audio"
    timeline = """<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period><BaseURL>v/</BaseURL>
      <AdaptationSet mimeType="video/mp4"><Representation id="r1" bandwidth="5">
      <SegmentTemplate media="$Time$-$Bandwidth$.m4s" initialization="i.mp4"><SegmentTimeline>
      <S t="0" d="10" r="2"/><S d="5"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet>
      </Period></MPD>"""
    assert parse_mpd(timeline)[0].files == ("v/i.mp4", "v/0-5.m4s", "v/10-5.m4s", "v/20-5.m4s", "v/30-5.m4s")
    assert parse_duration("PT1H2M3.5S") == 3723.5
    with pytest.raises(ValueError, match="only static"):
        parse_mpd('<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"/>')
