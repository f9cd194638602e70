"""What the two JSON APIs (a box's admin port, the control plane) share: bearer tokens and JSON bodies.

Rules kept here:
- A bearer token is compared in constant time, against every accepted token, so the timing says nothing
  about which one (if any) matched. No token configured means the route is open.
- Scoped credentials: beside the full token, a read-only token (a box's admin.read_token_file, the control
  plane's auth.read_token_file) is taken on GET and HEAD only; on any other method it is a 403 saying so,
  never a 401 (the token is known, it may not write). Without a full token there is no read-only scope.
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

from oca.errors import BadRequest, Forbidden, OcaError, Unauthorized
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


READ_METHODS = frozenset({"GET", "HEAD"})


def read_only_ok(request: web.Request) -> bool:
    """May the read-only token do this? Only GET and HEAD: on both APIs a GET never changes state (a rule for
    every new route; tests/admin/test_read_token.py and tests/control/test_read_token.py walk the routers)."""
    return request.method in READ_METHODS


def scoped_auth(request: web.Request, full: tuple[str | None, ...], read: str | None) -> None:
    """Unauthorized (401) unless the request's bearer token is one of `full` (or none is configured) or the
    read-only token `read`; Forbidden (403) when it is the read-only token on a route that writes."""
    if bearer_ok(request, *full):
        return
    if read is not None and bearer_ok(request, read):
        if not read_only_ok(request):
            raise Forbidden(f"the read-only token may not {request.method} {request.path[:200]}: it may only read "
                            "(GET); this needs the full token")
        return
    raise Unauthorized("missing or wrong bearer token")


def operator_of(request: web.Request) -> str:
    """Who asked, for the audit log: the `X-OCA-Operator` header (the CLI sends user@host), else "operator"."""
    name = request.headers.get("X-OCA-Operator", "").strip()
    return name[:200] if name and name.isprintable() else "operator"


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object."""
    return json_object(await request.read())


def json_object(data: bytes) -> dict[str, Any]:
    """`data` parsed as a JSON object, else BadRequest. Plain code: a route whose body is large (an import
    batch) parses it on a thread, off the event loop."""
    try:
        body = loads(data)
    except TooDeep:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


async def bounded_body(request: web.Request, *, limit: int, too_big: OcaError) -> bytes:
    """The request body, read past the app's client_max_size up to `limit` bytes; raises `too_big` beyond."""
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


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
