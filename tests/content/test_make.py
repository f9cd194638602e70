"""`oca content make` for real: ffmpeg encodes two short titles once per module, then ffprobe/ffmpeg decode every
packaging, the playlists and the MPD are read back, the control plane's ingest accepts the package, and a second
run reuses it without starting a process. The synthetic fallback, the errors and the CLI's exits are checked too.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import m3u8
import pytest
from click.testing import CliRunner

from control.catalog.ingest import DirectorySource, ingest
from oca.cli import cli
from oca.content import EncodeError, MadeContent, Runner, make_content
from oca.content import make as make_module
from oca.content.make import MARKER, Tools
from oca.content.manifests import DASH_NS
from oca.errors import BadRequest, Conflict

OCA = os.path.join(os.path.dirname(sys.executable), "oca")
DURATION = 6  # three 2 s segments
VIDEO = ("360p", "720p", "1080p")
HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe are not installed")
NS = {"d": DASH_NS}


@dataclass
class Made:
    outdir: Path
    result: MadeContent
    runs: int
    progress: dict[str, list[float]] = field(default_factory=dict)

    def title(self, title_id: str = "1001") -> Path:
        return self.outdir / "titles" / title_id


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Made:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg/ffprobe are not installed")
    outdir = tmp_path_factory.mktemp("content") / "out"
    runner = Runner()
    progress: dict[str, list[float]] = {}
    result = make_content(str(outdir), 2, DURATION, runner=runner,
                          progress=lambda tid, s: progress.setdefault(tid, []).append(s))
    return Made(outdir, result, runner.runs, progress)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Made:
    outdir = tmp_path_factory.mktemp("synthetic") / "out"
    runner = Runner()
    return Made(outdir, make_content(str(outdir), 2, DURATION, synthetic=True, runner=runner), runner.runs)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


# --- the real package ------------------------------------------------------------------------------------------

@needs_ffmpeg
def test_layout(real: Made) -> None:
    root = real.title()
    files = _files(root)
    for rid in (*VIDEO, "audio"):
        assert {f"{rid}/index.m3u8", f"{rid}/init.mp4", f"{rid}/seg_00001.m4s", f"{rid}/seg_00003.m4s"} <= set(files)
        assert f"{rid}/seg_00004.m4s" not in files
    for rid in VIDEO:
        assert {f"ts/{rid}/index.m3u8", f"ts/{rid}/seg_00001.ts", f"ts/{rid}/seg_00003.ts"} <= set(files)
    assert {"master.m3u8", "manifest.mpd", "ts/master.m3u8", MARKER} <= set(files)
    assert not any(f.startswith(".work") for f in files)
    assert (real.title("1002") / "countries.txt").read_text().split("\n")[1] == "NL"
    assert not (root / "countries.txt").exists()
    assert sorted(os.listdir(real.outdir / "titles")) == ["1001", "1002"]  # no partial directory left
    assert real.progress["1001"][-1] == DURATION and real.progress["1002"][-1] == DURATION


@needs_ffmpeg
def test_catalog_json(real: Made) -> None:
    catalog = json.loads((real.outdir / "catalog.json").read_text())
    assert [t["id"] for t in catalog["titles"]] == ["1001", "1002"]
    first, second = catalog["titles"]
    assert first["path"] == "titles/1001" and first["duration"] == DURATION and first["synthetic"] is False
    assert first["countries"] == [] and second["countries"] == ["NL"]
    assert first["hls"] == "titles/1001/master.m3u8" and first["dash"] == "titles/1001/manifest.mpd"
    assert first["hls_ts"] == "titles/1001/ts/master.m3u8"
    assert [r["id"] for r in first["renditions"]] == [*VIDEO, "audio"]
    assert first["pattern"] != second["pattern"] and first["tone_hz"] != second["tone_hz"]
    assert not real.result.synthetic and real.result.fallback is None


@needs_ffmpeg
@pytest.mark.parametrize("playlist", [f"{rid}/index.m3u8" for rid in (*VIDEO, "audio")]
                         + [f"ts/{rid}/index.m3u8" for rid in VIDEO] + ["manifest.mpd"])
def test_ffprobe_reads_every_rendition(real: Made, playlist: str) -> None:
    result = _run("ffprobe", "-v", "error", "-show_streams", "-of", "json", str(real.title() / playlist))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    codecs = sorted(s["codec_name"] for s in json.loads(result.stdout)["streams"])
    expected = {"audio/index.m3u8": ["aac"], "manifest.mpd": ["aac", "h264", "h264", "h264"]}
    assert codecs == expected.get(playlist, ["aac", "h264"] if playlist.startswith("ts/") else ["h264"])


@needs_ffmpeg
@pytest.mark.parametrize("entry", ["master.m3u8", "ts/master.m3u8", "manifest.mpd"])
def test_ffmpeg_decodes_each_packaging_without_error(real: Made, entry: str) -> None:
    # the first program of a multivariant playlist / the lowest representations of the MPD, video and audio
    result = _run("ffmpeg", "-v", "error", "-nostdin", "-i", str(real.title("1002") / entry), "-map", "0:v:0",
                  "-map", "0:a:0", "-f", "null", "-")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def _keyframes(path: Path) -> list[float]:
    result = _run("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
                  "-of", "csv=p=0", str(path))
    assert result.returncode == 0, result.stderr
    return [round(float(pts), 3) for pts, flags in (line.split(",") for line in result.stdout.split()) if "K" in flags]


@needs_ffmpeg
def test_segments_are_two_seconds_and_aligned(real: Made) -> None:
    root = real.title()
    durations = {rid: [s.duration for s in m3u8.load(str(root / rid / "index.m3u8")).segments]
                 for rid in (*VIDEO, "audio")}
    assert durations["360p"] == durations["720p"] == durations["1080p"] == [2.0, 2.0, 2.0]
    assert durations["audio"] == pytest.approx([2.0, 2.0, 2.0], abs=0.03)
    ts = [s.duration for s in m3u8.load(str(root / "ts" / "360p" / "index.m3u8")).segments]
    assert ts == [2.0, 2.0, 2.0]
    for rid in VIDEO:  # a keyframe opens every segment, and only there (fixed GOP, no scene cuts)
        segments = sorted((root / rid).glob("seg_*.m4s"))
        starts = []
        for seg in segments:
            joined = root / f"{rid}-joined.mp4"
            joined.write_bytes((root / rid / "init.mp4").read_bytes() + seg.read_bytes())
            starts += _keyframes(joined)
            joined.unlink()
        assert starts == [0.0, 2.0, 4.0], rid


@needs_ffmpeg
def test_master_playlist_carries_measured_attributes(real: Made) -> None:
    root = real.title()
    playlist = m3u8.load(str(root / "master.m3u8"))
    assert playlist.is_variant
    assert [p.uri for p in playlist.playlists] == [f"{rid}/index.m3u8" for rid in VIDEO]
    (audio,) = playlist.media
    assert (audio.type, audio.group_id, audio.uri) == ("AUDIO", "aud", "audio/index.m3u8")
    audio_bytes = sum(p.stat().st_size for p in (root / "audio").glob("seg_*.m4s"))
    for variant, (width, height) in zip(playlist.playlists, [(640, 360), (1280, 720), (1920, 1080)], strict=True):
        info = variant.stream_info
        rid = variant.uri.split("/")[0]
        sizes = [p.stat().st_size for p in sorted((root / rid).glob("seg_*.m4s"))]
        assert info.resolution == (width, height) and info.frame_rate == 25.0 and info.audio == "aud"
        assert info.codecs is not None
        video_codec, audio_codec = info.codecs.split(",")
        assert video_codec.startswith("avc1.") and len(video_codec) == 11 and audio_codec == "mp4a.40.2"
        assert info.bandwidth >= max(sizes) * 8 / 2
        assert info.average_bandwidth == pytest.approx((sum(sizes) + audio_bytes) * 8 / DURATION, rel=0.02)
        assert info.bandwidth >= info.average_bandwidth
    ts = m3u8.load(str(root / "ts" / "master.m3u8"))
    assert [p.uri for p in ts.playlists] == [f"{rid}/index.m3u8" for rid in VIDEO]
    assert all(p.stream_info.codecs and p.stream_info.codecs.endswith(",mp4a.40.2") for p in ts.playlists)


@needs_ffmpeg
def test_mpd_parses_in_the_dash_namespace(real: Made) -> None:
    root = real.title()
    mpd = ET.parse(root / "manifest.mpd").getroot()
    assert mpd.tag == f"{{{DASH_NS}}}MPD" and mpd.get("type") == "static"
    assert mpd.get("mediaPresentationDuration") == f"PT{DURATION}.000S"
    master = {p.uri.split("/")[0]: p.stream_info for p in m3u8.load(str(root / "master.m3u8")).playlists}
    video_set, audio_set = mpd.findall("d:Period/d:AdaptationSet", NS)
    reps = video_set.findall("d:Representation", NS)
    assert [r.get("id") for r in reps] == list(VIDEO)
    for rep in reps:
        codecs = master[rep.get("id", "")].codecs
        assert codecs is not None and codecs.startswith(rep.get("codecs", "?") + ",")
        assert int(rep.get("bandwidth", "0")) > 0
    (audio,) = audio_set.findall("d:Representation", NS)
    assert (audio.get("id"), audio.get("codecs"), audio.get("audioSamplingRate")) == ("audio", "mp4a.40.2", "48000")
    for aset in (video_set, audio_set):
        timeline = aset.findall("d:SegmentTemplate/d:SegmentTimeline/d:S", NS)
        total = sum(int(s.get("d", "0")) * (int(s.get("r", "0")) + 1) for s in timeline)
        assert total == pytest.approx(DURATION * 1000, abs=30)


@needs_ffmpeg
async def test_control_plane_ingests_it(real: Made) -> None:
    for title_id, countries in (("1001", frozenset()), ("1002", frozenset({"NL"}))):
        ingested = await ingest(DirectorySource(str(real.title(title_id))), title_id)
        title = ingested.title
        assert [(r.id, r.kind) for r in title.renditions] == [(rid, "video") for rid in VIDEO] + [("audio", "audio")]
        assert title.hls_master == f"titles/{title_id}/master.m3u8"
        assert title.dash_manifest == f"titles/{title_id}/manifest.mpd"
        assert title.countries == countries
        # every fMP4 file is catalogued; the TS packaging is not named by master.m3u8, so it is not
        paths = {f.path.removeprefix(f"titles/{title_id}/") for f in title.files}
        on_disk = {f for f in _files(real.title(title_id)) if not f.startswith(("ts/", "."))} - {"countries.txt"}
        assert paths == on_disk
        assert ingested.mpd is not None


@needs_ffmpeg
def test_second_run_reuses_without_starting_a_process(real: Made) -> None:
    marker = real.title() / MARKER
    before = marker.stat().st_mtime_ns
    runner = Runner()
    again = make_content(str(real.outdir), 2, DURATION, runner=runner)
    assert runner.runs == 0
    assert [t.reused for t in again.titles] == [True, True]
    assert marker.stat().st_mtime_ns == before
    assert [t.record for t in again.titles] == [t.record for t in real.result.titles]
    result = CliRunner().invoke(cli, ["content", "make", str(real.outdir), "--titles", "2", "--duration",
                                      str(DURATION)])
    assert result.exit_code == 0, result.output
    assert "1001: reused" in result.output and "1002: reused" in result.output
    assert "2 titles (2 reused), H.264/AAC" in result.output


@needs_ffmpeg
def test_ffmpeg_failure_names_the_stderr_and_leaves_nothing(real: Made, tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'first line' >&2\necho 'Unknown encoder libx264' >&2\nexit 1\n")
    fake.chmod(0o755)
    outdir = tmp_path / "out"
    with pytest.raises(EncodeError, match=r"ffmpeg failed \(exit 1\): first line \| Unknown encoder libx264"):
        make_content(str(outdir), 1, DURATION, tools=Tools(str(fake), str(fake)))
    assert os.listdir(outdir / "titles") == []


# --- the synthetic fallback ------------------------------------------------------------------------------------

@needs_ffmpeg
def test_synthetic_has_the_same_layout(synthetic: Made, real: Made) -> None:
    assert synthetic.runs == 0
    assert synthetic.result.synthetic and synthetic.result.fallback == "--synthetic"
    for title_id in ("1001", "1002"):
        assert _files(synthetic.title(title_id)) == _files(real.title(title_id))
    catalog = json.loads((synthetic.outdir / "catalog.json").read_text())
    assert [t["synthetic"] for t in catalog["titles"]] == [True, True]
    playlist = m3u8.load(str(synthetic.title() / "master.m3u8"))
    assert [p.stream_info.resolution for p in playlist.playlists] == [(640, 360), (1280, 720), (1920, 1080)]
    assert all(p.stream_info.average_bandwidth and p.stream_info.frame_rate for p in playlist.playlists)
    assert (synthetic.title() / "360p" / "seg_00001.m4s").read_bytes().startswith(b"OCA synthetic sample, not video")


def test_synthetic_is_ingested(synthetic: Made) -> None:
    import asyncio

    title = asyncio.run(ingest(DirectorySource(str(synthetic.title("1002"))), "1002")).title
    assert [r.id for r in title.renditions] == [*VIDEO, "audio"]
    assert title.countries == frozenset({"NL"})
    assert len(title.files) == 2 + 4 * (1 + 1 + 3)  # master, MPD; per rendition a playlist, an init, 3 segments


def test_without_ffmpeg_the_cli_falls_back_and_says_so(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path / "empty"))
    result = subprocess.run([OCA, "content", "make", str(tmp_path / "out"), "--titles", "1", "--duration", "4"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC (not video: ffmpeg/ffprobe not found on PATH)" in result.stdout
    assert "oca: warning: SYNTHETIC content" in result.stderr
    catalog = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert catalog["titles"][0]["synthetic"] is True


@needs_ffmpeg
def test_a_real_title_is_not_replaced_by_a_synthetic_one(real: Made, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    outdir = tmp_path / "out"
    shutil.copytree(real.outdir, outdir)
    runner = Runner()
    with monkeypatch.context() as patch:
        patch.setattr(make_module, "find_tools", lambda: None)  # ffmpeg has gone
        made = make_content(str(outdir), 2, DURATION, runner=runner)
    assert [t.reused for t in made.titles] == [True, True]
    assert [t.spec.synthetic for t in made.titles] == [False, False]
    assert made.fallback == "ffmpeg/ffprobe not found on PATH" and not made.synthetic
    forced = make_content(str(outdir), 2, DURATION, synthetic=True, runner=runner)
    assert [t.reused for t in forced.titles] == [False, False] and forced.synthetic
    assert runner.runs == 0


def test_incomplete_or_different_titles_are_made_again(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    make_content(str(outdir), 2, DURATION, synthetic=True)
    (outdir / "titles" / "1001" / MARKER).unlink()  # as if interrupted before the marker
    (outdir / "titles" / ".1002.partial").mkdir()  # a leftover of an interrupted run
    again = make_content(str(outdir), 3, DURATION, synthetic=True)
    assert [t.reused for t in again.titles] == [False, True, False]
    assert sorted(os.listdir(outdir / "titles")) == [".1002.partial", "1001", "1002", "1003"]
    longer = make_content(str(outdir), 1, DURATION + 2, synthetic=True)
    assert [t.reused for t in longer.titles] == [False]
    assert json.loads((outdir / "catalog.json").read_text())["titles"][0]["segments"] == 4


# --- errors ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--titles", "0"], "oca: --titles must be between 1 and 50, got 0\n"),
    (["--duration", "1"], "oca: --duration must be between 4 and 600 seconds, got 1\n"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(OCA, "content", "make", str(tmp_path / "out"), *args)
    assert (result.returncode, result.stderr, result.stdout) == (2, message, "")
    assert not (tmp_path / "out").exists()


def test_outdir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = _run(OCA, "content", "make", str(target), "--synthetic")
    assert result.returncode == 2
    assert result.stderr == f"oca: {target}: exists and is not a directory\n"


def test_bad_arguments_raise_bad_request(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="--jobs must be at least 1"):
        make_content(str(tmp_path), 1, DURATION, jobs=0)


def test_one_run_per_directory(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    with open(outdir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(Conflict, match="another `oca content make` is writing here"):
            make_content(str(outdir), 1, DURATION, synthetic=True)


def test_runner_times_out_and_reports(tmp_path: Path) -> None:
    runner = Runner()
    with pytest.raises(EncodeError, match=r"sh did not finish within 0\.3s: started"):
        runner.run(["sh", "-c", "echo started >&2; exec sleep 30"], timeout=0.3)
    with pytest.raises(EncodeError, match="cannot run /nonexistent/ffmpeg"):
        runner.run(["/nonexistent/ffmpeg"], timeout=5)
    assert runner.run(["sh", "-c", "echo out"], timeout=5) == "out\n"
    assert runner.runs == 3




@pytest.mark.parametrize("synthetic", [
    pytest.param(False, marks=needs_ffmpeg, id="ffmpeg"), pytest.param(True, id="synthetic")])
def test_the_cli_prints_progress_and_where_the_output_went(tmp_path: Path, synthetic: bool) -> None:
    outdir = tmp_path / "out"
    result = _run(OCA, "content", "make", str(outdir), "--titles", "1", "--duration", "4",
                  *(["--synthetic"] if synthetic else []))
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("content: ")]
    assert progress[0] == f"content: making 1 title(s) of 4 s in {outdir}"
    if not synthetic:
        assert progress[1].startswith("content: title 1/1 (1001): encoding 360p/720p/1080p + audio, "), progress
        assert any(line.startswith("content: title 1/1 (1001): packaging HLS fMP4, HLS TS, DASH, ")
                   for line in progress), progress
    assert progress[-1].startswith("content: title 1/1 (1001): made, "), progress
    assert len(progress) <= 6, progress  # a line per step, not one per ffmpeg progress report
    assert f"in {outdir} in " in result.stdout and f"catalog {outdir / 'catalog.json'}" in result.stdout
    assert "1001: made in " in result.stdout and "titles/1001/" in result.stdout
    again = _run(OCA, "content", "make", str(outdir), "--titles", "1", "--duration", "4",
                 *(["--synthetic"] if synthetic else []))
    assert "content: " not in again.stderr and "1 title (1 reused)" in again.stdout  # nothing to make: quiet


def test_steps_are_reported_through_the_callback(tmp_path: Path) -> None:
    steps: list[tuple[str, str]] = []
    make_content(str(tmp_path / "out"), 2, 4, synthetic=True, step=lambda tid, step: steps.append((tid, step)))
    assert steps == [("1001", "done"), ("1002", "done")]  # synthetic: nothing to encode or package
    steps.clear()
    make_content(str(tmp_path / "out"), 2, 4, synthetic=True, step=lambda tid, step: steps.append((tid, step)))
    assert steps == [("1001", "reused"), ("1002", "reused")]


@needs_ffmpeg
def test_a_real_title_reports_encoding_then_packaging_then_done(tmp_path: Path) -> None:
    steps: list[str] = []
    make_content(str(tmp_path / "out"), 1, 4, step=lambda tid, step: steps.append(f"{tid} {step}"))
    assert steps == ["1001 encoding", "1001 packaging", "1001 done"]
