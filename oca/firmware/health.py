"""The health gate a new release's workers pass before the old ones are retired.

Rules kept here:
- The new workers must all report ready, then answer `GET /healthz` on the data port with 200 and
  `Server: oca/<version>` (the old and new workers accept on the same sockets, so a probe is answered by
  either; only the new version's answers count, and one of them that is not 200 fails the gate), and
  stay alive for a short settle time, all within the health timeout.
- A new worker that exits during the gate fails it at once (a release that crashes at start).
- After the old workers are gone every probe is answered by the new release: `confirm` asks that all be
  200 from the new version.
- The probe speaks just enough HTTP/1.1 for /healthz; its failures (refused, reset, timeout) are status 0.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from oca.firmware.errors import ReleaseUnhealthy

Probe = Callable[[], Awaitable[tuple[int, str]]]
_NEED_ANSWERS = 3  # answers from the new version before the gate opens
_SETTLE = 1.0  # seconds every new worker must stay alive after all reported ready (at most half the timeout)


class Spawned(Protocol):
    @property
    def process(self) -> subprocess.Popen[bytes]: ...

    @property
    def ready(self) -> asyncio.Future[None]: ...


async def probe_healthz(host: str, port: int, timeout: float = 2.0) -> tuple[int, str]:
    """(status, Server header) of `GET /healthz` on a fresh connection; (0, "") when it failed."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard: via loopback
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: oca-firmware-gate\r\nConnection: close\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return 0, ""
    finally:
        if writer is not None:
            writer.close()
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    server = next((line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("server:")), "")
    return status, server


def _dead(workers: Sequence[Spawned], version: str) -> None:
    for worker in workers:
        code = worker.process.poll()
        if code is not None:
            raise ReleaseUnhealthy(f"a worker of release {version} exited with code {code} during its health gate")


async def gate(workers: Sequence[Spawned], probe: Probe, version: str, timeout: float) -> None:
    """Return once `workers` (running `version`) are healthy; ReleaseUnhealthy if not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not all(w.ready.done() for w in workers):
        _dead(workers, version)
        if time.monotonic() >= deadline:
            raise ReleaseUnhealthy(f"workers of release {version} did not report ready within {timeout:g}s")
        await asyncio.sleep(0.05)
    settled = time.monotonic() + min(_SETTLE, timeout / 2)
    answers, server = 0, f"oca/{version}"
    while True:
        _dead(workers, version)
        status, said = await probe()
        if said == server:
            if status != 200:
                raise ReleaseUnhealthy(f"release {version} answered GET /healthz with {status}")
            answers += 1
        if answers >= _NEED_ANSWERS and time.monotonic() >= settled:
            _dead(workers, version)
            return
        if time.monotonic() >= deadline:
            raise ReleaseUnhealthy(f"release {version} gave {answers} healthy answers to GET /healthz within "
                                   f"{timeout:g}s (needs {_NEED_ANSWERS})")
        await asyncio.sleep(0.02)


async def confirm(probe: Probe, version: str, count: int) -> None:
    """With the old workers gone: `count` probes, every one 200 from `version`; ReleaseUnhealthy otherwise."""
    server = f"oca/{version}"
    for _ in range(count):
        status, said = await probe()
        if status != 200 or said != server:
            raise ReleaseUnhealthy(f"after the switch GET /healthz answered {status} from {said or 'nobody'}, "
                                   f"expected 200 from {server}")
