"""Control-plane invalidations on the box: applied once each, in sequence order, pushed or pulled.

Rules kept here:
- The control plane's log is sequence-numbered. The box applies entry N only after every entry before it,
  and never twice: the last applied sequence number is kept in fetch.db and reported in /status.
- Entries arrive pushed (POST /invalidations on the admin port) or pulled (GET <control>/v1/invalidations
  ?since=N, at start before the admin port opens, then every control.poll_interval). A push with a gap
  (its first entry is past applied+1) makes the box pull the missing ones first.
- An entry: {"seq": int, "scope": "key" | "prefix" | "title", "value": str, "soft": bool, ...}. A malformed
  entry stops the batch there (BadRequest naming it): skipping it would break the order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from oca.config import ControlConfig
from oca.errors import BadRequest
from oca.fetch.manager import FillManager
from oca.httpapi import bearer
from oca.keys import is_valid_key
from oca.secret_files import read_secret

log = logging.getLogger("oca.invalidations")
SCOPES = ("key", "prefix", "title")


def check_entry(entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise BadRequest(f"an invalidation must be an object, got {entry!r:.80}")
    seq, scope, value = entry.get("seq"), entry.get("scope"), entry.get("value")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise BadRequest(f"invalidation seq must be a positive integer, got {seq!r}")
    if scope not in SCOPES:
        raise BadRequest(f"invalidation {seq}: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not isinstance(value, str) or not value:
        raise BadRequest(f"invalidation {seq}: value must be a non-empty string")
    if scope == "key" and not is_valid_key(value):
        raise BadRequest(f"invalidation {seq}: not a valid content key: {value!r}")
    if scope == "title" and ("/" in value or not is_valid_key(value)):
        raise BadRequest(f"invalidation {seq}: not a valid title id: {value!r}")
    if not isinstance(entry.get("soft", False), bool):
        raise BadRequest(f"invalidation {seq}: soft must be true or false")
    return entry


class Invalidations:
    def __init__(self, fills: FillManager, config: ControlConfig) -> None:
        self.fills = fills
        self.config = config
        self.applied = int(fills.state.get("invalidation_seq", "0") or 0)
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._credential = read_secret(config.credential_file, "control.credential_file") \
            if config.credential_file else None

    async def apply(self, entries: list[object]) -> int:
        """Apply what is new among `entries` (in order); returns the last applied sequence number."""
        checked = sorted((check_entry(e) for e in entries), key=lambda e: int(e["seq"]))
        async with self._lock:
            if checked and int(checked[0]["seq"]) > self.applied + 1 and self.config.url:
                await self._pull_locked()
            for entry in checked:
                seq = int(entry["seq"])
                if seq <= self.applied:
                    continue
                if seq > self.applied + 1 and self.config.url:
                    log.error("invalidation %d arrived but %d is missing: waiting for the pull", seq,
                              self.applied + 1)
                    break
                count = await self.fills.purge(str(entry["scope"]), str(entry["value"]), bool(entry.get("soft")))
                log.info("invalidation %d applied: %s %s%s, %d objects (%s)", seq, entry["scope"], entry["value"],
                         " (soft)" if entry.get("soft") else "", count, entry.get("reason", ""))
                self.applied = seq
                self.fills.state.put("invalidation_seq", str(seq))
        return self.applied

    async def pull(self) -> None:
        async with self._lock:
            await self._pull_locked()

    async def _pull_locked(self) -> None:
        if not self.config.url:
            return
        url = f"{self.config.url.rstrip('/')}/v1/invalidations"
        headers = bearer(self._credential)
        timeout = aiohttp.ClientTimeout(total=max(2.0, self.config.poll_interval))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(url, params={"since": str(self.applied)}, headers=headers) as response:
                if response.status != 200:
                    raise OSError(f"{url} answered {response.status}")
                body = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.last_error = f"pull from {url}: {exc or type(exc).__name__}"
            log.warning("%s", self.last_error)
            return
        entries = body.get("invalidations") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            self.last_error = f"pull from {url}: no invalidations list in the answer"
            return
        self.last_error = None
        for entry in sorted((check_entry(e) for e in entries), key=lambda e: int(e["seq"])):
            seq = int(entry["seq"])
            if seq != self.applied + 1:
                continue
            await self.fills.purge(str(entry["scope"]), str(entry["value"]), bool(entry.get("soft")))
            self.applied = seq
            self.fills.state.put("invalidation_seq", str(seq))

    async def pull_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.pull()
            except BadRequest as exc:
                self.last_error = f"the control plane sent a bad invalidation: {exc}"
                log.error("%s", self.last_error)
