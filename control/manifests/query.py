"""What a player says when it reloads the steering manifest: the pathways it uses and its throughput.

Pure and forgiving: `parse_steering_query` never raises; a value it cannot read is ignored, and the answer
is still a valid steering manifest (issue 4: garbage steering parameters are ignored).

Rules kept here:
- HLS (rfc8216bis §7.2; hls.js content-steering-controller): `_HLS_pathway` is the one pathway in use,
  sent unquoted by hls.js, quoted by some clients; both are accepted. `_HLS_throughput` is bits per second.
  hls.js sends `.` before it knows a pathway: that is no report.
- DASH (ETSI TS 103 998 / DASH-IF CTS 001, the steering request's query parameters; what dash.js 5.2.1 puts in
  them, ContentSteeringController._getSteeringServerUrl): `_DASH_pathway` is a quoted comma list of the
  service locations the player fetched from since its previous steering request (dash.js issue #4714: "the
  last used pathway(s)"), not "the one in use" and not a priority. dash.js 5 (PR #4724) lists them in order
  of first use, the pathway it was on at the previous request carried over first, so a player that just
  followed our steering from a2 to a1 sends "a2,a1"; dash.js 4 sorted them by throughput. Neither order says
  which pathway is in use, so nothing here reads list order.
  `_DASH_throughput` gives each listed pathway's measured throughput (bits per second) in the same order,
  an empty entry for one not measured (dash.js 5.x); older players leave unmeasured ones out at the end,
  which is how they are kept here (so a list with nothing measured, `,`, is no throughput at all).
  A list entry that is not a valid pathway id is dropped; a throughput list with any unreadable non-empty
  entry is dropped whole (its positions would no longer line up).
- `current` is the pathway in use when the player says which one that is: HLS only (None for DASH).
- Leaving (issue 4; issue 13, defect 8): the player left the pathway we ranked first only when that pathway
  is not among those it reports: for HLS the one in use is another; for DASH it fetched nothing from it in a
  whole steering period in which we ranked it first. A DASH list that holds it next to others is a player
  moving onto it or off it, which the list cannot tell apart, so it is no report of leaving.
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
    pathways: tuple[str, ...] = ()  # as reported: HLS the one in use; DASH those used since the last reload
    throughputs: tuple[int | None, ...] = ()  # bits/s (None: not measured), position i is pathways[i]'s

    @property
    def current(self) -> str | None:
        """The pathway in use, when the report says (HLS); a DASH list does not say (module rules)."""
        return self.pathways[0] if self.protocol == "hls" and self.pathways else None

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
        return SteeringQuery("hls", hls, _throughputs(query.get("_HLS_throughput"), single=True))
    dash = _pathway_list(query.get("_DASH_pathway"), single=False)
    if dash:
        return SteeringQuery("dash", dash, _throughputs(query.get("_DASH_throughput"))[:len(dash)])
    return NO_REPORT


def reports_leaving(query: SteeringQuery, ranked_first: str) -> bool:
    """True when the player reports pathways and the one we ranked first is not among them (module rules;
    issue 4: the session then avoids that box until a fresh healthy poll). Never from the order of a DASH
    list: `_DASH_pathway` lists the pathways used since the last reload, and a player that followed our
    ranking still lists the one it came from (first, with dash.js 5); reading that as "left" demoted the box
    it had just moved to, at every reload (issue 13, defect 8: steering flapped between a1 and a2)."""
    return bool(query.pathways) and ranked_first not in query.pathways


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


def _throughputs(raw: object, *, single: bool = False) -> tuple[int | None, ...]:
    """Bits per second by position; () when unreadable. Unmeasured entries at the end are left out, as older
    players do: a list that measured nothing (`,`) is no throughput, never a tuple of Nones."""
    text = _clean(raw)
    if text is None:
        return ()
    if single:  # _HLS_throughput is one number (rfc8216bis §7.2): a list there is an unreadable value
        value = _bits_per_second(text)
        return () if value is None else (value,)
    values: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        value = _bits_per_second(item) if item else None  # empty: that pathway was not measured (dash.js 5)
        if item and value is None:
            return ()
        values.append(value)
    while values and values[-1] is None:
        values.pop()
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
