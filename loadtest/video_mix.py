"""The benchmark's video mix: the requests that HLS player sessions make over one real title, with their shares.

Rules it keeps:
- The mix is read from the title's own playlists (RFC 8216): the multivariant playlist names the video variants
  (§4.4.6.2) and the audio rendition (§4.4.6.1); each media playlist names its init section (EXT-X-MAP,
  §4.4.4.5) and its segments. Playlists are parsed by control.catalog.hls, the catalog's reader, not again here.
- `build_mix` is pure: playlist texts and file sizes in, weighted requests out. `load_title` is the only
  function that reads files.
- One session (SessionModel) loads the multivariant playlist once, then the audio playlist, its init and every
  audio segment. Video starts on the lowest-bandwidth variant for `startup_segments` segments (players start
  low until they have measured the link), then plays the rest on each variant in proportion to `rung_weights`
  (sessions differ in bandwidth); moving to a variant costs its playlist and its init. With
  `reload_playlists` the active audio and video playlists are loaded again after every segment played, as a
  client of a live playlist reloads it every target duration (§6.3.4); a VOD client (EXT-X-ENDLIST) would
  load each once.
- Weights are exact fractions (requests per session). `request_lines` repeats each path the smallest whole
  number of times that keeps those fractions, so wrk's uniform pick over the lines (random_object.lua)
  reproduces the shares exactly.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from control.catalog.hls import media_files, parse_attributes, parse_multivariant

MASTER = "master playlist"
PLAYLIST = "media playlist"
INIT = "init segment"
AUDIO = "audio segment"
VIDEO = "video segment"
_MAX_LINES = 1_000_000  # a paths file wrk loads into every thread's Lua state


@dataclass(frozen=True)
class SessionModel:
    startup_segments: int = 2
    rung_weights: tuple[int, ...] | None = None  # one per video variant, lowest bandwidth first; None: equal
    reload_playlists: bool = True

    def describe(self) -> str:
        weights = "equal" if self.rung_weights is None else ":".join(map(str, self.rung_weights))
        reload = ("the active audio and video playlists reloaded after every segment (live-style, RFC 8216 "
                  "§6.3.4)" if self.reload_playlists else "each playlist loaded once (VOD)")
        return (f"one session = master playlist once, audio playlist + init + every audio segment, video on the "
                f"lowest variant for {self.startup_segments} segment(s) then on each variant by weight "
                f"({weights}; a switch loads that variant's playlist and init); {reload}")


@dataclass(frozen=True)
class MixEntry:
    key: str  # the content key, e.g. titles/1001/360p/seg_00001.m4s
    kind: str  # MASTER, PLAYLIST, INIT, AUDIO or VIDEO
    rendition: str  # the variant or rendition directory ("360p", "audio"); "" for the master playlist
    size: int
    weight: Fraction  # requests per session


@dataclass(frozen=True)
class KindLine:
    """One line of the mix's summary."""

    kind: str
    objects: int
    min_size: int
    max_size: int
    request_share: float
    byte_share: float


@dataclass(frozen=True)
class VideoMix:
    title: str  # the title's key prefix, e.g. titles/1001
    entries: tuple[MixEntry, ...]
    model: SessionModel

    @property
    def requests_per_session(self) -> Fraction:
        return sum((entry.weight for entry in self.entries), Fraction(0))

    @property
    def mean_size(self) -> float:
        """Bytes per request, over the mix."""
        total = self.requests_per_session
        return float(sum(entry.weight * entry.size for entry in self.entries) / total) if total else 0.0

    def request_lines(self) -> list[str]:
        """Each key, repeated in proportion to its weight (the fewest lines that keep the exact shares)."""
        scale = math.lcm(*(entry.weight.denominator for entry in self.entries))
        counts = [int(entry.weight * scale) for entry in self.entries]
        divisor = math.gcd(*counts)
        if sum(counts) // divisor > _MAX_LINES:
            raise ValueError(f"video mix of {self.title}: the exact shares need {sum(counts) // divisor:,} lines "
                             f"(more than {_MAX_LINES:,}); use smaller rung weights")
        return [entry.key for entry, count in zip(self.entries, counts, strict=True)
                for _ in range(count // divisor)]

    def summary(self) -> list[KindLine]:
        """Per kind (video segments per variant): objects, size range, share of requests and of bytes."""
        groups: dict[str, list[MixEntry]] = {}
        for entry in self.entries:
            label = f"{VIDEO} {entry.rendition}" if entry.kind == VIDEO else entry.kind
            groups.setdefault(label, []).append(entry)
        requests = self.requests_per_session
        total_bytes = sum(e.weight * e.size for e in self.entries)
        return [KindLine(label, len(group), min(e.size for e in group), max(e.size for e in group),
                         float(sum(e.weight for e in group) / requests),
                         float(sum(e.weight * e.size for e in group) / total_bytes) if total_bytes else 0.0)
                for label, group in groups.items() if any(e.weight for e in group)]


def build_mix(title: str, master: str, playlists: Mapping[str, str], sizes: Mapping[str, int],
              model: SessionModel = SessionModel()) -> VideoMix:
    """The mix of one title. `master` is the multivariant playlist's path in the title; `playlists` maps
    playlist paths (relative to the title) to their text, `sizes` maps every referenced file to its bytes."""
    parsed = parse_multivariant(playlists[master], master)
    variants = sorted(parsed.variants, key=lambda v: v.bandwidth)
    audio = next((m.uri for m in parsed.media if m.type == "AUDIO"), None)
    weights = model.rung_weights or (1,) * len(variants)
    if len(weights) != len(variants) or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"{title}: rung weights {weights} do not fit its {len(variants)} video variants "
                         f"(one non-negative weight each, not all zero)")
    shares = [Fraction(w, sum(weights)) for w in weights]
    counts: dict[tuple[str, str], Fraction] = {(master, MASTER): Fraction(1)}

    def add(path: str, kind: str, weight: Fraction) -> None:
        if weight == 0:  # a variant no session reaches, or a segment played only at another rung
            return
        counts[(path, kind)] = counts.get((path, kind), Fraction(0)) + weight

    if audio is not None:
        playlist = _resolve(master, audio)
        init, segments = _media(playlist, playlists)
        add(playlist, PLAYLIST, Fraction(1 + (len(segments) if model.reload_playlists else 0)))
        if init is not None:
            add(init, INIT, Fraction(1))
        for segment in segments:
            add(segment, AUDIO, Fraction(1))
    startup = min(model.startup_segments, *(len(_media(_resolve(master, v.uri), playlists)[1]) for v in variants))
    for n, (variant, share) in enumerate(zip(variants, shares, strict=True)):
        playlist = _resolve(master, variant.uri)
        init, segments = _media(playlist, playlists)
        # sessions reaching this variant: all of them for the lowest while starting up, `share` after that
        arrivals = share if n > 0 or startup == 0 else Fraction(1)
        played = Fraction(startup if n == 0 else 0) + share * (len(segments) - startup)
        add(playlist, PLAYLIST, arrivals + (played if model.reload_playlists else Fraction(0)))
        if init is not None:
            add(init, INIT, arrivals)
        for i, segment in enumerate(segments):
            add(segment, VIDEO, Fraction(1) if n == 0 and i < startup else Fraction(0) if i < startup else share)
    entries = []
    for (path, kind), weight in counts.items():
        if path not in sizes:
            raise ValueError(f"{title}: {path} is referenced by its playlists but has no size (missing file?)")
        entries.append(MixEntry(f"{title}/{path}", kind, _rendition(path), sizes[path], weight))
    return VideoMix(title, tuple(entries), model)


def _resolve(base: str, uri: str) -> str:
    """A playlist URI relative to the playlist that names it (RFC 3986 §5.2), as a path in the title."""
    if "://" in uri or uri.startswith("/"):
        raise ValueError(f"{base}: {uri!r} is not a relative URI; the mix reads titles whose files sit beside "
                         f"their playlists")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), uri))


def _media(playlist: str, playlists: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """(init section or None, segments) of one media playlist, as paths in the title."""
    text = playlists.get(playlist)
    if text is None:
        raise ValueError(f"media playlist {playlist} is named by the multivariant playlist but was not given")
    init = next((parse_attributes(line.partition(":")[2], playlist).get("URI") for line in text.splitlines()
                 if line.startswith("#EXT-X-MAP:")), None)
    files = [_resolve(playlist, uri) for uri in media_files(text, playlist) if uri != init]
    return (None if init is None else _resolve(playlist, init)), files


def _rendition(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def load_title(title_dir: str, master: str = "master.m3u8") -> tuple[dict[str, str], dict[str, int]]:
    """Read a title's playlists and the sizes of every file they name (the I/O half of build_mix)."""
    playlists: dict[str, str] = {}
    sizes: dict[str, int] = {}

    def read(path: str) -> str:
        with open(os.path.join(title_dir, path), encoding="utf-8") as fh:
            text = fh.read()
        playlists[path] = text
        sizes[path] = os.path.getsize(os.path.join(title_dir, path))
        return text

    parsed = parse_multivariant(read(master), master)
    for uri in [v.uri for v in parsed.variants] + [m.uri for m in parsed.media]:
        playlist = _resolve(master, uri)
        for file in media_files(read(playlist), playlist):
            path = _resolve(playlist, file)
            sizes[path] = os.path.getsize(os.path.join(title_dir, path))
    return playlists, sizes


def render_summary(mix: VideoMix) -> str:
    """The mix as a Markdown table, so a reader can judge what the video case loads."""
    lines = ["| kind | objects | size range | share of requests | share of bytes |", "|---|---:|---:|---:|---:|"]
    for line in mix.summary():
        lines.append(f"| {line.kind} | {line.objects} | {_size_range(line.min_size, line.max_size)} | "
                     f"{line.request_share:.1%} | {line.byte_share:.1%} |")
    return "\n".join(lines)


def _size_range(low: int, high: int) -> str:
    return _size(low) if low == high else f"{_size(low)} to {_size(high)}"


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def mix_line(mix: VideoMix, sources: Sequence[str] = ()) -> str:
    """One sentence under the summary: the session model and what one session costs."""
    made = f" ({', '.join(sources)})" if sources else ""
    return (f"video mix over {mix.title}{made}: {float(mix.requests_per_session):.1f} requests and "
            f"{_size(int(mix.mean_size * mix.requests_per_session))} per session, {_size(int(mix.mean_size))} "
            f"per request on average; {mix.model.describe()}")
