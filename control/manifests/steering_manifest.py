"""The steering manifest a player reloads every TTL seconds: JSON with the current pathway priority.

Rules kept here (draft-pantos-hls-rfc8216bis §7.1; ETSI TS 103 998 uses the same keys for DASH, and
dash.js, hls.js and video.js read `PATHWAY-PRIORITY` for both, so one writer serves both protocols):
- `VERSION` is 1; `TTL` is a whole number of seconds, at least 1 (hls.js and dash.js multiply it by 1000
  and schedule the next reload from it); `RELOAD-URI`, when given, is where the next reload goes (the
  session's own steering URI, so the session survives a control-plane replica change).
- `PATHWAY-PRIORITY` is non-empty, ids valid and distinct (players ignore a manifest without one).
- No PATHWAY-CLONES: every box is already a pathway of the multivariant playlist / MPD.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from control.manifests.common import PATHWAY_ID_RE

STEERING_VERSION = 1
DEFAULT_TTL = 10  # seconds: short, so a player learns of a dead or drained box within one reload
MEDIA_TYPE = "application/json"


def steering_manifest(pathway_priority: Sequence[str], *, ttl: int = DEFAULT_TTL, reload_uri: str | None = None) -> str:
    """The JSON text; ValueError on an empty or invalid priority list or a TTL below 1 second."""
    if not pathway_priority:
        raise ValueError("PATHWAY-PRIORITY: empty")
    if len(set(pathway_priority)) != len(pathway_priority):
        raise ValueError(f"PATHWAY-PRIORITY {list(pathway_priority)}: an id is listed twice")
    for pathway in pathway_priority:
        if not PATHWAY_ID_RE.fullmatch(pathway):
            raise ValueError(f"PATHWAY-PRIORITY: pathway id {pathway!r} has characters outside [A-Za-z0-9._-]")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise ValueError(f"TTL {ttl!r}: expected a whole number of seconds, at least 1")
    manifest: dict[str, object] = {"VERSION": STEERING_VERSION, "TTL": ttl}
    if reload_uri:
        manifest["RELOAD-URI"] = reload_uri
    manifest["PATHWAY-PRIORITY"] = list(pathway_priority)
    return json.dumps(manifest, separators=(",", ":"))
