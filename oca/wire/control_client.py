"""A small blocking client of the control plane's API, for the operator CLI, the lab and the fill job (stdlib
only, no event loop).

Rules kept here: errors come back as ControlError carrying the HTTP status and the server's own message
(`control plane answered 404: unknown box 'x'`), or 503 when the control plane cannot be reached; the
token is sent as a bearer token and never appears in a message.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, BinaryIO

from oca.errors import ClientError
from oca.jsonclient import exchange
from oca.replicas import RETRY_STATUSES, Replicas


class ControlError(ClientError):
    credential = "the operator token comes from --token-file or $OCA_CONTROL_TOKEN"


def operator_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ControlClient:
    """`base_url`: one URL, several separated by commas, or a sequence of them: the control plane's replicas,
    tried in turn when one cannot answer (oca.replicas)."""

    def __init__(self, base_url: str | Sequence[str], token: str | None, timeout: float = 10.0,
                 operator: str | None = None) -> None:
        urls = Replicas.split(base_url) if isinstance(base_url, str) else tuple(base_url)
        for url in urls or ("",):
            if not url.startswith(("http://", "https://")):
                raise ControlError(400, f"control plane URL must start with http:// or https://, got {url!r}")
        self.replicas = Replicas(urls)
        self.token = token
        self.timeout = timeout
        self.operator = operator or operator_name()

    @property
    def base_url(self) -> str:
        """The replica asked first (the one that answered last)."""
        return next(iter(self.replicas))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None, timeout: float | None = None,
                upload: BinaryIO | None = None) -> Any:
        """`upload`: a file sent as the raw body instead of `body` (streamed, with its Content-Length)."""
        failure: ControlError | None = None
        for base in self.replicas:
            if upload is not None:
                upload.seek(0)
            try:
                answer = self._exchange(base, method, path, body, query, timeout, upload)
            except ControlError as exc:
                if exc.status not in RETRY_STATUSES:
                    raise
                failure = exc
                continue
            self.replicas.answered(base)
            return answer
        assert failure is not None
        raise failure

    def _exchange(self, base: str, method: str, path: str, body: dict[str, Any] | None,
                  query: dict[str, str] | None, timeout: float | None, upload: BinaryIO | None) -> Any:
        url = base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data or upload, method=method)
        req.add_header("X-OCA-Operator", self.operator)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        elif upload is not None:
            req.add_header("Content-Type", "application/octet-stream")
            req.add_header("Content-Length", str(os.fstat(upload.fileno()).st_size))
        return exchange(req, timeout=timeout or self.timeout, token=self.token, who="control plane",
                        where="the control plane", base_url=base, error=ControlError)

    def fleet(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/fleet")
        return result

    def drain(self, box: str, drained: bool) -> dict[str, Any]:
        quoted = urllib.parse.quote(box, safe="")
        result: dict[str, Any] = self.request("POST", f"/v1/fleet/{quoted}/{'drain' if drained else 'undrain'}")
        return result

    def invalidate(self, scope: str, value: str, *, soft: bool, reason: str, client_id: str | None,
                   wait: float) -> dict[str, Any]:
        body: dict[str, Any] = {"scope": scope, "value": value, "soft": soft, "reason": reason, "wait": wait}
        if client_id is not None:
            body["id"] = client_id
        result: dict[str, Any] = self.request("POST", "/v1/invalidations", body, timeout=self.timeout + wait)
        return result

    def explain(self, ip: str, title: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/steering/explain", query={"ip": ip, "title": title})
        return result

    def catalog(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/catalog")
        return result

    def put_title(self, title_id: str, body: dict[str, Any]) -> dict[str, Any]:
        quoted = urllib.parse.quote(title_id, safe="")
        result: dict[str, Any] = self.request("POST", f"/v1/catalog/{quoted}", body)
        return result

    def popularity(self, site: str | None = None, limit: int = 100) -> dict[str, Any]:
        query = {"limit": str(limit), **({"site": site} if site else {})}
        result: dict[str, Any] = self.request("GET", "/v1/popularity", query=query)
        return result
