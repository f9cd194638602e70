"""The control socket's conversation with each worker: its handshake, its reports, the master's Duress.

Rules kept here:
- A worker's first line is its Hello (oca.protocol): the answer is the protocol version both speak and the
  config the master validated (the current one, as last reloaded), or a refusal (the worker exits: a failed
  start). Its fill link is attached once a version is agreed on (a release from before the handshake:
  at spawn, oca.serve.supervisor).
- Every later line is one typed message, dispatched by kind from a table; an unreadable one is logged and
  skipped, never fatal.
- A message says a worker is alive (the supervisor's stall check reads `heard`); Ready says it serves (its
  generation's `ready`).
- Counters go to the fleet totals (/status, /metrics); only reports of workers running the current
  release go to that release's counters (firmware `release_stats`): not a retiring or a candidate
  release's answers.
- Hits are added up here and written to storage in one call per flush (`flush_hits`, housekeeping's
  round), not one per report. I/O errors and damaged objects go to storage as they come, without
  holding up the next report.
- Duress (CMSD `du`/`mb`, oca.http.cmsd) is told to serving workers when it changes, and to a worker that
  becomes ready while it lasts; a worker of version 1 is told nothing (it reads nothing after its config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from oca import __version__
from oca.config import BoxConfig, box_config_to_raw
from oca.errors import OcaError
from oca.fetch.link import Link
from oca.fetch.manager import FillManager
from oca.firmware.box import BoxFirmware
from oca.protocol import codec as protocol
from oca.protocol.codec import Codec, Dispatch, ProtocolError
from oca.protocol.messages import Duress, FillAsk, Hello, Ready, Refused, Report, WorkerMessage
from oca.protocol.version import LEGACY
from oca.serve.stats import FleetStats, release_delta
from oca.serve.supervisor import WorkerProcess
from oca.storage import Store
from oca.storage.storage_owner import StorageOwner

log = logging.getLogger("oca.master")


class WorkerReports:
    """`current_config` is the config the master validated last (a worker is handed it at its handshake)."""

    def __init__(self, current_config: Callable[[], BoxConfig], stats: FleetStats, firmware: BoxFirmware,
                 owner: StorageOwner, fills: FillManager | None,
                 background: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._current_config = current_config
        self.stats = stats
        self.firmware = firmware
        self.owner = owner
        self.fills = fills
        self._background = background
        self._pending_hits: dict[str, int] = {}  # key -> hits reported since the last flush
        self._duress = False  # what the workers were last told (CMSD `du`/`mb`, oca.http.cmsd)
        self._worker_messages = Dispatch[WorkerMessage]({Ready: self._on_ready, Report: self._take_report,
                                                         Hello: self._on_second_hello})

    @property
    def config(self) -> BoxConfig:
        return self._current_config()


    def _on_worker_message(self, worker: WorkerProcess) -> None:
        try:
            data = worker.control.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
            return
        for line in worker.lines.feed(data):
            if worker.codec is None:
                self._greet(worker, line)
                continue
            try:
                message = worker.codec.worker_message(line)
            except ProtocolError as exc:
                log.error("worker %d: %s", worker.process.pid, exc)
                continue
            self._worker_messages(message, worker)

    def _greet(self, worker: WorkerProcess, line: bytes) -> None:
        """A worker's first line, its Hello: answer with the version to speak and the config it serves (the
        one the master validated, never a file changed since), or refuse it (it exits: a failed start)."""
        try:
            answer = protocol.answer(protocol.read_hello(line), box_config_to_raw(self.config))
        except ProtocolError as exc:
            answer = Refused(f"its first message is not a protocol handshake ({exc})", protocol.SPEAKS)
        try:
            worker.control.settimeout(5)  # the worker waits for this line; it is the only one it reads
            worker.control.sendall(protocol.encode_answer(answer))
        except OSError as exc:
            log.error("worker %d: cannot answer its handshake: %s", worker.process.pid, exc)
            return
        finally:
            worker.control.setblocking(False)
        if isinstance(answer, Refused):
            log.error("worker %d (release %s) refused: %s", worker.process.pid,
                      worker.release.version if worker.release else __version__, answer.reason)
            return
        worker.codec = Codec(answer.version)
        self._background(self._attach_fill_link(worker, worker.codec))

    def _on_second_hello(self, message: Hello, worker: WorkerProcess) -> None:
        log.error("worker %d said Hello again after its handshake: ignored", worker.process.pid)

    def _on_ready(self, message: Ready, worker: WorkerProcess) -> None:
        worker.heard = time.monotonic()
        worker.serving = True
        if not worker.ready.done():
            worker.ready.set_result(None)
        if self._duress:
            self._tell(worker, Duress(True))

    def _take_report(self, report: Report, worker: WorkerProcess) -> None:
        worker.heard = time.monotonic()
        self.stats.add(worker.process.pid, report)
        if worker.release == self.firmware.releases.current:  # not a retiring or candidate release's answers
            self.firmware.counters.add(*release_delta(report))
        for key, n in report.hits.items():
            self._pending_hits[key] = self._pending_hits.get(key, 0) + n
        if self.fills is not None:
            self.fills.hints.hits(report.hits)  # was a player-hinted prefetch used? (oca.fetch.hints)
        for tier, error in report.io_errors:
            self._background(self._report_io_error(tier, error))
        for key, error in report.damaged:
            self._background(self._drop_damaged(key, error))

    async def _report_io_error(self, tier: str, error: str) -> None:
        try:
            await self.owner.call(Store.report_io_error, tier, error)
        except OcaError as exc:
            log.error("worker reported an I/O error on tier %s (%s), which storage did not take: %s",
                      tier, error, exc)

    async def _drop_damaged(self, key: str, error: str) -> None:
        """One object's file is short: drop that object (its tier is fine) so it is never served again."""
        try:
            dropped = await self.owner.call(Store.evict, key)
        except OcaError as exc:
            log.error("could not drop damaged object %s: %s", key, exc)
            return
        if dropped:
            log.error("dropped damaged object %s: %s", key, error)

    async def flush_hits(self) -> None:
        """Write the hits reported since the last flush to storage, in one call."""
        if not self._pending_hits:
            return
        hits, self._pending_hits = self._pending_hits, {}
        try:
            await self.owner.call(Store.record_hits, hits)
        except Exception:
            log.exception("recording hits failed")

    async def _attach_fill_link(self, worker: WorkerProcess, codec: Codec) -> None:
        sock, worker.fill_socket = worker.fill_socket, None
        fills = self.fills
        if sock is None:
            return
        if fills is None:
            sock.close()
            return
        link: Link[FillAsk] = await Link.open(sock, codec, Codec.ask, fills.on_message, fills.detach,
                                              name=f"worker {worker.process.pid}")
        fills.attach(link)

    def tell_duress(self, duress: bool, why: str, workers: Iterable[WorkerProcess]) -> None:
        """Tell the serving `workers` when the box enters or leaves duress (draining, or over
        http.duress_egress): their CMSD-Dynamic says `du` and `mb` meanwhile. A worker of a release that
        knows no such message ignores it."""
        if duress != self._duress:
            self._duress = duress
            log.info("%s duress (CMSD): %s", "entering" if duress else "leaving", why)
            for worker in workers:
                if worker.serving:
                    self._tell(worker, Duress(duress))

    def _tell(self, worker: WorkerProcess, message: Duress) -> None:
        # a version-1 worker reads nothing after its config line; one not yet past its handshake gets it
        # when it is ready (_on_ready)
        if worker.codec is None or worker.codec.version == LEGACY:
            return
        with contextlib.suppress(OSError):  # a worker that is gone is reaped by _supervise
            worker.control.send(worker.codec.encode(message))
