"""`make_content`: sample titles under an output directory, real (ffmpeg) or synthetic, reused when already made.

Rules kept here:
- A title is built in `titles/.<id>.partial/` and renamed to `titles/<id>/` only once complete; its marker
  `.made.json` (the spec it was made from, and what was measured) is the last file written before the
  rename. A title whose marker matches the request is reused without running anything; a directory
  without a marker, or with another spec, is made again. So an interrupted run leaves nothing half-made
  where an origin serves it, and a second `oca lab up` encodes nothing.
- A real title is never replaced by a synthetic one because ffmpeg has gone missing; `--synthetic` does
  replace it (the operator asked).
- ffmpeg and ffprobe run as subprocesses through one Runner, with a timeout each; a failure becomes an
  EncodeError carrying the tail of ffmpeg's stderr. Only the Runner starts processes.
- One run per output directory at a time (an exclusive lock on `.lock`); `catalog.json` is rewritten
  (atomically) at the end, listing the requested titles.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from oca.content import ladder
from oca.content.ladder import AUDIO, LADDER, TS_DIR, TitleSpec
from oca.content.manifests import (
    Packaged,
    Segment,
    avc_codec,
    master_playlist,
    mpd,
    parse_media_playlist,
    ts_master_playlist,
)
from oca.content.synthetic import write_synthetic
from oca.errors import BadRequest, Conflict, OcaError

FORMAT = 1  # of the marker and catalog.json; a marker of another format is made again
MARKER = ".made.json"
CATALOG = "catalog.json"
COUNTRIES = "countries.txt"
_WORK = ".work"  # encoded MP4s, inside the partial directory, removed before the rename
_STDERR_TAIL = 400

Progress = Callable[[str, float], None]  # (title id, seconds of media done) as encoding advances
Step = Callable[[str, str], None]  # (title id, step): "reused", "encoding", "packaging", "done" (progress.STEPS)


class EncodeError(OcaError):
    """ffmpeg or ffprobe failed, timed out, or wrote something we cannot read."""

    exit_code = 1


class Runner:
    """Runs the tools. `runs` counts the processes started (a reused title starts none)."""

    def __init__(self) -> None:
        self.runs = 0
        self._lock = threading.Lock()

    def run(self, args: Sequence[str], *, cwd: str | None = None, timeout: float,
            on_line: Callable[[str], None] | None = None) -> str:
        """The command's stdout; EncodeError (with the stderr tail) on failure or after `timeout` seconds."""
        with self._lock:
            self.runs += 1
        name = os.path.basename(args[0])
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(list(args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=err, text=True)
            except OSError as exc:
                raise EncodeError(f"cannot run {args[0]}: {exc.strerror}") from None
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                proc.kill()

            timer = threading.Timer(timeout, kill)
            timer.start()
            lines: list[str] = []
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    if on_line is not None:
                        on_line(line)
                code = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if timed_out.is_set():
                raise EncodeError(f"{name} did not finish within {timeout:g}s: {_tail(err)}")
            if code != 0:
                raise EncodeError(f"{name} failed (exit {code}): {_tail(err)}")
            return "".join(lines)


def _tail(err: Any) -> str:
    err.seek(0)
    lines = [line.strip() for line in err.read().decode("utf-8", "replace").splitlines() if line.strip()]
    text = " | ".join(lines[-3:]) or "no message"
    return text if len(text) <= _STDERR_TAIL else "..." + text[-_STDERR_TAIL:]


@dataclass(frozen=True, slots=True)
class Tools:
    ffmpeg: str
    ffprobe: str


def find_tools() -> Tools | None:
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    return Tools(ffmpeg, ffprobe) if ffmpeg and ffprobe else None


def find_font(runner: Runner, tools: Tools) -> str | None:
    """A font file for drawtext when fontconfig finds one and ffmpeg has the filter; else None (no text)."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        filters = runner.run([tools.ffmpeg, "-hide_banner", "-filters"], timeout=30)
        path = runner.run([fc_match, "--format=%{file}", "monospace:bold"], timeout=30).strip()
    except EncodeError:
        return None
    if " drawtext " not in filters or not os.path.isfile(path):
        return None
    return ladder.safe_font(path)


@dataclass(frozen=True, slots=True)
class MadeTitle:
    spec: TitleSpec
    reused: bool
    seconds: float  # making it (0 when reused)
    record: dict[str, Any]  # its entry in catalog.json


@dataclass(frozen=True, slots=True)
class MadeContent:
    outdir: str
    titles: tuple[MadeTitle, ...]
    fallback: str | None  # why synthetic titles were made ("--synthetic", "ffmpeg not found"), else None
    catalog: str

    @property
    def synthetic(self) -> bool:
        return any(t.spec.synthetic for t in self.titles)


def make_content(outdir: str, titles: int, duration: int, *, synthetic: bool = False, jobs: int = 1,
                 runner: Runner | None = None, tools: Tools | None = None,
                 progress: Progress | None = None, step: Step | None = None) -> MadeContent:
    """Make (or reuse) `titles` titles of `duration` seconds under `outdir`; BadRequest on bad arguments."""
    problem = ladder.check_request(titles, duration)
    if problem:
        raise BadRequest(problem)
    if jobs < 1:
        raise BadRequest(f"--jobs must be at least 1, got {jobs}")
    outdir = os.path.abspath(outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise BadRequest(f"{outdir}: exists and is not a directory")
    runner = runner or Runner()
    fallback = "--synthetic" if synthetic else None
    if not synthetic:
        tools = tools or find_tools()
        if tools is None:
            fallback = "ffmpeg/ffprobe not found on PATH"
    specs = ladder.title_specs(titles, duration, synthetic=fallback is not None)
    try:
        os.makedirs(os.path.join(outdir, "titles"), exist_ok=True)
    except OSError as exc:
        raise BadRequest(f"{outdir}: cannot create it: {exc.strerror}") from None
    with _locked(outdir):
        made = _make_all(outdir, specs, forced=synthetic, jobs=jobs, runner=runner, tools=tools, progress=progress,
                         step=step)
        catalog = _write_catalog(outdir, made)
    return MadeContent(outdir, tuple(made), fallback, catalog)


@contextlib.contextmanager
def _locked(outdir: str) -> Iterator[None]:
    fd = os.open(os.path.join(outdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"{outdir}: another `oca content make` is writing here") from None
        yield
    finally:
        os.close(fd)


def _make_all(outdir: str, specs: list[TitleSpec], *, forced: bool, jobs: int, runner: Runner,
              tools: Tools | None, progress: Progress | None, step: Step | None) -> list[MadeTitle]:
    results: dict[str, MadeTitle] = {}
    todo: list[TitleSpec] = []
    for spec in specs:
        record = _reusable(outdir, spec, forced)
        if record is not None:
            results[spec.id] = MadeTitle(_spec_of(record, spec), True, 0.0, record)
            if step is not None:
                step(spec.id, "reused")
        else:
            todo.append(spec)
    if todo:
        font = find_font(runner, tools) if tools is not None and not todo[0].synthetic else None
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="content") as pool:
            futures: dict[str, Future[MadeTitle]] = {
                spec.id: pool.submit(_make_title, outdir, spec, runner, tools, font, progress, step)
                for spec in todo}
            try:
                for title_id, future in futures.items():
                    results[title_id] = future.result()
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
    return [results[spec.id] for spec in specs]


def _spec_of(record: dict[str, Any], wanted: TitleSpec) -> TitleSpec:
    return TitleSpec(wanted.id, wanted.duration, wanted.pattern, wanted.frequency, wanted.countries,
                     bool(record.get("synthetic")))


def _reusable(outdir: str, spec: TitleSpec, forced: bool) -> dict[str, Any] | None:
    """The title's catalog record when what is on disk can stand for `spec`, else None."""
    try:
        with open(os.path.join(outdir, "titles", spec.id, MARKER), encoding="utf-8") as fh:
            marker = json.load(fh)
        made = marker["spec"]
        record: dict[str, Any] = marker["record"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if marker.get("format") != FORMAT or not isinstance(made, dict):
        return None
    wanted = spec.to_json()
    if {k: v for k, v in made.items() if k != "synthetic"} != {k: v for k, v in wanted.items() if k != "synthetic"}:
        return None
    if made.get("synthetic") == spec.synthetic:
        return record
    # a real title stands in for a synthetic one unless --synthetic asked for synthetic
    return record if spec.synthetic and not forced and made.get("synthetic") is False else None


def _make_title(outdir: str, spec: TitleSpec, runner: Runner, tools: Tools | None, font: str | None,
                progress: Progress | None, step: Step | None) -> MadeTitle:
    started = time.monotonic()
    titles = os.path.join(outdir, "titles")
    final = os.path.join(titles, spec.id)
    partial = os.path.join(titles, f".{spec.id}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        if spec.synthetic or tools is None:
            renditions = write_synthetic(partial, spec)
            if progress is not None:
                progress(spec.id, float(spec.duration))
        else:
            renditions = _encode(partial, spec, runner, tools, font, progress, step)
        if spec.countries:
            with open(os.path.join(partial, COUNTRIES), "w", encoding="utf-8") as fh:
                fh.write(f"# {spec.id} may play only here (ISO 3166-1 alpha-2)\n{' '.join(spec.countries)}\n")
        record = _record(spec, renditions, partial, text=font is not None and not spec.synthetic)
        with open(os.path.join(partial, MARKER), "w", encoding="utf-8") as fh:
            json.dump({"format": FORMAT, "spec": spec.to_json(), "record": record}, fh, indent=2)
            fh.write("\n")
        _replace(partial, final)
        if step is not None:
            step(spec.id, "done")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return MadeTitle(spec, False, time.monotonic() - started, record)


def _replace(partial: str, final: str) -> None:
    """Rename the finished title into place (moving aside, then deleting, what was there)."""
    old = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.lexists(final):
        os.rename(final, old)
    os.rename(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def _encode(root: str, spec: TitleSpec, runner: Runner, tools: Tools, font: str | None,
            progress: Progress | None, step: Step | None) -> list[Packaged]:
    """Encode once into `.work/`, package into every format, measure, write the manifests; the renditions."""
    work = os.path.join(root, _WORK)
    for rel in [_WORK, *ladder.rendition_dirs()]:
        os.makedirs(os.path.join(root, *rel.split("/")), exist_ok=True)

    def on_line(line: str) -> None:
        key, _, value = line.strip().partition("=")
        if progress is not None and key == "out_time_us" and value.isdigit():
            progress(spec.id, min(float(spec.duration), int(value) / 1e6))

    if step is not None:
        step(spec.id, "encoding")
    runner.run(ladder.encode_args(tools.ffmpeg, spec, font, _WORK), cwd=root, on_line=on_line,
               timeout=60 + 12 * spec.duration)
    if step is not None:
        step(spec.id, "packaging")
    runner.run(ladder.package_args(tools.ffmpeg, _WORK), cwd=root, timeout=60 + 2 * spec.duration)
    streams = {name: _probe(runner, tools, os.path.join(work, f"{name}.mp4"))
               for name in [r.id for r in LADDER] + [AUDIO.id]}
    video = [_video(root, rung.id, streams[rung.id]) for rung in LADDER]
    audio = _audio(root, streams[AUDIO.id])
    ts = [_ts(root, rung.id, v, audio) for rung, v in zip(LADDER, video, strict=True)]
    _write(root, "master.m3u8", master_playlist(video, audio))
    _write(root, "manifest.mpd", mpd(video, audio))
    _write(root, f"{TS_DIR}/master.m3u8", ts_master_playlist(ts))
    shutil.rmtree(work)
    if progress is not None:
        progress(spec.id, float(spec.duration))
    return [*video, audio]


def _probe(runner: Runner, tools: Tools, path: str) -> dict[str, Any]:
    out = runner.run(ladder.probe_args(tools.ffprobe, path), timeout=30)
    try:
        streams = json.loads(out)["streams"]
        stream: dict[str, Any] = streams[0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise EncodeError(f"ffprobe found no stream in {path}") from None
    return stream


def _segments(root: str, rid: str) -> tuple[str | None, tuple[Segment, ...]]:
    rel = f"{rid}/index.m3u8"
    try:
        with open(os.path.join(root, *rel.split("/")), encoding="utf-8") as fh:
            init, listed = parse_media_playlist(fh.read(), rel)
        return init, tuple(Segment(uri, seconds, os.path.getsize(os.path.join(root, *rid.split("/"), uri)))
                           for uri, seconds in listed)
    except (OSError, ValueError) as exc:
        raise EncodeError(f"ffmpeg wrote an unreadable {rel}: {exc}") from None


def _rate(text: object) -> float | None:
    num, _, den = str(text or "").partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _video(root: str, rid: str, stream: dict[str, Any]) -> Packaged:
    init, segments = _segments(root, rid)
    if init is None:
        raise EncodeError(f"{rid}/index.m3u8 has no #EXT-X-MAP init segment")
    with open(os.path.join(root, rid, init), "rb") as fh:
        codecs = avc_codec(fh.read())
    if codecs is None or stream.get("codec_name") != "h264":
        raise EncodeError(f"{rid}: expected H.264, got {stream.get('codec_name')!r}")
    return Packaged(rid, "video", f"{rid}/index.m3u8", codecs, segments, init, int(stream["width"]),
                    int(stream["height"]), _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")))


_AAC_OBJECT_TYPES = {"LC": 2, "HE-AAC": 5, "HE-AACv2": 29}


def _audio(root: str, stream: dict[str, Any]) -> Packaged:
    init, segments = _segments(root, AUDIO.id)
    if stream.get("codec_name") != "aac":
        raise EncodeError(f"{AUDIO.id}: expected AAC, got {stream.get('codec_name')!r}")
    codecs = f"mp4a.40.{_AAC_OBJECT_TYPES.get(str(stream.get('profile')), 2)}"
    return Packaged(AUDIO.id, "audio", f"{AUDIO.id}/index.m3u8", codecs, segments, init,
                    sample_rate=int(stream.get("sample_rate") or AUDIO.sample_rate),
                    channels=int(stream.get("channels") or AUDIO.channels))


def _ts(root: str, rid: str, video: Packaged, audio: Packaged) -> Packaged:
    path = f"{TS_DIR}/{rid}"
    _, segments = _segments(root, path)
    return Packaged(path, "video", f"{path}/index.m3u8", f"{video.codecs},{audio.codecs}", segments,
                    width=video.width, height=video.height, frame_rate=video.frame_rate)


def _write(root: str, rel: str, text: str) -> None:
    with open(os.path.join(root, *rel.split("/")), "w", encoding="utf-8") as fh:
        fh.write(text)


def _record(spec: TitleSpec, renditions: list[Packaged], root: str, *, text: bool) -> dict[str, Any]:
    """The title's entry in catalog.json."""
    size = 0
    for base, _, names in os.walk(root):
        size += sum(os.path.getsize(os.path.join(base, n)) for n in names if not base.endswith(_WORK))
    prefix = f"titles/{spec.id}"
    return {
        "id": spec.id, "path": prefix, "duration": spec.duration, "synthetic": spec.synthetic,
        "countries": list(spec.countries), "pattern": spec.pattern, "tone_hz": spec.frequency,
        "burnt_in_text": text, "hls": f"{prefix}/master.m3u8", "dash": f"{prefix}/manifest.mpd",
        "hls_ts": f"{prefix}/{TS_DIR}/master.m3u8", "size": size,
        "segments": len(renditions[0].segments) if renditions else 0,
        "renditions": [{
            "id": r.id, "kind": r.kind, "codecs": r.codecs, "bandwidth": r.peak_bitrate,
            "average_bandwidth": r.average_bitrate,
            "resolution": [r.width, r.height] if r.width and r.height else None, "frame_rate": r.frame_rate,
        } for r in renditions],
    }


def _write_catalog(outdir: str, made: list[MadeTitle]) -> str:
    path = os.path.join(outdir, CATALOG)
    body = {"format": FORMAT, "titles": [t.record for t in made]}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path
