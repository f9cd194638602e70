"""What every fault scenario shares: its context (the processes, mounts and logs it started, all undone at the
end), what it found (`Findings`: what clients saw, every body compared with the origin's bytes, the checks)
and small HTTP and /status helpers.

Rules kept here:
- A scenario starts its processes through its `Ctx` only, so the runner kills every one of them (and unmounts
  every tmpfs) when the scenario ends, however it ends: passed, failed, raised, Ctrl-C or SIGTERM.
- Every body a client received is compared with the origin's bytes (`Served.record`): a whole body must equal
  them; a body cut short of its Content-Length is a "cut" (what the box must do when it cannot finish) and its
  bytes must still be a prefix of the origin's; anything else is corrupted.
- Every log the scenario's processes wrote is scanned for Python tracebacks (`Ctx.tracebacks`); a log shared
  across scenarios (the lab's) is scanned from where it stood when the scenario began.
- Everything listens on 127.0.0.1 (the lab: 127.0.0.0/8).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import xxhash

from loadtest.boxes import OCA, Box, import_dir, kill_box, start_box, write_box_config, write_objects
from loadtest.origin import Origin

TRACEBACK = b"Traceback (most recent call last)"
Say = Callable[[str], None]


class Skip(Exception):
    """The scenario cannot run here (the reason is its row's verdict)."""


def digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


# --- what a scenario found ----------------------------------------------------------------------------------


@dataclass
class Served:
    """Every answer clients got in a scenario, by status, with the bodies judged against the origin's bytes."""

    statuses: Counter[int] = field(default_factory=Counter)
    whole: int = 0  # complete bodies equal to the origin's
    cut: int = 0  # bodies cut short of their Content-Length, a prefix of the origin's bytes
    corrupted: list[str] = field(default_factory=list)  # what differed, per body
    reasons: Counter[str] = field(default_factory=Counter)  # X-OCA-Reason (or the client's error) of failures

    def record(self, key: str, answer: Answer, expected: bytes | None) -> None:
        """Judge one answer for `key` whose whole content is `expected` (None: the answer is an error)."""
        self.statuses[answer.status] += 1
        if answer.status >= 400 or answer.status == 0:
            self.reasons[f"{answer.status} {answer.headers.get('x-oca-reason', answer.error)}"[:120]] += 1
        if answer.status not in (200, 206) or expected is None:
            return
        want = expected
        if answer.status == 206:
            first, _, last = answer.headers.get("content-range", "bytes 0-0/0")[6:].partition("/")[0].partition("-")
            want = expected[int(first):int(last) + 1]
        body = answer.body
        if answer.cut:
            self.cut += 1
            if body != want[:len(body)]:
                self.corrupted.append(f"{key}: a cut body of {len(body)} bytes is not the origin's first bytes")
        elif body == want:
            self.whole += 1
        else:
            self.corrupted.append(f"{key}: {answer.status} with {len(body)} bytes (digest {digest(body)[:12]}), "
                                  f"the origin's are {len(want)} bytes (digest {digest(want)[:12]})")

    def describe(self) -> str:
        statuses = ", ".join(f"{n} x {s or 'no answer'}" for s, n in sorted(self.statuses.items()))
        parts = [statuses or "no requests"]
        if self.cut:
            parts.append(f"{self.cut} cut short")
        if self.reasons:
            parts.append("errors: " + ", ".join(f"{r}" + (f" ({n}x)" if n > 1 else "")
                                                for r, n in self.reasons.most_common(3)))
        return "; ".join(parts)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Findings:
    """One scenario's row: filled in by the scenario, judged by the runner."""

    injected: str = ""
    clients: list[str] = field(default_factory=list)  # what clients saw, beyond `served`
    lost: list[str] = field(default_factory=list)  # what was lost (not corrupted: that is served.corrupted)
    recovery: str = ""
    served: Served = field(default_factory=Served)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the JSON report

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def saw(self, text: str) -> None:
        self.clients.append(text)


# --- HTTP -----------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: no answer (refused, reset, timed out before a status line)
    headers: dict[str, str]
    body: bytes
    cut: bool = False  # the connection ended short of Content-Length
    error: str = ""
    seconds: float = 0.0


def get(port: int, path: str, headers: dict[str, str] | None = None, *, host: str = "127.0.0.1",
        timeout: float = 30, method: str = "GET") -> Answer:
    """One request on a fresh connection; a body cut short is returned as such, never raised."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        got = {k.lower(): v for k, v in resp.getheaders()}
        try:
            body, cut, error = resp.read(), False, ""
        except http.client.IncompleteRead as exc:
            body, cut, error = exc.partial, True, "cut short"
        except (OSError, http.client.HTTPException) as exc:
            body, cut, error = b"", True, f"{type(exc).__name__}: {exc}"
        return Answer(resp.status, got, body, cut, error, time.monotonic() - started)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, {}, b"", False, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    finally:
        conn.close()


def admin(box: Box, path: str, method: str = "GET", body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    """(status, JSON) of an admin call; (0, error text) when the admin port does not answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    if box.extra.get("token"):
        req.add_header("Authorization", f"Bearer {box.extra['token']}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def tiers(box: Box) -> dict[str, dict[str, Any]]:
    """Tier name -> its /status entry (state, error, objects...); {} when /status does not answer."""
    status, body = admin(box, "/status")
    return {t["name"]: t for t in body["tiers"]} if status == 200 else {}


def tier_line(box: Box) -> str:
    return ", ".join(f"{n} {t['state']}" + (f" ({t['error']})" if t.get("error") else "")
                     for n, t in tiers(box).items()) or "/status not answering"


def inventory(box: Box) -> dict[str, dict[str, Any]]:
    status, body = admin(box, "/inventory")
    return {o["key"]: o for o in body["objects"]} if status == 200 else {}


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until predicate() held, or None if it did not within timeout."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if predicate():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


def process_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


# --- the context ----------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """One scenario's run: its work dir, and everything it started, to be undone by `close`."""

    workdir: str
    say: Say
    shared: dict[str, Any]  # what scenarios share across the run (the lab, the compiled shim), set by the runner
    boxes: list[Box] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    logs: dict[str, int] = field(default_factory=dict)  # log path -> offset to scan from
    undo: list[Callable[[], None]] = field(default_factory=list)

    def origin(self) -> Origin:
        origin = Origin().start()
        self.origins.append(origin)
        return origin

    def box_config(self, name: str, objects: dict[str, bytes] | None = None, *, origin: Origin | None = None,
                   import_flags: tuple[str, ...] = (), **overrides: Any) -> tuple[str, str]:
        """(config path, work dir) of a box not started yet; objects are imported (the box owns them)."""
        workdir = os.path.join(self.workdir, name)
        os.makedirs(workdir, exist_ok=True)
        if origin is not None:
            fetch = {"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}],
                     "connect_timeout": "1s", "first_byte_timeout": "2s", "between_bytes_timeout": "2s"}
            fetch.update(overrides.pop("fetch", {}))
            overrides["fetch"] = fetch
        overrides.setdefault("server", {}).setdefault("workers", 1)
        # the scenarios name the tier they break: cold objects on the HDD, hot ones on the SSD, so the SSD
        # takes returning (and hot) objects only rather than every new one
        overrides.setdefault("storage", {}).setdefault("tiers", [
            {"name": "ssd", "path": os.path.join(workdir, "ssd"), "capacity": "64MiB", "admission": "returning"},
            {"name": "hdd", "path": os.path.join(workdir, "hdd"), "capacity": "256MiB"}])
        config_path = write_box_config(workdir, **overrides)
        if objects:
            content = os.path.join(workdir, "content")
            write_objects(content, objects)
            result = import_dir(config_path, content, *import_flags)
            if result.returncode != 0:
                raise RuntimeError(f"oca cache import failed: {result.stderr.strip()}")
            shutil.rmtree(content)
        return config_path, workdir

    def start(self, config_path: str, workdir: str, env: dict[str, str] | None = None) -> Box:
        box = start_box(config_path, workdir, env=env, session=True, timeout=60)
        self.boxes.append(box)
        self.logs.setdefault(box.log_path, 0)
        return box

    def box(self, name: str, objects: dict[str, bytes] | None = None, *, origin: Origin | None = None,
            env: dict[str, str] | None = None, import_flags: tuple[str, ...] = (), **overrides: Any) -> Box:
        config_path, workdir = self.box_config(name, objects, origin=origin, import_flags=import_flags, **overrides)
        return self.start(config_path, workdir, env)

    def watch_log(self, path: str) -> None:
        """Scan `path` for tracebacks from its current end (a log other scenarios write too)."""
        try:
            self.logs[path] = os.path.getsize(path)
        except OSError:
            self.logs[path] = 0

    def mount_tmpfs(self, path: str, size: str) -> str | None:
        """Mount a tmpfs of `size` at `path` (made if missing); None, or the reason it cannot be done."""
        os.makedirs(path, exist_ok=True)
        if os.geteuid() != 0:
            return "not root: cannot mount a tmpfs"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip()}"
        self.mounts.append(path)
        return None

    def tracebacks(self) -> list[str]:
        """'<log>: <the traceback's last line>' for every traceback in the scenario's logs."""
        found = []
        for path, offset in self.logs.items():
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    text = fh.read()
            except OSError:
                continue
            at = text.find(TRACEBACK)
            while at >= 0:
                lines = text[at:].split(b"\n")
                last = next((ln for ln in lines[1:] if ln and not ln.startswith((b" ", b"\t"))), b"?")
                found.append(f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}: "
                             f"{last.decode('utf-8', 'replace')[:200]}")
                at = text.find(TRACEBACK, at + 1)
        return found

    def close(self) -> None:
        for undo in reversed(self.undo):
            with contextlib.suppress(Exception):
                undo()
        for box in self.boxes:
            with contextlib.suppress(Exception):
                os.killpg(box.process.pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                kill_box(box)
        for origin in self.origins:
            with contextlib.suppress(Exception):
                origin.stop()
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30, check=False)
        self.mounts.clear()


@contextlib.contextmanager
def scenario_ctx(workdir: str, say: Say, shared: dict[str, Any]) -> Iterator[Ctx]:
    ctx = Ctx(workdir, say, shared)
    os.makedirs(workdir, exist_ok=True)
    try:
        yield ctx
    finally:
        ctx.close()


def oca_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, *args], capture_output=True, text=True, timeout=timeout)


def box_closed(box_port: int, client_port: int) -> bool:
    """Whether the box has closed its end of the connection 127.0.0.1:client_port -> box_port: its socket has
    no file descriptor any more (inode 0 in /proc/net/tcp: orphaned, flushing or gone), however much of the
    answer the client left unread."""
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == box_port and int(remote.split(":")[1], 16) == client_port:
                return inode == "0"
    return True


def block_socket(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A connection to 127.0.0.1:port with a small receive buffer (set before connecting, so the window is small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


@dataclass(frozen=True)
class Scenario:
    """One row of the suite: `run(ctx, findings)` injects the fault, drives clients and fills in the findings
    (raising Skip when it cannot run here)."""

    name: str
    group: str  # storage, origin, clients, fleet
    run: Callable[[Ctx, Findings], None]
    quick: bool = False  # part of --quick
    lab: bool = False  # needs the shared lab (origin, control plane, 3 boxes)
