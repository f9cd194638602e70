"""A packaged title's playlists and MPD, written from what was measured on the packaged files. Pure.

Rules kept here:
- Numbers are measured, not declared: BANDWIDTH is the peak segment bit rate (RFC 8216 §4.3.4.2), and
  AVERAGE-BANDWIDTH the mean over the title, of the variant's own segments plus the audio it plays with;
  CODECS comes from the encoded stream (`avc_codec` reads the avcC box of the init segment); RESOLUTION
  and FRAME-RATE from ffprobe. The synthetic fallback passes its nominal values through the same writers.
- The fMP4 multivariant playlist (`master.m3u8`) lists video variants from the lowest rate up (a player
  starts on the first one, and the lowest starts fastest) and audio as its own rendition in group "aud".
  The TS multivariant playlist (`ts/master.m3u8`) has the audio muxed into each variant.
- The MPD is static, in the `urn:mpeg:dash:schema:mpd:2011` namespace, and names the very files of the
  fMP4 HLS renditions (`<id>/init.mp4`, `<id>/seg_$Number%05d$.m4s`), one AdaptationSet for video and one
  for audio, each with a SegmentTimeline made from the measured segment durations (in milliseconds,
  rounded on the running total so they never drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from oca.content.ladder import AUDIO, FPS, SEGMENT_SECONDS, TS_DIR

DASH_NS = "urn:mpeg:dash:schema:mpd:2011"
HLS_VERSION = 7  # what ffmpeg writes in the fMP4 media playlists (EXT-X-MAP needs at least 6)
_TIMESCALE = 1000


@dataclass(frozen=True, slots=True)
class Segment:
    uri: str
    duration: float  # seconds
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class Packaged:
    """One rendition as packaged: where its playlist is, what it is, and its segments."""

    id: str
    kind: str  # video | audio
    playlist: str  # relative to the title's root, e.g. 720p/index.m3u8
    codecs: str
    segments: tuple[Segment, ...]
    init: str | None = None
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    sample_rate: int | None = None
    channels: int | None = None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    @property
    def peak_bitrate(self) -> int:
        return max((math.ceil(s.size * 8 / s.duration) for s in self.segments if s.duration > 0), default=0)

    @property
    def average_bitrate(self) -> int:
        total = self.duration
        return math.ceil(sum(s.size for s in self.segments) * 8 / total) if total > 0 else 0


def parse_media_playlist(text: str, name: str) -> tuple[str | None, list[tuple[str, float]]]:
    """(init URI, [(segment URI, EXTINF duration)]) of a VOD media playlist ffmpeg wrote; ValueError if odd."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError(f"{name}: not an HLS playlist")
    init: str | None = None
    segments: list[tuple[str, float]] = []
    pending: float | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-MAP:"):
            init = line.split('URI="', 1)[1].split('"', 1)[0] if 'URI="' in line else None
        elif line.startswith("#EXTINF:"):
            try:
                pending = float(line[len("#EXTINF:"):].split(",", 1)[0])
            except ValueError:
                raise ValueError(f"{name}: bad {line!r}") from None
        elif not line.startswith("#"):
            if pending is None:
                raise ValueError(f"{name}: segment {line!r} without #EXTINF")
            segments.append((line, pending))
            pending = None
    if not segments or lines[-1] != "#EXT-X-ENDLIST":
        raise ValueError(f"{name}: no segments, or no #EXT-X-ENDLIST (not a finished VOD playlist)")
    return init, segments


def avc_codec(init: bytes) -> str | None:
    """RFC 6381 `avc1.PPCCLL` from the avcC box (ISO/IEC 14496-15 §5.3.3.1) of an init segment, if any."""
    at = init.find(b"avcC")
    if at < 0 or len(init) < at + 8:
        return None
    profile, compatibility, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02x}{compatibility:02x}{level:02x}"


def media_playlist(segments: Sequence[Segment], init: str | None) -> str:
    """A VOD media playlist, as ffmpeg writes them (used by the synthetic fallback)."""
    target = max(math.ceil(s.duration - 1e-6) for s in segments) if segments else SEGMENT_SECONDS
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION if init else 3}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:1", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if init:
        lines.append(f'#EXT-X-MAP:URI="{init}"')
    for s in segments:
        lines += [f"#EXTINF:{s.duration:.6f},", s.uri]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def _resolution(r: Packaged) -> str:
    return f",RESOLUTION={r.width}x{r.height}" if r.width and r.height else ""


def _frame_rate(r: Packaged) -> str:
    return f",FRAME-RATE={r.frame_rate:.3f}" if r.frame_rate else ""


def master_playlist(video: Sequence[Packaged], audio: Packaged | None) -> str:
    """The fMP4 multivariant playlist: audio as an alternate rendition, variants from the lowest rate up."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,'
                     f'AUTOSELECT=YES,CHANNELS="{audio.channels or AUDIO.channels}",URI="{audio.playlist}"')
    for r in sorted(video, key=lambda r: r.peak_bitrate):
        peak = r.peak_bitrate + (audio.peak_bitrate if audio else 0)
        average = r.average_bitrate + (audio.average_bitrate if audio else 0)
        codecs = r.codecs + (f",{audio.codecs}" if audio else "")
        group = ',AUDIO="aud"' if audio else ""
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},CODECS="{codecs}"'
                  f"{_resolution(r)}{_frame_rate(r)}{group}", r.playlist]
    return "\n".join([*lines, ""])


def ts_master_playlist(variants: Sequence[Packaged]) -> str:
    """The MPEG-TS multivariant playlist (in ts/): each variant carries its audio; URIs relative to ts/."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in sorted(variants, key=lambda r: r.peak_bitrate):
        uri = r.playlist.removeprefix(f"{TS_DIR}/")
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={r.peak_bitrate},AVERAGE-BANDWIDTH={r.average_bitrate},'
                  f'CODECS="{r.codecs}"{_resolution(r)}{_frame_rate(r)}', uri]
    return "\n".join([*lines, ""])


def _duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _timeline(segments: Sequence[Segment]) -> list[str]:
    """<S> elements, run-length coded, from durations rounded on the running total."""
    ends, total = [], 0.0
    for s in segments:
        total += s.duration
        ends.append(round(total * _TIMESCALE))
    durations = [end - start for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    out: list[str] = []
    i = 0
    while i < len(durations):
        j = i
        while j + 1 < len(durations) and durations[j + 1] == durations[i]:
            j += 1
        t = ' t="0"' if i == 0 else ""
        r = f' r="{j - i}"' if j > i else ""
        out.append(f'<S{t} d="{durations[i]}"{r}/>')
        i = j + 1
    return out


def _template(segments: Sequence[Segment], indent: str) -> list[str]:
    inner = indent + "  "
    return [f'{indent}<SegmentTemplate timescale="{_TIMESCALE}" startNumber="1" '
            'initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/seg_$Number%05d$.m4s">',
            f"{inner}<SegmentTimeline>",
            *(f"{inner}  {s}" for s in _timeline(segments)),
            f"{inner}</SegmentTimeline>",
            f"{indent}</SegmentTemplate>"]


def mpd(video: Sequence[Packaged], audio: Packaged | None) -> str:
    """The DASH MPD over the fMP4 renditions. Video renditions must share one segmentation (they do: same GOP)."""
    ordered = sorted(video, key=lambda r: r.peak_bitrate)
    duration = max(r.duration for r in ordered)
    top = max(ordered, key=lambda r: (r.width or 0) * (r.height or 0))
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<MPD xmlns="{DASH_NS}" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" '
             f'mediaPresentationDuration="{_duration(duration)}" minBufferTime="{_duration(SEGMENT_SECONDS)}">',
             f'  <Period id="0" start="PT0S" duration="{_duration(duration)}">',
             '    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" '
             f'startWithSAP="1" frameRate="{_rate(top.frame_rate)}" maxWidth="{top.width}" '
             f'maxHeight="{top.height}" par="16:9">',
             *_template(ordered[0].segments, "      ")]
    for r in ordered:
        lines.append(f"      <Representation id={quoteattr(r.id)} bandwidth=\"{r.peak_bitrate}\" "
                     f"codecs={quoteattr(r.codecs)} width=\"{r.width}\" height=\"{r.height}\" sar=\"1:1\"/>")
    lines.append("    </AdaptationSet>")
    if audio is not None:
        lines += ['    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="en" '
                  'segmentAlignment="true" startWithSAP="1">',
                  *_template(audio.segments, "      "),
                  f"      <Representation id={quoteattr(audio.id)} bandwidth=\"{audio.peak_bitrate}\" "
                  f"codecs={quoteattr(audio.codecs)} audioSamplingRate=\"{audio.sample_rate or AUDIO.sample_rate}\">",
                  '        <AudioChannelConfiguration '
                  'schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" '
                  f'value="{audio.channels or AUDIO.channels}"/>',
                  "      </Representation>",
                  "    </AdaptationSet>"]
    lines += ["  </Period>", "</MPD>", ""]
    return "\n".join(lines)


def _rate(rate: float | None) -> str:
    value = rate or FPS
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
