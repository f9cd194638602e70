"""The data port inside one worker: accepts connections, sweeps timeouts, records finished responses.

Rules kept here:
- Accepted sockets get TCP_NODELAY (small responses must not wait for Nagle).
- Past max_connections a new connection gets a canned 503 with Retry-After: 1 and is closed at once, its
  request unread (the client may retry, here or at another box). One accepted while draining (the kernel
  handed it over as the listener closed) is served once and closed, like every fresh connection drain()
  finds: a 503 would fail a request that a serving box can answer.
- Timeouts are checked by one sweep per second, not a timer per connection: a request head must arrive
  within header_timeout (408), an idle keep-alive connection closes after keepalive_timeout, a reader
  that takes nothing for send_timeout is cut off.
- The sweep also runs the garbage collector (workers turn its automatic passes off).
- Every response is recorded (stats and access log) once it ends. Plain hits from memory, the bulk of the
  traffic, are kept as one tuple each and recorded HIT_BATCH at a time, and whatever is left by each sweep,
  each report to the master (the worker calls record_hits) and the end of a drain: counters stay exact
  and no later than the report; the log lines carry each response's own end time.
- drain(): stop accepting, close idle connections, let in-flight responses finish, bounded in time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from typing import Any

from oca.config import ServerConfig
from oca.http.cmsd import Signals
from oca.serve.accesslog import AccessLog, Hit
from oca.serve.connection import Connection
from oca.serve.handler import ContentHandler
from oca.serve.messages import HitCounted, ObjectTruncated, Request, Response, StorageFault
from oca.serve.stats import WorkerStats

log = logging.getLogger("oca.serve")
HIT_BATCH = 64  # plain hits from memory recorded together (record_hits)
_NOT_TIERS = frozenset(("", "memory", "upstream", "slices"))  # Response.tier values that name no tier


class Server:
    def __init__(self, loop: asyncio.AbstractEventLoop, listener: socket.socket, handler: ContentHandler,
                 config: ServerConfig, stats: WorkerStats, access_log: AccessLog) -> None:
        self.loop = loop
        self.handler = handler
        self.config = config
        self.max_header_bytes = config.max_header_bytes  # read per header: kept one attribute away
        self.max_headers = config.max_headers
        self.stats = stats
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.cmsd: Signals | None = None  # CMSD-Dynamic on every head (oca.http.cmsd); None: not sent
        self._listener = listener
        self._aio_server: asyncio.AbstractServer | None = None
        self._draining = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeps = 0
        self._hits: list[Hit] = []  # plain hits from memory not yet recorded (record, record_hits)

    async def start(self) -> None:
        self._listener.setblocking(False)
        self._aio_server = await self.loop.create_server(
            lambda: Connection(self), sock=self._listener, backlog=self.config.backlog)
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    # -- connections --------------------------------------------------------------------------------

    def admit(self, conn: Connection) -> bool:
        """Count a new connection in; False (the connection answers a canned 503 and closes) past
        max_connections. While draining it is counted in to be answered once, then closed."""
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(conn)
        if self._draining:
            conn.close_after = True
        return True

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    # -- timeouts -----------------------------------------------------------------------------------

    def _sweep(self) -> None:
        now = self.loop.time()
        config = self.config
        for conn in list(self.connections):
            if conn.closed:
                continue
            if conn.sending:
                if now - conn.last_activity > config.send_timeout:
                    conn.abort(TimeoutError("send timeout: the client took nothing"))
            elif conn.header_started is not None:
                if now - conn.header_started > config.header_timeout:
                    conn.respond_timeout()
            elif conn.idle:
                limit = config.header_timeout if conn.requests_done == 0 else config.keepalive_timeout
                if now - conn.last_activity > limit or self._draining:
                    conn.close()
        self.record_hits()
        self.access_log.flush()
        self._sweeps += 1
        gc.collect(2 if self._sweeps % 60 == 0 else 1)  # the worker turned automatic collection off
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    # -- records ------------------------------------------------------------------------------------

    def record(self, req: Request | None, resp: Response, body_sent: int, aborted: bool,
               error: BaseException | None) -> None:
        if resp.counted is not None and not aborted and req is not None:  # a plain hit from memory, sent whole
            self.hit(resp.counted, body_sent, req.started, req.client, resp.log_fields)
            return
        ended = time.perf_counter()
        seconds = ended - req.started if req is not None else 0.0
        self.stats.observe(resp.status, resp.cache, resp.tier, body_sent, seconds, resp.key)
        if resp.cache == "miss":
            self.stats.observe_miss(resp.log.get("miss") if resp.log else None)
        if resp.log is not None and "cmcd" in resp.log:  # plain hits carry no log: they never get here
            self.stats.observe_player(resp.log["cmcd"], time.time())
        if error is not None:
            if isinstance(error, ObjectTruncated):
                self.handler.faults.damaged(resp.key, str(error))
            elif isinstance(error, StorageFault):
                # only a storage operation's own error is the tier's (a send timeout is an OSError too)
                tier = error.tier or resp.tier
                if tier not in _NOT_TIERS:
                    self.handler.faults.io_error(tier, f"{error} ({resp.key})")
        if self.access_log.disabled:
            return
        extras: dict[str, Any] | None = None
        if resp.log or aborted or error is not None:
            extras = dict(resp.log) if resp.log else {}
            if aborted:
                extras["aborted"] = True
            if error is not None:
                extras["error"] = str(error)
        if req is None:
            self.access_log.add((time.time(), "", "", b"", resp.key, resp.status, body_sent, seconds, resp.cache,
                                 resp.tier, extras))
        else:
            self.access_log.add((time.time(), req.client, req.method, req.target, resp.key, resp.status, body_sent,
                                 seconds, resp.cache, resp.tier, extras))

    def hit(self, entry: HitCounted, body_sent: int, started: float, client: str, log_fields: str) -> None:
        """Record a plain hit from memory of `entry` sent whole (`started`: perf_counter when its request
        arrived)."""
        ended = time.perf_counter()
        hits = self._hits
        hits.append((entry, body_sent, ended - started, client, log_fields, ended))
        if len(hits) >= HIT_BATCH:
            self.record_hits()

    def record_hits(self) -> None:
        """Record the plain hits from memory answered since the last call: counters and log lines."""
        hits, self._hits = self._hits, []
        if hits:
            self.stats.observe_hits(hits)
            if not self.access_log.disabled:
                # their end times are perf_counter readings: the log's are epoch seconds
                self.access_log.add_hits(time.time() - time.perf_counter(), hits)

    def log_exception(self, exc: BaseException) -> None:
        log.error("request handler failed", exc_info=exc)

    # -- shutdown -----------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Finish in-flight responses and close idle connections; then close what is left."""
        self._draining = True
        self.handler.draining = True
        if self._aio_server is not None:
            self._aio_server.close()
        for conn in list(self.connections):
            # a used keep-alive connection with nothing in flight is closed now (its client sends the next
            # request again on a new one: RFC 9112 §9.3.1); one that has not yet sent its first request would
            # lose it (nothing tells its client to retry), so it is answered once, then closed
            if conn.idle and conn.requests_done:
                conn.close()
            else:
                conn.close_after = True
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort(TimeoutError("shutdown timeout"))
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.record_hits()
        self.access_log.flush()
