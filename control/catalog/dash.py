"""DASH MPDs (ISO/IEC 23009-1) read for the catalog: XML in, representations and the files they use out. Pure.

Rules kept here:
- Only static (on-demand) MPDs in the `urn:mpeg:dash:schema:mpd:2011` namespace; anything else raises
  ValueError naming the problem. The XML parser is the standard library's, which refuses external entities.
- BaseURL elements resolve relative to the level above (MPD → Period → AdaptationSet → Representation).
- Segment addressing (§5.3.9): SegmentList (Initialization@sourceURL, SegmentURL@media), SegmentTemplate
  with a SegmentTimeline (S@t, @d, @r) or with @duration over the period's or MPD's duration (§5.3.9.5.3),
  and $RepresentationID$, $Number$, $Time$, $Bandwidth$ with printf widths (`$Number%05d$`); a
  Representation with none of these is one file, its BaseURL. SegmentTemplate and codecs inherit from the
  AdaptationSet.
- At most MAX_SEGMENTS per representation, so a hostile MPD cannot make us list millions of files.
"""

from __future__ import annotations

import math
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS = "urn:mpeg:dash:schema:mpd:2011"
MAX_SEGMENTS = 100_000
_T = f"{{{NS}}}"
_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_IDENT = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth)(%0(\d+)d)?\$|\$\$")


@dataclass(frozen=True, slots=True)
class Representation:
    id: str
    kind: str  # video | audio | subtitles
    bandwidth: int
    codecs: str
    resolution: tuple[int, int] | None
    frame_rate: float | None
    files: tuple[str, ...]  # relative to the MPD's directory (or absolute URLs, left to the caller)


def parse_duration(text: str) -> float:
    """xs:duration (the subset MPDs use: days, hours, minutes, seconds) -> seconds."""
    match = _DURATION.match(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def parse_mpd(text: str | bytes, name: str = "manifest.mpd") -> list[Representation]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"{name}: not well-formed XML: {exc}") from None
    if root.tag != f"{_T}MPD":
        raise ValueError(f"{name}: root element is {root.tag}, expected MPD in namespace {NS}")
    if root.get("type", "static") != "static":
        raise ValueError(f"{name}: only static (on-demand) MPDs can be catalogued")
    total = _opt_duration(root.get("mediaPresentationDuration"), name)
    base = _base(root, "")
    out: list[Representation] = []
    for period in root.findall(f"{_T}Period"):
        period_base = _base(period, base)
        period_duration = _opt_duration(period.get("duration"), name) or total
        for aset in period.findall(f"{_T}AdaptationSet"):
            aset_base = _base(aset, period_base)
            for rep in aset.findall(f"{_T}Representation"):
                out.append(_representation(rep, aset, _base(rep, aset_base), period_duration, name))
    if not out:
        raise ValueError(f"{name}: no Representation")
    return out


def _opt_duration(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _base(element: ET.Element, parent: str) -> str:
    node = element.find(f"{_T}BaseURL")
    if node is None or not (node.text or "").strip():
        return parent
    text = (node.text or "").strip()
    if "://" in text or text.startswith("/"):
        return text
    return posixpath.join(posixpath.dirname(parent) if parent and not parent.endswith("/") else parent, text)


def _kind(rep: ET.Element, aset: ET.Element) -> str:
    content = aset.get("contentType") or ""
    mime = rep.get("mimeType") or aset.get("mimeType") or ""
    if content == "audio" or mime.startswith("audio/"):
        return "audio"
    if content == "text" or mime.startswith(("text/", "application/ttml")):
        return "subtitles"
    return "video"


def _int(value: str | None, what: str, name: str, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise ValueError(f"{name}: {what} is required")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: {what} is not an integer: {value!r}") from None


def _frame_rate(text: str | None) -> float | None:
    if not text:
        return None
    num, _, den = text.partition("/")
    try:
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        return None


def _representation(rep: ET.Element, aset: ET.Element, base: str, duration: float | None,
                    name: str) -> Representation:
    rid = rep.get("id")
    if not rid:
        raise ValueError(f"{name}: a Representation without @id")
    where = f"{name} Representation {rid}"
    bandwidth = _int(rep.get("bandwidth"), "@bandwidth", where)
    width, height = rep.get("width") or aset.get("width"), rep.get("height") or aset.get("height")
    resolution = (_int(width, "@width", where), _int(height, "@height", where)) if width and height else None
    files = _segments(rep, aset, base, duration, rid, bandwidth, where)
    return Representation(rid, _kind(rep, aset), bandwidth, rep.get("codecs") or aset.get("codecs") or "",
                          resolution, _frame_rate(rep.get("frameRate") or aset.get("frameRate")), tuple(files))


def _join(base: str, ref: str) -> str:
    if "://" in ref or ref.startswith("/"):
        return ref
    if not base:
        return ref
    return posixpath.join(base if base.endswith("/") else posixpath.dirname(base), ref)


def _segments(rep: ET.Element, aset: ET.Element, base: str, duration: float | None, rid: str, bandwidth: int,
              where: str) -> list[str]:
    seg_list = rep.find(f"{_T}SegmentList")
    if seg_list is None:
        seg_list = aset.find(f"{_T}SegmentList")
    if seg_list is not None:
        files = []
        init = seg_list.find(f"{_T}Initialization")
        if init is not None and init.get("sourceURL"):
            files.append(_join(base, init.get("sourceURL", "")))
        files += [_join(base, s.get("media", "")) for s in seg_list.findall(f"{_T}SegmentURL") if s.get("media")]
        return files[:MAX_SEGMENTS]
    template = rep.find(f"{_T}SegmentTemplate")
    if template is None:
        template = aset.find(f"{_T}SegmentTemplate")
    if template is None:
        if not base or base.endswith("/"):
            raise ValueError(f"{where}: no SegmentList, SegmentTemplate or BaseURL file")
        return [base]
    return _from_template(template, base, duration, rid, bandwidth, where)


def _from_template(template: ET.Element, base: str, duration: float | None, rid: str, bandwidth: int,
                   where: str) -> list[str]:
    def fill(pattern: str, number: int, time: int) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name == "RepresentationID":
                return rid
            value = {"Number": number, "Time": time, "Bandwidth": bandwidth}[name]
            return str(value).zfill(int(match.group(3))) if match.group(3) else str(value)
        return _join(base, _IDENT.sub(one, pattern))

    files = []
    if template.get("initialization"):
        files.append(fill(template.get("initialization", ""), 0, 0))
    media = template.get("media")
    if not media:
        return files
    start = _int(template.get("startNumber"), "@startNumber", where, 1)
    timeline = template.find(f"{_T}SegmentTimeline")
    if timeline is not None:
        number, time = start, 0
        for s in timeline.findall(f"{_T}S"):
            time = _int(s.get("t"), "S@t", where, time)
            d = _int(s.get("d"), "S@d", where)
            repeat = _int(s.get("r"), "S@r", where, 0)
            if repeat < 0 or d <= 0:
                raise ValueError(f"{where}: open-ended or empty S element (r={repeat}, d={d})")
            for _ in range(repeat + 1):
                if len(files) > MAX_SEGMENTS:
                    raise ValueError(f"{where}: more than {MAX_SEGMENTS} segments")
                files.append(fill(media, number, time))
                number, time = number + 1, time + d
        return files
    seg_duration = _int(template.get("duration"), "SegmentTemplate@duration", where)
    timescale = _int(template.get("timescale"), "@timescale", where, 1)
    if duration is None or seg_duration <= 0 or timescale <= 0:
        raise ValueError(f"{where}: SegmentTemplate@duration needs a positive duration and a presentation duration")
    count = math.ceil(duration * timescale / seg_duration - 1e-9)
    if count > MAX_SEGMENTS:
        raise ValueError(f"{where}: {count} segments is more than {MAX_SEGMENTS}")
    files += [fill(media, start + i, i * seg_duration) for i in range(count)]
    return files
