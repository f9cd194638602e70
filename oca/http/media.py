"""Content-Type of a cached object from its key's file extension.

Rules kept here:
- The extension is the text after the last "." of the key's last segment, compared case-insensitively;
  anything unknown, or no extension, is application/octet-stream (RFC 9110 §8.3: a sender that does
  not know the type may send none, and octet-stream is the neutral choice for a cache).
- No charset parameters: HLS playlists (RFC 8216 §4), WebVTT and JSON (RFC 8259 §11, which defines no
  charset parameter) are UTF-8 by definition, so a parameter would add nothing.
"""

from __future__ import annotations

_DEFAULT = "application/octet-stream"

_BY_EXTENSION: dict[str, str] = {
    # RFC 8216 §4: HLS playlists
    "m3u8": "application/vnd.apple.mpegurl",
    # ISO/IEC 23009-1 Annex C: DASH MPD
    "mpd": "application/dash+xml",
    # RFC 3555: MPEG-2 transport stream
    "ts": "video/mp2t",
    # ISO BMFF: segments (IANA video/iso.segment, ISO/IEC 23009-1), files (RFC 4337), CMAF tracks
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "cmfv": "video/mp4",
    "m4a": "audio/mp4",
    "cmfa": "audio/mp4",
    "aac": "audio/aac",
    "webm": "video/webm",
    # subtitles, artwork, metadata
    "vtt": "text/vtt",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "json": "application/json",
}

_PLAYLISTS = frozenset({"m3u8", "mpd"})


def _extension(key: str) -> str:
    name = key.rpartition("/")[2]
    stem, dot, extension = name.rpartition(".")
    return extension.lower() if dot and stem else ""


def media_type(key: str) -> str:
    """The Content-Type to send for `key`, e.g. "video/iso.segment" for "t/1/seg_00001.m4s"."""
    return _BY_EXTENSION.get(_extension(key), _DEFAULT)


def is_playlist(key: str) -> bool:
    """True for HLS and DASH playlists (.m3u8, .mpd), whose caching rules differ from segments'."""
    return _extension(key) in _PLAYLISTS
