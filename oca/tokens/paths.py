"""Where a token travels: as the first path segment, `/t/<jwt>/titles/...` (pure string functions).

A path segment, not a query parameter, so the relative segment URIs in a playlist inherit the token.
Rules kept here:
- Input is the request path without its query (the caller strips `?...` first).
- `/t/<jwt>/<rest>` -> (jwt, "/<rest>"); any path not starting with `/t/` -> (None, path): no token,
  which TokenVerifier.verify rejects as "missing".
- A path that starts with `/t/` but has no usable token segment (`/t/`, `/t//titles/...`) or nothing
  after the token (`/t/<jwt>`) -> ("", rest): the empty string, which verify rejects as "malformed".
  The token is never guessed from a broken shape.
- A JWT in compact form is base64url segments joined by `.`, so it never contains `/`: the first `/`
  after `/t/` ends it.
"""

from __future__ import annotations

PREFIX = "/t/"


def split_token_path(target_path: str) -> tuple[str | None, str]:
    """(jwt, content path) from a request path; see the module rules for None and ""."""
    if not target_path.startswith(PREFIX):
        return None, target_path
    end = target_path.find("/", len(PREFIX))
    if end < 0:
        return "", ""
    jwt = target_path[len(PREFIX):end]
    if not jwt:
        return "", target_path[end:]
    return jwt, target_path[end:]


def token_path(jwt: str, content_path: str) -> str:
    """The request path carrying `jwt` for a content path (`/titles/...` or the key `titles/...`)."""
    if not jwt or "/" in jwt:
        raise ValueError(f"a token path segment cannot be {jwt[:40]!r}")
    return PREFIX + jwt + (content_path if content_path.startswith("/") else "/" + content_path)
