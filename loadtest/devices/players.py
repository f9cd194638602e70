"""Players that count every request they make, for "0 failed client requests" during a roll-out.

Each device is a thread looping over `loadtest.devices.session.Session` (master playlist from the control
plane with the lab's client header, content steering, ABR, segments paced at real time, another pathway on
an error), with a getter that records every request's status in one shared `Tally`. The live roll-out
tests (tests/rollout) and `loadtest.bench_rollout` drive them; `loadtest.lab_load` aims them at a lab.

Rules kept here:
- A failure is an answer with status >= 500, or no answer at all (status 0: refused, reset, timed out, cut
  short). 4xx answers are counted by status, not as failures (the caller decides what it allows).
- Half the devices keep one connection per host alive, like a browser; the other half open a connection per
  request, which a server switching workers cannot catch idle.
- The one retry every HTTP client makes (RFC 9112 §9.3.1, urllib3 and browsers alike): a request on a
  reused keep-alive connection that the server closed while it was idle, failing before a byte of the
  answer came, is sent again once on a new connection. It is counted in `retried`, never hidden; a
  keep-alive connection already closed by the server (readable while idle) is not reused (`reconnected`).
- Requests are told apart by target (`classify`: a box id, or "control" for the control plane), so a test
  that stops the control plane on purpose can hold the boxes to zero failures on their own.
- The generator measures itself: how late each device wakes from a sleep (`lags`). On a small machine a
  saturated load generator times out on its own, and a late wake-up tells that apart from a slow server.
"""

from __future__ import annotations

import http.client
import itertools
import select
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from loadtest.devices.session import HttpResult, PlaybackError, Session

Classify = Callable[[str], str]  # URL -> a target name ("control", a box id, ...)
_TIMEOUT = 10.0  # a request that takes longer failed, as a player's would


class _Stopped(Exception):
    """Raised out of a session's sleep once the players are told to stop."""


@dataclass
class Tally:
    """Every request of every device; thread-safe."""

    requests: Counter[str] = field(default_factory=Counter)  # target -> requests
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (target, status) -> count
    failures: list[tuple[str, str]] = field(default_factory=list)  # (target, what) per failed request
    retried: int = 0
    reconnected: int = 0
    sessions: int = 0
    segments: int = 0
    playback_errors: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # target -> each request's wall time
    lags: list[float] = field(default_factory=list)  # seconds each wake-up came after the one asked for
    play_time: float = 0.0  # over finished and stopped sessions
    stall_time: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, target: str, url: str, status: int, error: str = "", seconds: float | None = None) -> None:
        with self._lock:
            self.requests[target] += 1
            if seconds is not None:
                self.seconds.setdefault(target, []).append(seconds)
            self.statuses[target, status] += 1
            if status == 0 or status >= 500:
                path = urllib.parse.urlsplit(url).path
                self.failures.append((target, f"{time.strftime('%H:%M:%S')} {target} {path}: {error or status}"))

    def total(self) -> int:
        return sum(self.requests.values())

    def failed(self, *, targets: Callable[[str], bool] = lambda target: True) -> list[str]:
        """The failures on targets that `targets` accepts (all by default)."""
        return [line for target, line in self.failures if targets(target)]

    def summary(self) -> str:
        by_status = Counter(status for (_, status), n in self.statuses.items() for _ in range(n))
        return (f"{self.total()} requests ({', '.join(f'{t} {n}' for t, n in sorted(self.requests.items()))}), "
                f"{len(self.failures)} failed, statuses {dict(sorted(by_status.items()))}, {self.retried} "
                f"retried on an idle keep-alive connection, {self.reconnected} reconnected, {self.sessions} "
                f"sessions, {self.segments} segments, playback errors {dict(self.playback_errors) or 'none'}")


class Getter:
    """One device's HTTP: `Session`'s getter. Keep-alive (one connection per host) or a fresh connection per
    request; every request lands in the tally."""

    def __init__(self, tally: Tally, classify: Classify, keepalive: bool) -> None:
        self.tally, self.classify, self.keepalive = tally, classify, keepalive
        self._kept: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def close(self) -> None:
        for conn in self._kept.values():
            conn.close()
        self._kept.clear()

    def __call__(self, url: str, headers: dict[str, str], name: str) -> HttpResult:
        parts = urllib.parse.urlsplit(url)
        where = (parts.hostname or "127.0.0.1", parts.port or 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        started = time.perf_counter()
        conn, reused = self._connection(where)
        try:
            try:
                status, body = self._exchange(conn, target, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                with self.tally._lock:
                    self.tally.retried += 1
                self._drop(where, conn)
                conn, _ = self._connection(where, fresh=True)
                status, body = self._exchange(conn, target, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(where, conn)
            took = time.perf_counter() - started
            self.tally.add(self.classify(url), url, 0, f"{name}: {exc!r}", took)
            return HttpResult(0, b"", took)
        finally:
            if not self.keepalive:
                conn.close()
        took = time.perf_counter() - started
        self.tally.add(self.classify(url), url, status, seconds=took)
        if name.startswith("segment") and status in (200, 206):
            with self.tally._lock:
                self.tally.segments += 1
        return HttpResult(status, body, took)

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read()  # IncompleteRead (an answer cut short) is an HTTPException: a failure
        if response.will_close:
            conn.close()
        return response.status, body

    def _connection(self, where: tuple[str, int], fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        kept = self._kept.get(where)
        if self.keepalive and kept is not None and kept.sock is not None and not fresh:
            if not select.select([kept.sock], [], [], 0)[0]:
                return kept, True
            with self.tally._lock:
                self.tally.reconnected += 1
            kept.close()
        conn = http.client.HTTPConnection(*where, timeout=_TIMEOUT)
        if self.keepalive:
            self._kept[where] = conn
        return conn, False

    def _drop(self, where: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        conn.close()
        if self._kept.get(where) is conn:
            del self._kept[where]


class Players:
    """`devices` threads playing `titles` (master playlist URLs) over and over, spread over `clients` (the
    addresses named in `header`), until `stop()`. Use as a context manager."""

    def __init__(self, masters: list[str], header: str, clients: list[str], classify: Classify,
                 devices: int = 8, buffer_target: float = 4.0, stagger: float = 0.75) -> None:
        self.masters, self.header, self.clients, self.classify = masters, header, clients, classify
        # a short buffer target paces segments over the whole title, so requests keep coming during every
        # step of a roll-out instead of in a burst at each session's start
        self.buffer_target, self.stagger = buffer_target, stagger
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._device, args=(i,), name=f"player-{i}", daemon=True)
                         for i in range(devices)]

    def __enter__(self) -> Players:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(_TIMEOUT + 5)

    def _sleep(self, seconds: float) -> None:
        wanted, started = max(seconds, 0.0), time.monotonic()
        if self._stop.wait(wanted):
            raise _Stopped
        late = time.monotonic() - started - wanted
        with self.tally._lock:
            self.tally.lags.append(late)

    def _device(self, index: int) -> None:
        getter = Getter(self.tally, self.classify, keepalive=index % 2 == 0)
        client = self.clients[index % len(self.clients)]
        masters = itertools.cycle(self.masters[index % len(self.masters):] + self.masters[:index % len(self.masters)])
        try:
            # out of step: a device that has buffered the whole (short) title asks nothing until it ends, so
            # devices started together would all fall silent at once, for seconds
            self._sleep(index * self.stagger)
            while not self._stop.is_set():
                session = Session(next(masters), getter, time.monotonic, self._sleep,
                                  client_header=(self.header, client), buffer_target=self.buffer_target)
                with self.tally._lock:
                    self.tally.sessions += 1
                try:
                    session.run()
                except _Stopped:
                    raise
                except Exception as exc:  # e.g. no master playlist (control plane down): again
                    with self.tally._lock:
                        kind = str(exc) if isinstance(exc, PlaybackError) else f"{type(exc).__name__}: {exc}"
                        self.tally.playback_errors[kind] += 1
                    self._sleep(0.5)
                finally:
                    with self.tally._lock:
                        self.tally.play_time += session.stats.play_time
                        self.tally.stall_time += session.stats.stall_time
        except _Stopped:
            pass
        finally:
            getter.close()
