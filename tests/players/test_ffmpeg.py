"""ffmpeg and ffprobe play a lab title through the control plane and a box: every rendition decodes, without
a single error, to the whole title.

The multivariant playlist and the MPD come from the control plane (ffmpeg names its lab client in the
X-OCA-Lab-Client header); the variants they list are absolute box URLs carrying the token as a path segment,
and the TS packaging (ts/master.m3u8, which no manifest names) is reached under the same token.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import m3u8
import pytest

from oca.lab import Lab
from tests.players.conftest import DURATION, FFMPEG, FFPROBE

FPS = 25  # oca.content's ladder
TIMEOUT = 60


def _header(lab: Lab) -> str:
    return f"{lab.client_header}: {lab.site_clients['site-a']}\r\n"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def decode(url: str, *options: str) -> dict[str, str]:
    """Decode every stream of `url` to nothing; ffmpeg's last progress report (frame=, out_time_us=, ...).
    Any error ffmpeg prints fails the test."""
    result = _run([FFMPEG, "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1", *options, "-i", url,
                   "-map", "0", "-f", "null", "-"])
    assert result.returncode == 0 and not result.stderr.strip(), f"{url}\n{result.stderr[-2000:]}"
    progress = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert progress.get("progress") == "end", result.stdout[-500:]
    return progress


def _seconds(progress: dict[str, str]) -> float:
    return int(progress["out_time_us"]) / 1e6


def test_ffprobe_reads_the_master_playlist_through_the_control_plane(lab: Lab) -> None:
    # The playlist names every pathway (the boxes, then the origin): ffmpeg's HLS demuxer opens them all,
    # and without -http_persistent 0 it reports each change of host as an error before reconnecting.
    result = _run([FFPROBE, "-v", "error", "-headers", _header(lab), "-http_persistent", "0", "-show_programs",
                   "-show_streams", "-of", "json", lab.master_url(lab.titles[0])])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr[-2000:]
    probed = json.loads(result.stdout)
    heights = {s.get("height") for p in probed["programs"] for s in p["streams"] if s["codec_type"] == "video"}
    codecs = {s["codec_name"] for p in probed["programs"] for s in p["streams"]}
    assert heights == {360, 720, 1080}, probed
    assert codecs == {"h264", "aac"}, probed


def test_ffmpeg_decodes_every_rendition_from_a_box(lab: Lab) -> None:
    title = lab.titles[0]
    request = urllib.request.Request(lab.master_url(title), headers={lab.client_header: lab.site_clients["site-a"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        master = m3u8.loads(response.read().decode(), uri=lab.master_url(title))
    first = master.playlists[0].stream_info.pathway_id
    variants = [p.uri for p in master.playlists if p.stream_info.pathway_id == first]
    box = lab.box_serving(variants[0])
    assert box is not None, f"the first pathway is not a box: {variants[0]}"
    assert len(variants) == 3, variants
    audio = [m.uri for m in master.media if m.type == "AUDIO" and lab.box_serving(m.uri) == box]
    assert len(audio) == 1, master.media
    base = variants[0].split(f"/titles/{title}/", 1)[0]  # the box's URL with the token
    with urllib.request.urlopen(f"{base}/titles/{title}/ts/master.m3u8", timeout=10) as response:
        ts = m3u8.loads(response.read().decode(), uri=f"{base}/titles/{title}/ts/master.m3u8")
    ts_variants = [p.absolute_uri for p in ts.playlists]
    assert len(ts_variants) == 3, ts.dumps()
    for url in variants + ts_variants:
        progress = decode(url)
        assert int(progress["frame"]) == DURATION * FPS, (url, progress)
        assert _seconds(progress) == pytest.approx(DURATION, abs=0.2), (url, progress)
    assert _seconds(decode(audio[0])) == pytest.approx(DURATION, abs=0.2)


def test_ffmpeg_decodes_the_mpd_through_the_control_plane_and_a_box(lab: Lab) -> None:
    progress = decode(lab.mpd_url(lab.titles[0]), "-headers", _header(lab))
    assert int(progress["frame"]) >= DURATION * FPS, progress  # every video representation
    assert _seconds(progress) == pytest.approx(DURATION, abs=0.2), progress
