"""`python -m loadtest.fake_boxes`: the admin ports of many fake boxes in one asyncio process, for
`loadtest.bench_control`'s polling cases (20,000 boxes on one machine).

Box i (the i-th line of `--ids`) listens on its own loopback address, `address(i)` (127.100.0.0 upward: the
whole of 127.0.0.0/8 is local on Linux), on the one `--port`, so the control plane sees as many hosts as a
real fleet and keeps a connection to each. Every box answers:
- `GET /status` with a /status body shaped like a real box's: the health report the control plane reads
  (its id, two tiers, egress, sequences) inside the operator fields a box adds around it (firmware,
  workers, per-tier bytes, fetch counters: about 1.6 KB, as oca/admin answers). The body does not change
  between polls; the poller decodes every answer whole (it has no unchanged-answer shortcut), so a constant
  body costs it what a changing one would;
- `GET /inventory/titles?...` with an empty full inventory (sequence 1), what the control plane asks after
  the first poll;
- anything else with 404.

Rules it keeps:
- Cheap per request: a bare asyncio.Protocol, answers built once per box, HTTP/1.1 keep-alive; requests
  are split at the blank line (the control plane sends no request bodies) and `Connection: close` is kept.
- It raises its open-file limit to what the boxes need (about two descriptors per box: the listening
  socket and the control plane's connection), as the systemd unit's LimitNOFILE does for a real service.
- It prints `ready <boxes> <requests served so far>` once every address listens; on SIGTERM it prints
  `served <requests>` and exits 0.
- `running(ids, port, workdir)` starts as many of these processes as the boxes need (PER_PROCESS each: a
  process may not open more files than its hard limit, 20,000 on the machine measured) and stops them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import cast

BASE = (127 << 24) | (100 << 16)  # 127.100.0.0
PER_PROCESS = 8000  # boxes per fake-box process: 2 descriptors each stays under a 20,000 open-file limit


def address(i: int) -> str:
    """The loopback address of box i: 127.100.0.1, 127.100.0.2, ... (never a .0 or .255 host byte)."""
    n = BASE + 1 + i + 2 * (i // 254)  # skips x.y.z.255 and x.y.z+1.0
    return socket.inet_ntoa(n.to_bytes(4, "big"))


def status_body(box_id: str) -> bytes:
    release_stats = {"version": "0.1.0", "since": 1_750_000_000.0, "requests": 81_234_567, "errors": 12,
                     "restarts": 0}
    return json.dumps({
        # what oca/admin adds for operators (firmware, process, counters), read past by the poller
        "previous_version": "0.0.9", "staged": None, "releases": ["0.0.8", "0.0.9", "0.1.0"],
        "firmware": {"state": "running", "version": "0.1.0", "activated": 1_750_000_000.0},
        "release_stats": release_stats, "site": box_id.rsplit("-", 1)[0], "pid": 4242, "uptime": 86_400.5,
        "workers": [{"pid": 4300 + i, "generation": 3, "started": 1_750_000_000.0 + i} for i in range(8)],
        "requests": 81_234_567, "bytes_by_tier": {"memory": 50_000_000_000, "ssd": 60_000_000_000,
                                                  "hdd": 13_456_789_012},
        "hit_ratio": 0.9731, "objects": 2_345_678, "storage_generation": 17, "invalidation_error": None,
        "fetch": {"in_flight": 3, "coalesced": 1_234, "fetched": 56_789, "bytes": 123_456_789, "errors": 2},
        "promotions": 12_345, "demotions": 2_345, "evictions": 34_567,
        # the health report (oca.wire.status.BoxReport)
        "box": box_id, "version": "0.1.0", "draining": False,
        "egress_bps": 2_500_000_000, "bytes_out": 123_456_789_012, "connections": 4_000,
        "inventory_sequence": 1, "invalidation_seq": 0, "hit_bytes": 100_000_000_000,
        "miss_bytes": 23_456_789_012,
        "tiers": [{"name": "ssd", "capacity": 2_000_000_000_000, "used": 1_200_000_000_000, "objects": 400_000,
                   "state": "up", "error": None},
                  {"name": "hdd", "capacity": 36_000_000_000_000, "used": 30_000_000_000_000, "objects": 1_945_678,
                   "state": "up", "error": None}],
    }).encode()


INVENTORY = json.dumps({"sequence": 1, "full": True, "titles": {}, "removed": []}).encode()


def response(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


NOT_FOUND = response("404 Not Found", b'{"error": "not found"}')


class _Box(asyncio.Protocol):
    __slots__ = ("buffer", "counter", "status", "transport")

    def __init__(self, status: bytes, counter: list[int]) -> None:
        self.status = status
        self.counter = counter
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if target == b"/status":
                self.transport.write(self.status)
            elif target.startswith(b"/inventory/titles"):
                self.transport.write(_INVENTORY_RESPONSE)
            else:
                self.transport.write(NOT_FOUND)
            self.counter[0] += 1
            if b"\r\nconnection: close" in head.lower():
                self.transport.close()
                self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


_INVENTORY_RESPONSE = response("200 OK", INVENTORY)


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))  # root may raise the hard limit
            return
        except (OSError, ValueError):
            needed = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def serve(ids: Sequence[str], first: int, last: int, port: int) -> None:
    """Boxes first..last-1 of `ids`, until SIGTERM."""
    loop = asyncio.get_running_loop()
    counter = [0]
    servers = []
    for i in range(first, last):
        box_id = ids[i]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address(i), port))
        sock.listen(64)
        sock.setblocking(False)
        status = response("200 OK", status_body(box_id))
        servers.append(await loop.create_server(lambda s=status: _Box(s, counter), sock=sock))  # type: ignore[misc]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"ready {last - first} {counter[0]}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    print(f"served {counter[0]}", flush=True)


@contextlib.contextmanager
def running(ids: Sequence[str], port: int, workdir: str, *, timeout: float = 120.0) -> Iterator[list[str]]:
    """Fake boxes for `ids` (box i at http://address(i):port) in child processes, ready on entry; yields
    the admin URLs in the order of `ids`. Every child is stopped (SIGTERM, then SIGKILL) on exit."""
    path = os.path.join(workdir, "fake-box-ids.txt")
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(f"{box_id}\n" for box_id in ids)
    children: list[subprocess.Popen[str]] = []
    try:
        for first in range(0, len(ids), PER_PROCESS):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "loadtest.fake_boxes", "--ids", path, "--port", str(port), "--first",
                 str(first), "--count", str(PER_PROCESS)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True))
        for child in children:
            assert child.stdout is not None
            line = _readline(child, timeout)
            if not line.startswith("ready "):
                raise RuntimeError(f"fake boxes did not start (exit {child.poll()}): {line.strip()!r}")
        yield [f"http://{address(i)}:{port}" for i in range(len(ids))]
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()


def _readline(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line, or "" once `timeout` passed or it exited."""
    import selectors

    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return child.stdout.readline()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fake_boxes", description=__doc__.split("\n")[0])
    parser.add_argument("--ids", required=True, help="a file of box ids, one a line: box i listens on address(i)")
    parser.add_argument("--port", type=int, required=True, help="the admin port every fake box listens on")
    parser.add_argument("--first", type=int, default=0, help="serve boxes from this line of --ids on (default 0)")
    parser.add_argument("--count", type=int, help="serve this many boxes (default: to the end of --ids)")
    args = parser.parse_args(argv)
    with open(args.ids, encoding="utf-8") as fh:
        ids = [line.strip() for line in fh if line.strip()]
    last = len(ids) if args.count is None else min(len(ids), args.first + args.count)
    raise_file_limit(2 * (last - args.first) + 256)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(ids, args.first, last, args.port))
    else:
        uvloop.run(serve(ids, args.first, last, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
