"""HLS playlists (RFC 8216 §4) read for the catalog: text in, the references and attributes we record out. Pure.

Rules kept here:
- Attribute lists follow §4.2: `NAME=VALUE` pairs separated by commas, quoted strings may hold commas;
  names are upper-case letters, digits and `-`. A malformed list raises ValueError naming the line.
- A multivariant playlist is one with `#EXT-X-STREAM-INF` (§4.4.6.2); its variants are the URI lines that
  follow those tags, and its renditions (`#EXT-X-MEDIA` with a URI, §4.4.6.1) and I-frame playlists
  (`#EXT-X-I-FRAME-STREAM-INF`, §4.4.6.3) are playlists too.
- A media playlist's files are its segment URI lines plus `#EXT-X-MAP` URIs (§4.4.4.5). Key URIs
  (`EXT-X-KEY`) name licence or key servers, not content, and are not catalogued.
- Every file must start with `#EXTM3U` (§4.4.1.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]*)')


@dataclass(frozen=True, slots=True)
class Variant:
    uri: str
    bandwidth: int
    average_bandwidth: int | None
    codecs: str
    resolution: tuple[int, int] | None
    frame_rate: float | None


@dataclass(frozen=True, slots=True)
class MediaRendition:
    uri: str
    type: str  # AUDIO, SUBTITLES, CLOSED-CAPTIONS (the last has no URI and is skipped)
    group: str
    name: str


@dataclass(frozen=True, slots=True)
class Multivariant:
    variants: tuple[Variant, ...]
    media: tuple[MediaRendition, ...]
    iframe_uris: tuple[str, ...]


def parse_attributes(text: str, where: str) -> dict[str, str]:
    """§4.2 attribute list -> {NAME: value}, quotes removed."""
    attrs: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _ATTR.match(text, pos)
        if match is None:
            raise ValueError(f"{where}: malformed attribute list at {text[pos:pos + 30]!r}")
        value = match.group(2)
        attrs[match.group(1)] = value[1:-1] if value.startswith('"') else value
        pos = match.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"{where}: expected ',' at {text[pos:pos + 30]!r}")
            pos += 1
    return attrs


def _lines(text: str, name: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0].lstrip("\ufeff") != "#EXTM3U":
        raise ValueError(f"{name}: not an HLS playlist (no #EXTM3U first line)")
    return lines


def is_multivariant(text: str) -> bool:
    return "#EXT-X-STREAM-INF:" in text


def parse_multivariant(text: str, name: str = "playlist") -> Multivariant:
    variants: list[Variant] = []
    media: list[MediaRendition] = []
    iframes: list[str] = []
    pending: dict[str, str] | None = None
    for n, line in enumerate(_lines(text, name), 1):
        where = f"{name} line {n}"
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = parse_attributes(line.partition(":")[2], where)
        elif line.startswith("#EXT-X-MEDIA:"):
            attrs = parse_attributes(line.partition(":")[2], where)
            if "URI" in attrs:
                media.append(MediaRendition(attrs["URI"], attrs.get("TYPE", ""), attrs.get("GROUP-ID", ""),
                                            attrs.get("NAME", "")))
        elif line.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            attrs = parse_attributes(line.partition(":")[2], where)
            if "URI" in attrs:
                iframes.append(attrs["URI"])
        elif line and not line.startswith("#"):
            if pending is None:
                raise ValueError(f"{where}: URI {line[:60]!r} without a preceding #EXT-X-STREAM-INF")
            variants.append(_variant(line, pending, where))
            pending = None
    if not variants:
        raise ValueError(f"{name}: no variants")
    return Multivariant(tuple(variants), tuple(media), tuple(iframes))


def _variant(uri: str, attrs: dict[str, str], where: str) -> Variant:
    try:
        bandwidth = int(attrs["BANDWIDTH"])
        average = int(attrs["AVERAGE-BANDWIDTH"]) if "AVERAGE-BANDWIDTH" in attrs else None
        resolution = None
        if "RESOLUTION" in attrs:
            width, _, height = attrs["RESOLUTION"].lower().partition("x")
            resolution = (int(width), int(height))
        frame_rate = float(attrs["FRAME-RATE"]) if "FRAME-RATE" in attrs else None
    except KeyError:
        raise ValueError(f"{where}: #EXT-X-STREAM-INF without BANDWIDTH") from None
    except ValueError:
        raise ValueError(f"{where}: bad BANDWIDTH, RESOLUTION or FRAME-RATE in {attrs}") from None
    return Variant(uri, bandwidth, average, attrs.get("CODECS", ""), resolution, frame_rate)


def media_files(text: str, name: str = "playlist") -> list[str]:
    """The URIs a media playlist references: init sections (EXT-X-MAP) and segments, in order, once each."""
    uris: list[str] = []
    for n, line in enumerate(_lines(text, name), 1):
        if line.startswith("#EXT-X-MAP:"):
            attrs = parse_attributes(line.partition(":")[2], f"{name} line {n}")
            if "URI" not in attrs:
                raise ValueError(f"{name} line {n}: #EXT-X-MAP without URI")
            uris.append(attrs["URI"])
        elif line.startswith("#EXT-X-STREAM-INF:"):
            raise ValueError(f"{name}: a multivariant playlist where a media playlist was expected")
        elif line and not line.startswith("#"):
            uris.append(line)
    return list(dict.fromkeys(uris))
