"""The box admin routes a roll-out uses (oca/admin/firmware.py), over the control plane's aiohttp session.

Rules kept here: a box that cannot be reached, or does not answer within the timeout, is BoxUnreachable
(the runner counts it lost); a box that answers with an error is BoxRefused carrying the status and the
box's own message (the runner fails the step with it). The bundle is streamed from its file, never read
into memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from control.model import Box
from oca.httpapi import bearer, loads


class BoxUnreachable(Exception):
    pass


class BoxRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BoxFirmwareClient:
    http: aiohttp.ClientSession
    token: str | None
    timeout: float  # an upload or a release switch (the box answers once it serves the new release)
    poll_timeout: float  # a GET

    async def status(self, box: Box) -> dict[str, Any]:
        """GET /firmware: version, previous_version, staged, release_stats, firmware.state."""
        return await self._call(box, "GET", "/firmware", None, self.poll_timeout)

    async def stage(self, box: Box, bundle_path: str) -> dict[str, Any]:
        with open(bundle_path, "rb") as bundle:
            return await self._call(box, "POST", "/firmware/stage", bundle, self.timeout)

    async def activate(self, box: Box, version: str) -> dict[str, Any]:
        return await self._call(box, "POST", "/firmware/activate", {"version": version}, self.timeout)

    async def revert(self, box: Box, version: str) -> dict[str, Any]:
        return await self._call(box, "POST", "/firmware/revert", {"version": version}, self.timeout)

    async def _call(self, box: Box, method: str, path: str, body: Any, timeout: float) -> dict[str, Any]:
        headers = bearer(self.token)
        kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
        if body is not None and not isinstance(body, dict):
            headers["Content-Type"] = "application/octet-stream"
        try:
            async with asyncio.timeout(timeout):
                async with self.http.request(method, box.admin_url + path, headers=headers, **kwargs) as resp:
                    text = await resp.text()
                    status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = f"no answer within {timeout:g}s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise BoxUnreachable(f"{method} {path} on {box.id}: {why}") from None
        try:
            answer = loads(text)
        except ValueError:
            answer = None
        if status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise BoxRefused(status, f"{box.id} answered {status} to {method} {path}: {message or text[:200]}")
        if not isinstance(answer, dict):
            raise BoxRefused(status, f"{box.id} answered {method} {path} with something other than a JSON object")
        return answer
