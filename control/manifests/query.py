"""What a player says when it reloads the steering manifest: the pathways it uses and its throughput.

Pure and forgiving: `parse_steering_query` never raises; a value it cannot read is ignored, and the answer
is still a valid steering manifest (issue 4: garbage steering parameters are ignored).

Rules kept here:
- HLS (rfc8216bis §7.2; hls.js content-steering-controller): `_HLS_pathway` is the one pathway in use,
  sent unquoted by hls.js, quoted by some clients; both are accepted. `_HLS_throughput` is bits per second.
  hls.js sends `.` before it knows a pathway: that is no report.
- DASH (ETSI TS 103 998; dash.js ContentSteeringController): `_DASH_pathway` is a quoted comma list of every
  service location the player fetched from since its last steering request, ordered by measured throughput
  (highest first, unmeasured last); `_DASH_throughput` lists the measured throughputs (bits per second) in
  the same order, unmeasured ones left out. A list entry that is not a valid pathway id is dropped; a
  throughput list with any unreadable entry is dropped whole (its positions would no longer line up).
- `current` is the pathway the player reports first: for HLS the one in use, for DASH the best-measured one.
- Limits: values over 2,048 characters, more than 64 pathways, or throughputs outside 0..10^13 are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from control.manifests.common import PATHWAY_ID_RE

MAX_VALUE_CHARS = 2048
MAX_PATHWAYS = 64
MAX_THROUGHPUT = 10**13


@dataclass(frozen=True, slots=True)
class SteeringQuery:
    protocol: str | None  # "hls", "dash", or None when the player reported nothing readable
    pathways: tuple[str, ...] = ()  # as reported, first = current
    throughputs: tuple[int, ...] = ()  # bits/s, position i belongs to pathways[i] (may be shorter)

    @property
    def current(self) -> str | None:
        return self.pathways[0] if self.pathways else None

    def throughput(self, pathway: str) -> int | None:
        try:
            return self.throughputs[self.pathways.index(pathway)]
        except (ValueError, IndexError):
            return None


NO_REPORT = SteeringQuery(None)


def parse_steering_query(query: Mapping[str, str]) -> SteeringQuery:
    """The player's report from the steering request's query parameters (already URL-decoded or not)."""
    hls = _pathway_list(query.get("_HLS_pathway"), single=True)
    if hls:
        return SteeringQuery("hls", hls, _throughputs(query.get("_HLS_throughput"))[:1])
    dash = _pathway_list(query.get("_DASH_pathway"), single=False)
    if dash:
        return SteeringQuery("dash", dash, _throughputs(query.get("_DASH_throughput"))[:len(dash)])
    return NO_REPORT


def reports_leaving(query: SteeringQuery, ranked_first: str) -> bool:
    """True when the player reports a current pathway other than the one we ranked first (issue 4: the
    session then avoids that box until a fresh healthy poll)."""
    return query.current is not None and query.current != ranked_first


def _clean(raw: object) -> str | None:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_VALUE_CHARS:
        return None
    text = raw.strip()
    if "%" in text:
        text = unquote(text).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text or None


def _pathway_list(raw: object, *, single: bool) -> tuple[str, ...]:
    text = _clean(raw)
    if text is None:
        return ()
    items = [text] if single else text.split(",")
    out: dict[str, None] = {}
    for item in items:
        item = item.strip().strip('"').strip()
        if item and item != "." and PATHWAY_ID_RE.fullmatch(item):
            out.setdefault(item, None)
    return tuple(out)[:MAX_PATHWAYS]


def _throughputs(raw: object) -> tuple[int, ...]:
    text = _clean(raw)
    if text is None:
        return ()
    values = []
    for item in text.split(","):
        value = _bits_per_second(item.strip())
        if value is None:
            return ()
        values.append(value)
    return tuple(values[:MAX_PATHWAYS])


def _bits_per_second(text: str) -> int | None:
    if not text or len(text) > 32:
        return None
    try:
        number = int(text) if text.isdigit() else float(text)
    except ValueError:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    value = int(number)
    return value if 0 <= value <= MAX_THROUGHPUT else None
