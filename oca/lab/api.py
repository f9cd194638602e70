"""The lab API, served by the lab process itself (aiohttp on its own loop thread, 127.0.0.1): what the /lab
page and the player tests ask about the lab, and the Stop/Start buttons.

Routes (CORS open: the page is served from the control plane's origin):
- `GET /api/lab`: control, origin and page URLs, the client header, sites with their client address,
  boxes (id, site, data_url, admin_url, running, pid, healthy as the control plane sees it), titles with
  their master playlist and MPD URLs, and the fill's placement.
- `POST /api/boxes/<id>/stop?how=kill|term` (default kill: the lab shows failover), `POST
  /api/boxes/<id>/start` (same config, same cache; answers once the process is spawned, `healthy` in
  `GET /api/lab` follows within a few health polls).
- `POST /api/control/<n>/stop?how=kill|term`, `POST /api/control/<n>/start`: control-plane replica n (1, 2,
  ...; `control_replicas` in `GET /api/lab`, each with `balancer`: its state at HAProxy, when there is one,
  and `leader` / `state_ok` from its own GET /v1/status: whether it leads roll-outs, whether its store answers).

Rules kept here:
- A box or replica is spawned on this loop's thread (it lives as long as the lab: see procs, PR_SET_PDEATHSIG);
  blocking work (stopping, which waits) runs in the loop's executor.
- Errors are JSON {"error"} with the OcaError's status; an unknown box is 404.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from oca.errors import BadRequest, NotFound, OcaError

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type", "Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Controls(Protocol):
    """What the API needs from the lab."""

    control_url: str
    operator_token: str

    def describe(self) -> dict[str, Any]: ...

    def has_box(self, box_id: str) -> bool: ...

    def spawn_box(self, box_id: str) -> None: ...

    def stop_box(self, box_id: str, how: str = "kill") -> None: ...

    def replica_count(self) -> int: ...

    def spawn_control(self, replica: int = 1) -> None: ...

    def stop_control(self, how: str = "kill", replica: int = 1) -> None: ...


LAB = web.AppKey("lab", Controls)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(lab: Controls) -> web.Application:
    @web.middleware
    async def cors_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS)
        try:
            response = await handler(request)
        except OcaError as exc:
            response = web.json_response({"error": str(exc)}, status=exc.status)
        except web.HTTPException as exc:
            response = web.json_response({"error": exc.reason}, status=exc.status)
        response.headers.update(CORS)
        return response

    async def session_ctx(app: web.Application) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            app[SESSION] = session
            yield

    app = web.Application(middlewares=[cors_and_errors])
    app[LAB] = lab
    app.cleanup_ctx.append(session_ctx)
    app.add_routes([web.get("/api/lab", describe), web.post("/api/boxes/{box}/stop", stop),
                    web.post("/api/boxes/{box}/start", start), web.post("/api/control/{replica}/stop", stop_replica),
                    web.post("/api/control/{replica}/start", start_replica),
                    web.route("OPTIONS", "/{any:.*}", describe)])
    return app


async def _health(app: web.Application) -> dict[str, bool]:
    lab = app[LAB]
    try:
        async with app[SESSION].get(f"{lab.control_url}/v1/fleet",
                                    headers={"Authorization": f"Bearer {lab.operator_token}"}) as response:
            fleet = await response.json()
        return {b["id"]: bool(b["healthy"]) for b in fleet["boxes"]}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return {}


async def _replica_status(app: web.Application, url: str) -> dict[str, Any]:
    """What a replica says of itself (GET /v1/status): whether it leads roll-outs, whether its store answers."""
    lab = app[LAB]
    try:
        async with app[SESSION].get(f"{url}/v1/status",
                                    headers={"Authorization": f"Bearer {lab.operator_token}"}) as response:
            status = await response.json()
        return {"leader": bool(status["leader"]), "state_ok": bool(status["state"]["ok"])}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return {"leader": None, "state_ok": None}


async def describe(request: web.Request) -> web.Response:
    body = request.app[LAB].describe()
    replicas = body.get("control_replicas", [])
    health, *statuses = await asyncio.gather(_health(request.app),
                                             *(_replica_status(request.app, r["url"]) for r in replicas))
    for box in body["boxes"]:
        box["healthy"] = health.get(box["id"])
    for replica, status in zip(replicas, statuses, strict=True):
        replica.update(status)
    return web.json_response(body)


def _box(request: web.Request) -> str:
    box = request.match_info["box"]
    if not request.app[LAB].has_box(box):
        raise NotFound(f"no box {box[:64]!r} in this lab")
    return box


def _how(request: web.Request) -> str:
    how = request.query.get("how", "kill")
    if how not in ("kill", "term"):
        raise BadRequest(f"how must be kill or term, got {how[:20]!r}")
    return how


def _replica(request: web.Request) -> int:
    text = request.match_info["replica"]
    count = request.app[LAB].replica_count()
    if not text.isdigit() or not 1 <= int(text) <= count:
        raise NotFound(f"no control replica {text[:20]!r} in this lab (replicas: 1-{count})")
    return int(text)


async def stop_replica(request: web.Request) -> web.Response:
    replica, how = _replica(request), _how(request)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: request.app[LAB].stop_control(how, replica))
    return web.json_response({"replica": replica, "running": False, "how": how})


async def start_replica(request: web.Request) -> web.Response:
    replica = _replica(request)
    request.app[LAB].spawn_control(replica)  # on this thread: see the module rules
    return web.json_response({"replica": replica, "running": True}, status=202)


async def stop(request: web.Request) -> web.Response:
    box = _box(request)
    how = _how(request)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, request.app[LAB].stop_box, box, how)
    return web.json_response({"box": box, "running": False, "how": how})


async def start(request: web.Request) -> web.Response:
    box = _box(request)
    request.app[LAB].spawn_box(box)  # on this thread: see the module rules
    return web.json_response({"box": box, "running": True}, status=202)


class LabApi:
    """The API on a loop thread of its own; `start` returns once it listens (port 0 = a free port)."""

    def __init__(self, lab: Controls, host: str = "127.0.0.1", port: int = 0) -> None:
        self.lab, self.host, self.port = lab, host, port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="lab-api", daemon=True)
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._cleanup())
        self.loop.close()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(build_app(self.lab), access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OcaError(f"lab API: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
