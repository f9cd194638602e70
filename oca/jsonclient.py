"""One blocking JSON-over-HTTP exchange (stdlib only), for the operator clients of the box and the control plane.

Rules kept here: a bearer token goes in the Authorization header and never into a message; an HTTP error
becomes `error(status, "<who> answered <status>: <the server's own message>")`, an unreachable server
`error(503, "cannot reach <where> at <url>: <reason>", unreachable=True)` (refused, reset, or no answer within
the timeout), an answer that is not JSON `error(502, ...)`; a 404 is None when the caller said it may be missing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from oca.errors import ClientError


def exchange(req: urllib.request.Request, *, timeout: float, token: str | None, who: str, where: str,
             base_url: str, error: type[ClientError], missing_ok: bool = False, as_text: bool = False) -> Any:
    """Send `req` and return its JSON answer (None when empty), or with `as_text` its body as text."""
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return None
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            message = text.strip() or exc.reason
        raise error(exc.code, f"{who} answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g}s"
        raise error(503, f"cannot reach {where} at {base_url}: {reason}", unreachable=True) from None
    if as_text:
        return payload.decode("utf-8", "replace")
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        raise error(502, f"{who} answered {req.get_method()} {req.selector} with something that is not JSON") \
            from None
