"""The HLS multivariant playlist of one session: every variant once per pathway, plus the content steering tag.

`HlsTemplate.build(title)` does the per-title work once (attribute lists, codecs, bandwidth sums, stable ids);
`render(pathways, steering_uri)` is then only string joins, so a session's playlist costs microseconds.

Rules kept here:
- `#EXT-X-CONTENT-STEERING:SERVER-URI="...",PATHWAY-ID="<first pathway>"` (rfc8216bis §4.4.6.6): the player
  starts on our first choice before it has loaded the steering manifest.
- Each pathway gets one full set of `#EXT-X-STREAM-INF` with `PATHWAY-ID` and `STABLE-VARIANT-ID` (the
  rendition id, identical across pathways so a player switching pathway keeps its variant; rfc8216bis
  §4.4.6.2). URIs are absolute: pathways are different hosts.
- Alternate renditions (audio, subtitles) are declared once per pathway in a group of their own
  (`GROUP-ID="aud.<pathway>"`), referenced by that pathway's variants, with `STABLE-RENDITION-ID` equal
  across pathways. EXT-X-MEDIA has no PATHWAY-ID attribute in the spec; distinct groups per pathway are how
  hls.js ties renditions to a pathway (its own pathway clones name groups `<group>_clone_<pathway>`).
- BANDWIDTH and CODECS of a variant cover the audio it plays with (RFC 8216 §4.3.4.2: the largest sum of
  peak rates of any playable combination; CODECS lists every format of the variant and its renditions).
- Variants keep the catalogue's order (the packager's; some clients start on the first variant listed).
- Renditions without an HLS playlist are skipped; a title with nothing to play raises ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from control.manifests.common import STABLE_ID_RE, PathwayBase, check_pathways, check_quotable
from control.model import Rendition, Title

HLS_VERSION = 6  # as the fMP4 media playlists of our packager (EXT-X-MAP in a media playlist needs 6)


@dataclass(frozen=True, slots=True)
class _Variant:
    head: str  # `#EXT-X-STREAM-INF:BANDWIDTH=...` up to the group attributes
    tail: str  # `,STABLE-VARIANT-ID="..."\n`
    path: str  # content path of its media playlist


@dataclass(frozen=True, slots=True)
class _Alternate:
    head: str  # `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud.`
    middle: str  # `",NAME=...,STABLE-RENDITION-ID="...",URI="`
    path: str


@dataclass(frozen=True, slots=True)
class HlsTemplate:
    title_id: str
    variants: tuple[_Variant, ...]
    alternates: tuple[_Alternate, ...]
    has_audio: bool
    has_subtitles: bool

    @classmethod
    def build(cls, title: Title) -> HlsTemplate:
        playable = [r for r in title.renditions if r.playlist]
        video = [r for r in playable if r.kind == "video"]
        audio = [r for r in playable if r.kind == "audio"]
        subtitles = [r for r in playable if r.kind == "subtitles"]
        if not video:  # an audio-only title: its audio renditions are the variants
            video, audio = audio, []
        if not video:
            raise ValueError(f"title {title.id!r}: no rendition with an HLS playlist")
        stable = _stable_ids([r.id for r in playable])
        audio_codecs = _distinct(c for r in audio for c in r.codecs.split(",") if c.strip())
        peak_audio = max((r.bandwidth for r in audio), default=0)
        average_audio = max((r.average_bandwidth or r.bandwidth for r in audio), default=0)
        variants = tuple(_variant(r, stable[r.id], audio_codecs, peak_audio, average_audio, bool(audio))
                         for r in video)
        alternates = tuple(_alternate(r, stable[r.id], "AUDIO", "aud", i == 0) for i, r in enumerate(audio))
        alternates += tuple(_alternate(r, stable[r.id], "SUBTITLES", "sub", False) for r in subtitles)
        return cls(title.id, variants, alternates, bool(audio), bool(subtitles))

    def render(self, pathways: Sequence[PathwayBase], steering_uri: str) -> str:
        """The playlist text; ValueError on an empty or invalid pathway list or an unquotable URI."""
        check_pathways(pathways)
        check_quotable(steering_uri, "steering URI")
        out = [f'#EXTM3U\n#EXT-X-VERSION:{HLS_VERSION}\n#EXT-X-INDEPENDENT-SEGMENTS\n'
               f'#EXT-X-CONTENT-STEERING:SERVER-URI="{steering_uri}",PATHWAY-ID="{pathways[0].id}"\n']
        for pathway in pathways:
            pid, base = pathway.id, pathway.base_url
            for alt in self.alternates:
                out.append(f'{alt.head}{pid}{alt.middle}{base}/{alt.path}"\n')
        for pathway in pathways:
            pid, base = pathway.id, pathway.base_url
            groups = (f',AUDIO="aud.{pid}"' if self.has_audio else "") + \
                (f',SUBTITLES="sub.{pid}"' if self.has_subtitles else "")
            middle = f'{groups},PATHWAY-ID="{pid}"'
            for v in self.variants:
                out.append(f"{v.head}{middle}{v.tail}{base}/{v.path}\n")
        return "".join(out)


def _variant(r: Rendition, stable_id: str, audio_codecs: list[str], peak_audio: int, average_audio: int,
             with_audio: bool) -> _Variant:
    own = [c.strip() for c in r.codecs.split(",") if c.strip()]
    codecs = ",".join(_distinct(own + (audio_codecs if with_audio else [])))
    attrs = [f"BANDWIDTH={r.bandwidth + peak_audio}"]
    if r.average_bandwidth is not None:
        attrs.append(f"AVERAGE-BANDWIDTH={r.average_bandwidth + average_audio}")
    if codecs:
        check_quotable(codecs, f"rendition {r.id} codecs")
        attrs.append(f'CODECS="{codecs}"')
    if r.resolution is not None:
        attrs.append(f"RESOLUTION={r.resolution[0]}x{r.resolution[1]}")
    if r.frame_rate is not None:
        attrs.append(f"FRAME-RATE={r.frame_rate:.3f}")
    assert r.playlist is not None  # filtered by build()
    return _Variant("#EXT-X-STREAM-INF:" + ",".join(attrs), f',STABLE-VARIANT-ID="{stable_id}"\n', r.playlist)


def _alternate(r: Rendition, stable_id: str, media_type: str, group: str, default: bool) -> _Alternate:
    check_quotable(r.id, "rendition id")
    assert r.playlist is not None  # filtered by build()
    flags = "DEFAULT=YES,AUTOSELECT=YES" if default else "DEFAULT=NO,AUTOSELECT=YES"
    return _Alternate(f'#EXT-X-MEDIA:TYPE={media_type},GROUP-ID="{group}.',
                      f'",NAME="{r.id}",{flags},STABLE-RENDITION-ID="{stable_id}",URI="', r.playlist)


def _stable_ids(rendition_ids: Sequence[str]) -> dict[str, str]:
    """Rendition id -> a STABLE-*-ID: itself when its characters allow, else a cleaned, still unique, form."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for rid in rendition_ids:
        candidate = rid if STABLE_ID_RE.fullmatch(rid) else "".join(
            c if STABLE_ID_RE.fullmatch(c) else "-" for c in rid) or "r"
        unique, n = candidate, 1
        while unique in used:
            n += 1
            unique = f"{candidate}.{n}"
        used.add(unique)
        out[rid] = unique
    return out


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item.strip() for item in items))
