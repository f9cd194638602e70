"""A worker process: serves the data port on the listening socket the master hands it.

Started by the master as `python -m oca.serve.worker`, with the listening socket and a control socket
inherited as file descriptors. Rules kept here:
- Its first words on the control socket are the protocol handshake (oca.protocol): the versions it speaks;
  the master answers with the version to use and the config to serve, or refuses it, and the worker then
  exits with the master's reason (a release the running master cannot talk to never serves).
- Hits are served entirely inside this process (StoreView + sendfile); nothing crosses to the master
  on the hit path. Accesses, counters and I/O errors go to the master in one message per flush interval.
- SIGTERM drains (in-flight responses finish, idle connections close) within shutdown_timeout, then exits.
- When the master goes away (control socket closes) the worker drains and exits too: no orphans.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys

from oca.config import BoxConfig, box_config_from_raw
from oca.fetch.link import Link
from oca.fetch.remote import RemoteFills
from oca.http.cmsd import Signals
from oca.protocol import codec as protocol
from oca.protocol.codec import Codec, Lines, ProtocolError
from oca.protocol.messages import Ready
from oca.secret_files import read_secret
from oca.serve import collector
from oca.serve.accesslog import AccessLog
from oca.serve.gate import Gate
from oca.serve.handler import ContentHandler
from oca.serve.loops import new_event_loop
from oca.serve.objects import ObjectCache
from oca.serve.server import Server
from oca.serve.stats import WorkerStats
from oca.storage import StoreView

log = logging.getLogger("oca.worker")


class Worker:
    def __init__(self, config: BoxConfig, listener: socket.socket, control: socket.socket | None,
                 loop: asyncio.AbstractEventLoop, fill_socket: socket.socket | None = None,
                 codec: Codec | None = None) -> None:
        self.config = config
        self.codec = codec or Codec(protocol.SPEAKS[0])  # the version the master chose (handshake)
        self.loop = loop
        self.control = control
        self.stats = WorkerStats()
        self.view = StoreView.open(config.storage)
        objects = ObjectCache(self.view, config.http, config.storage.memory_cache)
        self.fill_socket = fill_socket
        self.fills = RemoteFills() if fill_socket is not None else None
        if self.fills is not None:
            objects.stale = self.fills.stale  # one set, kept current by the master's messages
            self.fills.on_changed = objects.forget_all
        peer = read_secret(config.fetch.peer_credential_file, "fetch.peer_credential_file") \
            if config.fetch.peer_credential_file else None
        self.handler = ContentHandler(objects, config.http, self, self.fills, fetching=bool(config.fetch.sources),
                                      gate=Gate(config.tokens, peer))
        self.server = Server(loop, listener, self.handler, config.server, self.stats,
                             AccessLog(config.log.access_log))
        if config.http.cmsd:
            self.server.cmsd = Signals(config.box.id, config.http.duress_max_bitrate)
        self._control_lines = Lines()
        self._stopping: asyncio.Future[None] = loop.create_future()

    # StorageFaults: passed on to the master with the next report
    def io_error(self, tier: str, error: str) -> None:
        log.error("I/O error on tier %s: %s", tier, error)
        self.stats.io_errors.append((tier, error))

    def damaged(self, key: str, error: str) -> None:
        log.error("object %s is damaged on disk: %s", key, error)
        self.stats.damaged.append((key, error))

    async def run(self) -> None:
        if self.fills is not None and self.fill_socket is not None:
            self.fills.link = await Link.open(self.fill_socket, self.codec, Codec.event, self.fills.on_message,
                                              self.fills.on_close, name=f"worker {os.getpid()}")
        await self.server.start()
        # What exists now lives as long as the worker: keep it out of every collection. The hit path makes
        # short-lived, acyclic objects only, so the collector's automatic passes (triggered by allocation
        # counts, i.e. by traffic) cost more than they find: the server's sweep collects once a second.
        collector.settle()
        gc.disable()
        self.loop.add_signal_handler(signal.SIGTERM, self.stop)
        self.loop.add_signal_handler(signal.SIGINT, lambda: None)  # the master decides
        if self.control is not None:
            self.control.setblocking(False)
            self.loop.add_reader(self.control.fileno(), self._on_control)
            await self.loop.sock_sendall(self.control, self.codec.encode(Ready()))
        reporter = self.loop.create_task(self._report_forever())
        await self._stopping
        await self.server.drain(self.config.server.shutdown_timeout)
        reporter.cancel()
        await self._report_once()
        self.server.access_log.close()  # the lines still on their way to the disk are written first
        self.view.close()

    def stop(self) -> None:
        if not self._stopping.done():
            self._stopping.set_result(None)

    def _on_control(self) -> None:
        assert self.control is not None
        try:
            data = self.control.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the master is gone
            self.loop.remove_reader(self.control.fileno())
            self.stop()
            return
        # the master's messages after the handshake (oca.protocol: Duress says whether the box is in
        # duress, for CMSD); a line this release cannot read is logged and skipped
        for line in self._control_lines.feed(data):
            try:
                message = self.codec.control_message(line)
            except ProtocolError as exc:
                log.error("worker %d: %s", os.getpid(), exc)
                continue
            if self.server.cmsd is not None:
                self.server.cmsd.set_duress(message.on)

    async def _report_forever(self) -> None:
        interval = self.config.storage.access_flush_interval
        while True:
            await asyncio.sleep(interval)
            await self._report_once()

    async def _report_once(self) -> None:
        hints = self.handler.hints
        if hints is not None:
            self.stats.hints_refused, hints.refused = self.stats.hints_refused + hints.refused, 0
        self.server.record_hits()  # the plain hits it still batches count in this report
        report = self.stats.take(len(self.server.connections))
        if self.control is None:
            return
        line = self.codec.encode(report)
        try:
            await self.loop.sock_sendall(self.control, line)
        except OSError:
            self.stop()


def handshake(control: socket.socket, source: str) -> tuple[Codec, BoxConfig]:
    """Say which protocol versions we speak; the master's answer is the version to use and its validated
    config (see WorkerReports._greet). A refusal ends the worker, with the master's reason."""
    control.settimeout(30)
    control.sendall(protocol.hello())
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = control.recv(65536)
        if not chunk:
            raise SystemExit("oca worker: the master closed the control socket before answering the handshake")
        line += chunk
    control.settimeout(None)
    try:
        welcome = protocol.read_answer(bytes(line))
    except ProtocolError as exc:
        log.error("not serving: %s", exc)
        raise SystemExit(2) from None
    return Codec(welcome.version), box_config_from_raw(welcome.config, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oca-worker")
    parser.add_argument("--config", required=True, help="the config file's name, for messages")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--fill-fd", type=int, default=-1)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s oca worker[{os.getpid()}] %(levelname)s %(message)s")
    listener = socket.socket(fileno=args.listen_fd)
    control = socket.socket(fileno=args.control_fd)
    codec, config = handshake(control, args.config)
    loop = new_event_loop(args.loop)
    asyncio.set_event_loop(loop)
    try:
        fill_socket = socket.socket(fileno=args.fill_fd) if args.fill_fd >= 0 else None
        worker = Worker(config, listener, control, loop, fill_socket, codec)
        loop.run_until_complete(worker.run())
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
