"""The data port inside one worker: accepts connections, sweeps timeouts, records finished responses.

Rules kept here:
- Accepted sockets get TCP_NODELAY (small responses must not wait for Nagle) and are non-blocking.
- At max_connections the worker stops accepting; the kernel's backlog holds newcomers until one closes.
- Timeouts are checked by one sweep per second, not a timer per connection: a request head must arrive
  within header_timeout (408), an idle keep-alive connection closes after keepalive_timeout, a reader
  that takes nothing for send_timeout is cut off.
- drain(): stop accepting, close idle connections, let in-flight responses finish, bounded in time.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from typing import Any

from oca.config import ServerConfig
from oca.serve.accesslog import AccessLog
from oca.serve.connection import Connection
from oca.serve.handler import ContentHandler
from oca.serve.messages import Request, Response
from oca.serve.stats import WorkerStats

log = logging.getLogger("oca.serve")


class Server:
    def __init__(self, loop: asyncio.AbstractEventLoop, listener: socket.socket, handler: ContentHandler,
                 config: ServerConfig, stats: WorkerStats, access_log: AccessLog) -> None:
        self.loop = loop
        self.handler = handler
        self.config = config
        self.stats = stats
        self.access_log = access_log
        self.connections: set[Connection] = set()
        self.current_requests: dict[Connection, Request] = {}
        self._listener = listener
        self._accepting = False
        self._draining = False
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._listener.setblocking(False)
        self._resume_accepting()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    # -- accepting ----------------------------------------------------------------------------------

    def _resume_accepting(self) -> None:
        if not self._accepting and not self._draining:
            self._accepting = True
            self.loop.add_reader(self._listener.fileno(), self._accept)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._listener.fileno())

    def _accept(self) -> None:
        for _ in range(64):
            if len(self.connections) >= self.config.max_connections:
                self._pause_accepting()
                return
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed (%s): pausing accepts for 100 ms", exc.strerror)
                    self._pause_accepting()
                    self.loop.call_later(0.1, self._resume_accepting)
                    return
                continue  # ECONNABORTED and friends: that client is gone
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = address[0] if isinstance(address, tuple) else "local"
            self.connections.add(Connection(self, sock, client))
            self.stats.connections = len(self.connections)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.current_requests.pop(conn, None)
        self.stats.connections = len(self.connections)
        if not self._accepting and not self._draining and len(self.connections) < self.config.max_connections:
            self._resume_accepting()

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
        self.access_log.flush()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    # -- records ------------------------------------------------------------------------------------

    def record(self, req: Request | None, resp: Response, body_sent: int, aborted: bool,
               error: BaseException | None) -> None:
        seconds = self.loop.time() - req.started if req is not None else 0.0
        self.stats.observe(resp.status, resp.cache, resp.tier, body_sent, seconds, resp.key)
        if isinstance(error, OSError) and resp.tier and resp.tier != "memory":
            self.handler.report_io_error(resp.tier, f"{error.strerror or error} sending {resp.key}")
        if not self.access_log.enabled:
            return
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "client": req.client if req is not None else "",
            "method": req.method if req is not None else "",
            "target": req.target[:512].decode("latin-1") if req is not None else "",
            "key": resp.key,
            "status": resp.status,
            "bytes": body_sent,
            "ms": round(seconds * 1000, 3),
            "cache": resp.cache,
            "tier": resp.tier,
        }
        if aborted:
            entry["aborted"] = True
        if error is not None:
            entry["error"] = str(error)
        if resp.log:
            entry.update(resp.log)
        self.access_log.write(entry)

    def log_exception(self, exc: BaseException) -> None:
        log.error("request handler failed", exc_info=exc)

    # -- shutdown -----------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Finish in-flight responses and close idle connections; then close what is left."""
        self._draining = True
        self.handler.draining = True
        self._pause_accepting()
        for conn in list(self.connections):
            if conn.idle:
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
        self.access_log.flush()
