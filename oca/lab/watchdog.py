"""The lab's watchdog over its boxes: what systemd's WatchdogSec= does for systemd/oca.service, on loopback.

A box that hangs (a stuck disk, a kernel stall, SIGSTOP in a test) keeps its connections open and answers
nothing: players wait for their own timeouts. Killing it resets those connections, so players move to
another pathway at once; starting it again brings its cache back into steering.

Rules kept here:
- Each box gets its own notify socket (sd_notify(3); abstract namespace, so no path-length limit) in
  NOTIFY_SOCKET, and WATCHDOG_USEC = the timeout: its master pings WATCHDOG=1 at half of it, and only while
  its workers report (oca.serve.stall.workers_report).
- A box is watched from its first message after each start (READY=1 comes once every worker serves): one
  that never comes up is the lab's start-up timeout's business. A box stopped through the lab is not
  watched until it is started again (`expect`).
- An overdue box is SIGKILLed with its workers (the process group) and started again, by the callback.
- The watchdog's own pauses (the lab process not running: the machine is busy) are credited to every box,
  as the master credits its own pauses to its workers (oca.serve.stall.own_pause): a box is never killed for
  pings the lab did not read.
- The thread that restarts boxes lives as long as the lab (procs.py: PR_SET_PDEATHSIG follows the thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable

from oca.serve.stall import own_pause

log = logging.getLogger("oca.lab.watchdog")
_TICK = 0.05


def overdue(now: float, last: float | None, timeout: float) -> bool:
    """True if a box last heard of at `last` (None: not watched) has been silent for more than `timeout`."""
    return last is not None and now - last > timeout


class BoxWatchdog:
    """Watches every registered box; `on_overdue(box_id)` kills and restarts one that stopped pinging."""

    def __init__(self, timeout: float, on_overdue: Callable[[str], None]) -> None:
        self.timeout = timeout
        self._on_overdue = on_overdue
        self._prefix = f"oca-lab-{os.getpid()}-{secrets.token_hex(4)}"
        self._selector = selectors.DefaultSelector()
        self._last: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.kills: list[tuple[float, str]] = []  # (time.time(), box id) of each box it killed
        self.enabled = True  # False: pings are still read, nobody is killed (a measurement without it)

    def register(self, box_id: str) -> dict[str, str]:
        """Open the box's notify socket; the environment its `oca serve` needs to ping it."""
        address = f"{self._prefix}-{box_id}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind("\0" + address)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, box_id)
        self._last[box_id] = None
        return {"NOTIFY_SOCKET": "@" + address, "WATCHDOG_USEC": str(int(self.timeout * 1_000_000))}

    def expect(self, box_id: str) -> None:
        """The box was (re)started or stopped: not watched until its next message."""
        with self._lock:
            self._last[box_id] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lab-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        previous = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._selector.select(_TICK):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    while sock.recv(4096):
                        with self._lock:
                            self._last[key.data] = time.monotonic()
            now = time.monotonic()
            pause = own_pause(previous, now, _TICK)
            previous = now
            late = []
            with self._lock:
                for box_id, last in self._last.items():
                    if last is not None and pause:
                        self._last[box_id] = last = last + pause
                    if self.enabled and overdue(now, last, self.timeout):
                        self._last[box_id] = None
                        late.append(box_id)
            for box_id in late:
                log.warning("box %s sent no watchdog ping for %.1fs: killing and restarting it", box_id,
                            self.timeout)
                self.kills.append((time.time(), box_id))
                try:
                    self._on_overdue(box_id)
                except Exception:
                    log.exception("restarting box %s failed", box_id)
