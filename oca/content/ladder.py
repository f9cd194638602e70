"""The sample titles, their ABR ladder and the ffmpeg command lines that make them, as data. Pure.

Rules kept here:
- One encode per rendition, reused by every packaging: the encode writes one MP4 per video rung and one
  for audio (`encode_args`); packaging only copies those streams (`-c copy`) into HLS fMP4 and HLS TS
  (`package_args`), and the DASH MPD names the same fMP4 files. Nothing is encoded twice.
- Segments align across renditions because every rung has the same fixed GOP: a keyframe every
  SEGMENT_SECONDS at the frame rate (`-g`, `-keyint_min`, `-sc_threshold 0`), and the segmenter cuts on
  keyframes at that same duration. Audio (a packet is 1024 samples, 21.3 ms at 48 kHz) is cut within one
  packet of the video boundaries, and is trimmed to a whole number of packets that ends at or before the
  title's duration, so it never ends in a sliver segment of its own.
- Each title gets DISTINCT content: its own lavfi pattern (cycled), its own sine frequency, and, when a
  font is available, its id, the rendition and a running timecode burnt in (`drawtext`).
- Bitrates are modest and the preset fast so that three 30 s titles encode in well under a minute on two
  cores: this is sample content for tests and the lab, not a quality reference.
- Command lines are argument lists (never a shell string). The one value that reaches a filter graph from
  outside, the font path, must be plain (`[A-Za-z0-9/._+-]`), else the text is left out (`safe_font`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

FPS = 25
SEGMENT_SECONDS = 2
GOP = FPS * SEGMENT_SECONDS
PRESET = "ultrafast"
FIRST_TITLE_ID = 1001
MIN_DURATION, MAX_DURATION = 4, 600  # whole seconds: audio and video then end in the same segment
MAX_TITLES = 50
SOURCE_SIZE = (1920, 1080)  # patterns are drawn (or scaled) to the top rung, then scaled down per rung


@dataclass(frozen=True, slots=True)
class VideoRung:
    id: str  # the rendition directory
    width: int
    height: int
    bitrate: int  # target, bits per second

    @property
    def maxrate(self) -> int:
        return self.bitrate * 11 // 10

    @property
    def bufsize(self) -> int:
        return self.bitrate * SEGMENT_SECONDS


@dataclass(frozen=True, slots=True)
class AudioRung:
    id: str
    bitrate: int
    sample_rate: int
    channels: int
    codecs: str = "mp4a.40.2"  # AAC-LC, what ffmpeg's native encoder writes


LADDER: tuple[VideoRung, ...] = (
    VideoRung("360p", 640, 360, 800_000),
    VideoRung("720p", 1280, 720, 2_400_000),
    VideoRung("1080p", 1920, 1080, 4_500_000),
)
AUDIO = AudioRung("audio", 128_000, 48_000, 2)
TS_DIR = "ts"  # the MPEG-TS packaging lives under <title>/ts/, with its own master.m3u8


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    graph: str  # a lavfi source graph drawing SOURCE_SIZE frames; {fps} and {seed} are filled in


# Each costs at most ~3 s of one core per 30 s at 1080p (gradients and a full-size mandelbrot cost 20 s+).
PATTERNS: tuple[Pattern, ...] = (
    Pattern("testsrc2", "testsrc2=s=1920x1080:r={fps}"),
    Pattern("smptehdbars", "smptehdbars=s=1920x1080:r={fps},hue=H=2*PI*t/10"),
    Pattern("mandelbrot", "mandelbrot=s=320x180:r={fps}:maxiter=256,format=yuv420p,scale=1920:1080"),
    Pattern("life", "life=s=480x270:r={fps}:mold=10:ratio=0.1:seed={seed}:death_color=0xC83232:"
                    "life_color=0x00FF00,format=yuv420p,scale=1920:1080:flags=neighbor"),
    Pattern("cellauto", "cellauto=s=480x270:r={fps}:rule=110:seed={seed},format=yuv420p,"
                        "scale=1920:1080:flags=neighbor"),
    Pattern("testsrc", "testsrc=s=1920x1080:r={fps}"),
)


@dataclass(frozen=True, slots=True)
class TitleSpec:
    """What one title is made of; two specs that compare equal make the same package."""

    id: str
    duration: int  # seconds
    pattern: str
    frequency: int  # Hz of the sine tone (it beeps at 4x that once a second)
    countries: tuple[str, ...]  # where it may play; () = everywhere
    synthetic: bool

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "duration": self.duration, "pattern": self.pattern, "frequency": self.frequency,
                "countries": list(self.countries), "synthetic": self.synthetic}


# The second title plays only in one country, so the lab can show a 451 to clients elsewhere.
RESTRICTED: dict[int, tuple[str, ...]] = {1: ("NL",)}


def title_specs(count: int, duration: int, *, synthetic: bool) -> list[TitleSpec]:
    """Titles FIRST_TITLE_ID, FIRST_TITLE_ID + 1, ...: pattern and tone cycle, so each looks and sounds different."""
    return [TitleSpec(id=str(FIRST_TITLE_ID + i), duration=duration, pattern=PATTERNS[i % len(PATTERNS)].name,
                      frequency=440 + 110 * (i % 12), countries=RESTRICTED.get(i, ()), synthetic=synthetic)
            for i in range(count)]


def check_request(titles: int, duration: int) -> str | None:
    """The problem with a request, or None. Names the option and the value."""
    if not 1 <= titles <= MAX_TITLES:
        return f"--titles must be between 1 and {MAX_TITLES}, got {titles}"
    if not MIN_DURATION <= duration <= MAX_DURATION:
        return f"--duration must be between {MIN_DURATION} and {MAX_DURATION} seconds, got {duration}"
    return None


def segment_count(duration: float) -> int:
    return math.ceil(duration / SEGMENT_SECONDS - 1e-9)


def audio_packets(duration: float) -> int:
    """Whole AAC packets (1024 samples each) that end at or before `duration`."""
    return max(1, math.floor(duration * AUDIO.sample_rate / 1024))


_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._+-]+")


def safe_font(path: str | None) -> str | None:
    return path if path and _SAFE_PATH.fullmatch(path) else None


def _drawtext(font: str, text: str, height: int) -> str:
    size = max(12, height // 14)
    # Inside a quoted filter option, ':' must still be escaped: %{pts\:hms} is the running timecode.
    return (f"drawtext=fontfile={font}:text='{text}  %{{pts\\:hms}}':x=(w-tw)/2:y=h-th-{size}:"
            f"fontsize={size}:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw={max(4, size // 4)}")


def filter_graph(spec: TitleSpec, font: str | None) -> str:
    """Input 0 (the pattern) -> one labelled output [v0], [v1], ... per rung, scaled and captioned."""
    rungs = len(LADDER)
    parts = [f"[0:v]format=yuv420p,setsar=1,split={rungs}" + "".join(f"[s{i}]" for i in range(rungs))]
    for i, rung in enumerate(LADDER):
        chain = f"[s{i}]"
        chain += f"scale={rung.width}:{rung.height}" if (rung.width, rung.height) != SOURCE_SIZE else "null"
        if font is not None:
            chain += "," + _drawtext(font, f"OCA {spec.id} {rung.id}", rung.height)
        parts.append(chain + f"[v{i}]")
    return ";".join(parts)


def encode_args(ffmpeg: str, spec: TitleSpec, font: str | None, workdir: str) -> list[str]:
    """One ffmpeg run: the pattern and tone in, `<workdir>/<rung>.mp4` per rung and `<workdir>/audio.mp4` out."""
    pattern = next(p for p in PATTERNS if p.name == spec.pattern)
    seed = int(spec.id) % 100_000
    duration = str(spec.duration)
    args = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y", "-progress", "pipe:1",
            "-f", "lavfi", "-t", duration, "-i", pattern.graph.format(fps=FPS, seed=seed),
            "-f", "lavfi", "-t", duration,
            "-i", f"sine=frequency={spec.frequency}:beep_factor=4:sample_rate={AUDIO.sample_rate}",
            "-filter_complex", filter_graph(spec, font)]
    for i, rung in enumerate(LADDER):
        args += ["-map", f"[v{i}]", "-an", "-c:v", "libx264", "-preset", PRESET, "-pix_fmt", "yuv420p",
                 "-b:v", str(rung.bitrate), "-maxrate", str(rung.maxrate), "-bufsize", str(rung.bufsize),
                 "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-r", str(FPS),
                 "-movflags", "+faststart", f"{workdir}/{rung.id}.mp4"]
    args += ["-map", "1:a", "-vn", "-c:a", "aac", "-b:a", str(AUDIO.bitrate), "-ac", str(AUDIO.channels),
             "-ar", str(AUDIO.sample_rate), "-frames:a", str(audio_packets(spec.duration)),
             f"{workdir}/audio.mp4"]
    return args


def _hls(segment_type: str, segment_name: str, playlist: str) -> list[str]:
    args = ["-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod", "-start_number", "1",
            "-hls_segment_type", segment_type, "-hls_segment_filename", segment_name]
    if segment_type == "fmp4":
        args += ["-hls_fmp4_init_filename", "init.mp4"]
    return [*args, playlist]


def package_args(ffmpeg: str, workdir: str) -> list[str]:
    """One ffmpeg run, in the title's directory: the encoded MP4s copied into every packaging.

    fMP4 HLS per rendition (`<id>/index.m3u8`, `init.mp4`, `seg_00001.m4s`...: also DASH's segments), and
    MPEG-TS HLS per video rung with the audio muxed in (`ts/<id>/index.m3u8`, `seg_00001.ts`...).
    """
    args = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y"]
    for rung in LADDER:
        args += ["-i", f"{workdir}/{rung.id}.mp4"]
    args += ["-i", f"{workdir}/audio.mp4"]
    audio_input = len(LADDER)
    for i, rung in enumerate(LADDER):
        args += ["-map", f"{i}:v", "-c", "copy",
                 *_hls("fmp4", f"{rung.id}/seg_%05d.m4s", f"{rung.id}/index.m3u8")]
    args += ["-map", f"{audio_input}:a", "-c", "copy",
             *_hls("fmp4", f"{AUDIO.id}/seg_%05d.m4s", f"{AUDIO.id}/index.m3u8")]
    for i, rung in enumerate(LADDER):
        args += ["-map", f"{i}:v", "-map", f"{audio_input}:a", "-c", "copy",
                 *_hls("mpegts", f"{TS_DIR}/{rung.id}/seg_%05d.ts", f"{TS_DIR}/{rung.id}/index.m3u8")]
    return args


def probe_args(ffprobe: str, path: str) -> list[str]:
    return [ffprobe, "-v", "error", "-of", "json", "-show_streams", path]


def rendition_dirs() -> list[str]:
    """Every directory a package has, relative to the title's root."""
    return [r.id for r in LADDER] + [AUDIO.id] + [f"{TS_DIR}/{r.id}" for r in LADDER]
