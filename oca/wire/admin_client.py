"""A small blocking client of a box's admin API, for the operator CLI and the fill job (stdlib only, no event
loop). Errors come back as AdminError carrying the HTTP status and the box's own message."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, BinaryIO, Self

from oca.config import BoxConfig
from oca.errors import ClientError
from oca.jsonclient import exchange
from oca.secret_files import read_secret


def read_token(path: str | None) -> str | None:
    """The admin bearer token from admin.token_file; ConfigError (exit 2) naming the file when unusable."""
    return None if path is None else read_secret(path, "admin.token_file")


class AdminError(ClientError):
    credential = "the box's admin token comes from admin.token_file in its config (--config)"


class AdminClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def for_box(cls, config: BoxConfig, timeout: float = 10.0) -> Self:
        """The client of the box whose config this is (its admin address, its token); `timeout`: seconds
        to wait for the box (connecting, and each wait for its answer)."""
        return cls(admin_url(*config.admin.listen), read_token(config.admin.token_file), timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                missing_ok: bool = False, upload: BinaryIO | None = None) -> Any:
        """The JSON answer (None when empty, or for a 404 when missing_ok); AdminError otherwise.
        `upload`: a file sent as the raw body instead of `body` (streamed, with its Content-Length)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data or upload, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        elif upload is not None:
            req.add_header("Content-Type", "application/octet-stream")
            req.add_header("Content-Length", str(os.fstat(upload.fileno()).st_size))
        return exchange(req, timeout=self.timeout, token=self.token, who="box", where="the box's admin API",
                        base_url=self.base_url, error=AdminError, missing_ok=missing_ok)


def admin_url(host: str, port: int) -> str:
    """The admin API's base URL from its listen address (a wildcard address is reached on loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def admin_text(client: AdminClient, path: str) -> str:
    """A text answer of the box's admin API (its Prometheus /metrics), with the client's token and timeout."""
    req = urllib.request.Request(client.base_url + path, method="GET")
    answer: str = exchange(req, timeout=client.timeout, token=client.token, who="box", where="the box's admin API",
                           base_url=client.base_url, error=AdminError, as_text=True)
    return answer
