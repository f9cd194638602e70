"""The fallback package: the same layout and playlists as a real one, with segments of plain non-video bytes.

Used with `--synthetic`, or when ffmpeg/ffprobe are not installed. Players cannot decode it, but every
playlist and the MPD are valid and the control plane ingests it like a real title, so the CDN's paths
(ingest, fill, steering, caching, ranges) can still be exercised. Rules kept here:
- Every number in the playlists is the ladder's nominal value (codecs, resolution, frame rate) and the
  bit rates measured on the bytes written, which are the nominal rates divided by SIZE_DIVISOR to keep a
  synthetic title small (a 30 s title is about 1.5 MB instead of 30 MB).
- The bytes are deterministic (a header naming the file, then a fixed byte pattern), so two runs write the
  same files and the same digests.
"""

from __future__ import annotations

import os

from oca.content.ladder import AUDIO, FPS, LADDER, SEGMENT_SECONDS, TS_DIR, TitleSpec, segment_count
from oca.content.manifests import (
    Packaged,
    Segment,
    master_playlist,
    media_playlist,
    mpd,
    ts_master_playlist,
)

SIZE_DIVISOR = 16
_NOMINAL_CODECS = {"360p": "avc1.64001e", "720p": "avc1.64001f", "1080p": "avc1.640028"}
_PATTERN = bytes(range(256))


def _filler(label: str, size: int) -> bytes:
    head = f"OCA synthetic sample, not video: {label}\n".encode()
    body = head + _PATTERN * (size // len(_PATTERN) + 1)
    return body[:size]


def _write(root: str, rel: str, data: bytes) -> None:
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _durations(duration: float) -> list[float]:
    count = segment_count(duration)
    return [min(SEGMENT_SECONDS, duration - i * SEGMENT_SECONDS) for i in range(count)]


def _rendition(root: str, spec: TitleSpec, rid: str, bitrate: int, ext: str, with_init: bool) -> list[Segment]:
    segments = []
    for n, seconds in enumerate(_durations(spec.duration), 1):
        uri = f"seg_{n:05d}.{ext}"
        size = max(188, int(bitrate * seconds / 8 / SIZE_DIVISOR))
        _write(root, f"{rid}/{uri}", _filler(f"titles/{spec.id}/{rid}/{uri}", size))
        segments.append(Segment(uri, seconds, size))
    init = "init.mp4" if with_init else None
    if init:
        _write(root, f"{rid}/{init}", _filler(f"titles/{spec.id}/{rid}/{init}", 800))
    _write(root, f"{rid}/index.m3u8", media_playlist(segments, init).encode())
    return segments


def write_synthetic(root: str, spec: TitleSpec) -> list[Packaged]:
    """Write the package under `root` (the title's directory); the renditions as the catalog describes them."""
    video = []
    for rung in LADDER:
        segments = _rendition(root, spec, rung.id, rung.bitrate, "m4s", with_init=True)
        video.append(Packaged(rung.id, "video", f"{rung.id}/index.m3u8", _NOMINAL_CODECS.get(rung.id, "avc1.64001f"),
                              tuple(segments), "init.mp4", rung.width, rung.height, float(FPS)))
    segments = _rendition(root, spec, AUDIO.id, AUDIO.bitrate, "m4s", with_init=True)
    audio = Packaged(AUDIO.id, "audio", f"{AUDIO.id}/index.m3u8", AUDIO.codecs, tuple(segments), "init.mp4",
                     sample_rate=AUDIO.sample_rate, channels=AUDIO.channels)
    ts = []
    for rung, v in zip(LADDER, video, strict=True):
        rid = f"{TS_DIR}/{rung.id}"
        segments = _rendition(root, spec, rid, rung.bitrate + AUDIO.bitrate, "ts", with_init=False)
        ts.append(Packaged(rid, "video", f"{rid}/index.m3u8", f"{v.codecs},{AUDIO.codecs}", tuple(segments),
                           width=rung.width, height=rung.height, frame_rate=float(FPS)))
    _write(root, "master.m3u8", master_playlist(video, audio).encode())
    _write(root, "manifest.mpd", mpd(video, audio).encode())
    _write(root, f"{TS_DIR}/master.m3u8", ts_master_playlist(ts).encode())
    return [*video, audio]
