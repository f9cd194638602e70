"""What every manifest writer shares: a pathway with its token-bearing base URL, and the checks on ids and URIs.

Rules kept here:
- A Pathway ID uses the characters [a-zA-Z0-9._-] (draft-pantos-hls-rfc8216bis §7.1, Steering Manifest
  PATHWAY-PRIORITY; DASH serviceLocation values follow it too because the same ids are reused there).
- A value written as an HLS quoted-string may not hold `"`, CR or LF (RFC 8216 §4.2).
- A pathway's base URL is where content paths resolve: `<data_url>/t/<jwt>` (DESIGN.md, Tokens: the token is a
  path segment so relative segment URIs in media playlists inherit it); content paths are appended after `/`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from control.steering import Pathway

PATHWAY_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
STABLE_ID_RE = re.compile(r"[A-Za-z0-9+/=._-]+")  # STABLE-VARIANT-ID / STABLE-RENDITION-ID (rfc8216bis §4.4.6)


@dataclass(frozen=True, slots=True)
class PathwayBase:
    """A pathway as a manifest writes it: its id and the URL prefix its content paths go under."""

    id: str
    base_url: str  # no trailing slash, e.g. http://127.0.0.11:8080/t/eyJ...

    @classmethod
    def of(cls, pathway: Pathway, token: str | None) -> PathwayBase:
        """`<data_url>/t/<token>`, or the bare data URL when the pathway takes no token (None)."""
        base = pathway.data_url.rstrip("/")
        return cls(pathway.id, f"{base}/t/{token}" if token else base)


def check_pathways(pathways: Sequence[PathwayBase]) -> None:
    """ValueError unless there is at least one pathway, ids are valid and distinct, and URLs are quotable."""
    if not pathways:
        raise ValueError("no pathway to offer")
    seen: set[str] = set()
    for pathway in pathways:
        if not PATHWAY_ID_RE.fullmatch(pathway.id):
            raise ValueError(f"pathway id {pathway.id!r}: only letters, digits, '.', '_' and '-' are allowed")
        if pathway.id in seen:
            raise ValueError(f"pathway id {pathway.id!r}: listed twice")
        seen.add(pathway.id)
        check_quotable(pathway.base_url, f"pathway {pathway.id} base URL")


def check_quotable(value: str, what: str) -> None:
    """ValueError when `value` cannot be an HLS quoted-string (or is empty)."""
    if not value or '"' in value or "\r" in value or "\n" in value:
        raise ValueError(f"{what} {value!r}: empty, or holds a double quote or line break")
