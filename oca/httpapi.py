"""What the two JSON APIs (a box's admin port, the control plane) share: bearer tokens and JSON bodies.

Rules kept here:
- A bearer token is compared in constant time, against every accepted token, so the timing says nothing
  about which one (if any) matched. No token configured means the route is open.
- A request body must be one JSON object; anything else is a BadRequest (400) saying so. JSON nested past
  what the parser's recursion allows (`[` * 100000) is bad JSON too (TooDeep, a ValueError), never a
  RecursionError: every JSON a peer or client sends, request body or answer, goes through `loads`.
- An uploaded file (a firmware bundle) is streamed to disk, never held in memory, and refused as soon as it
  is known to be too big: from its Content-Length before a byte is read, else once it crosses the limit.
- Light imports only (aiohttp, oca.errors, oca.http.auth): the control plane imports this without the box's server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web

from oca.errors import BadRequest, OcaError
from oca.http.auth import bearer_token

_CHUNK = 1 << 20


class TooDeep(ValueError):
    """JSON nested more deeply than the parser can follow."""


def loads(text: str | bytes) -> Any:
    """json.loads, where nesting too deep for the parser (a RecursionError) is a ValueError like any other
    bad JSON: a client must not be able to turn a malformed body into a 500 and a traceback."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep("JSON nested too deeply") from None


def parse_count(text: str, what: str, low: int = 0, high: int = 10**18 - 1) -> int:
    """An integer from a path segment or query value: ASCII digits only, at most 18 of them (an SQLite
    INTEGER), within [low, high]; BadRequest naming `what` otherwise, never int()'s ValueError on "²"."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and low <= int(text) <= high):
        raise BadRequest(f"{what} must be an integer from {low} to {high}, got {text[:40]!r}")
    return int(text)


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header that sends `token` (none when there is no token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def bearer_ok(request: web.Request, *tokens: str | None) -> bool:
    """True if the request's `Authorization: Bearer <token>` (the scheme in any case) is one of `tokens` (the
    None ones left out), or if no token is configured at all."""
    wanted = [t for t in tokens if t is not None]
    if not wanted:
        return True
    given = bearer_token(request.headers.get("Authorization"))  # RFC 9110 §11.1: the scheme in any case
    if given is None:
        return False
    presented = given.encode("utf-8", "replace")
    ok = False
    for token in wanted:  # compare with every token, so timing says nothing about which one matched
        ok |= hmac.compare_digest(presented, token.encode())
    return ok


def operator_of(request: web.Request) -> str:
    """Who asked, for the audit log: the `X-OCA-Operator` header (the CLI sends user@host), else "operator"."""
    name = request.headers.get("X-OCA-Operator", "").strip()
    return name[:200] if name and name.isprintable() else "operator"


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object."""
    try:
        body = await request.json(loads=loads)
    except TooDeep:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


async def body_to_file(request: web.Request, path: str, *, limit: int, too_big: OcaError) -> int:
    """Write the request body to `path` (created or truncated); its size. Raises `too_big` past `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    size = 0
    with open(path, "wb") as out:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_big
            await asyncio.to_thread(out.write, chunk)
    return size
