"""Client and operator faults on one box: a client that never reads a 16 MiB hit, 2,000 slowloris
connections (loadtest.slowloris's attacker), 1,000 clients that vanish mid-download, and a bad config on
SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import uvloop
import yaml

from loadtest.faults.common import (
    Ctx,
    Findings,
    Scenario,
    admin,
    block_socket,
    box_closed,
    get,
    process_fds,
    tier_line,
    tiers,
    wait_for,
)
from loadtest.slowloris import Attack, Settings, _slowloris, raise_fd_limit

MiB = 1 << 20


def non_reading_client(ctx: Ctx, f: Findings) -> None:
    big, small = os.urandom(16 * MiB), os.urandom(100_000)
    box = ctx.box("box", {"titles/1/1080p/big.mp4": big, "titles/1/360p/small.m4s": small},
                  server={"send_timeout": "2s"}, fetch={"slice_size": 0})
    f.injected = ("GET of a 16 MiB hit (stored whole) on a socket with SO_RCVBUF 4 KiB that never reads; "
                  "send_timeout 2 s")
    sock = block_socket(box.port)
    started = time.monotonic()
    sock.sendall(b"GET /titles/1/1080p/big.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    client_port = sock.getsockname()[1]
    # a connection still in the listen backlog has no descriptor either: wait until a worker holds it
    held = wait_for(lambda: not box_closed(box.port, client_port), 5, 0.02)
    closed = wait_for(lambda: box_closed(box.port, client_port), 2 + 10, 0.1) if held is not None else None
    cut_after = time.monotonic() - started
    received = 0
    sock.settimeout(5)
    with contextlib.suppress(OSError):
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    sock.close()
    f.saw(f"the non-reader: the box closed the connection {cut_after:.1f}s after the request; reading then got "
          f"{received:,} bytes (of {len(big):,} + head)")
    f.check("the box cuts the non-reader within send_timeout (+ the sweep)", closed is not None
            and received < len(big), f"{received:,} bytes delivered; still connected: {closed is None}")
    time.sleep(1.5)  # a worker's report reaches the master within a flush interval
    f.check("no tier failed by the client", all(t["state"] == "up" for t in tiers(box).values()), tier_line(box))
    for key, data in (("titles/1/360p/small.m4s", small), ("titles/1/1080p/big.mp4", big)):
        answer = get(box.port, "/" + key)
        f.served.record(key, answer, data)
        f.check(f"{key.rsplit('/', 1)[1]} still a hit", answer.status == 200
                and "hit" in answer.headers.get("cache-status", ""), f"{answer.status} "
                f"{answer.headers.get('cache-status', '')} {answer.headers.get('x-oca-reason', '')}")
    f.lost.append("none" if f.served.whole == 2 else "objects no longer served")
    f.recovery = f"tiers after: {tier_line(box)}"


def slowloris(ctx: Ctx, f: Findings) -> None:
    settings = Settings(connections=2000, duration=8.0, header_timeout=2.0, trickle=0.8, workers=2)
    raise_fd_limit(settings.connections + 512)
    objects = {f"titles/{i // 50 + 1}/360p/seg_{i:05d}.m4s": os.urandom(64 << 10) for i in range(50)}
    first = next(iter(objects))
    # loadtest.slowloris's attacker asks for its own object set's first key: give the box that key too
    from loadtest.slowloris import OBJECTS

    objects[OBJECTS.keys()[0]] = os.urandom(64 << 10)
    box = ctx.box("box", objects, server={"workers": 2, "header_timeout": "2s"})
    f.injected = (f"{settings.connections:,} slowloris connections (a header line every {settings.trickle:g}s, "
                  f"reconnecting) for {settings.duration:g}s; header_timeout 2 s")
    stop_normal = threading.Event()

    def normal_clients() -> None:
        keys = list(objects)
        i = 0
        while not stop_normal.is_set():
            key = keys[i % len(keys)]
            f.served.record(key, get(box.port, "/" + key, timeout=10), objects[key])
            i += 1

    async def attack() -> Attack:
        result = Attack()
        stop = asyncio.Event()
        ramp = 2.0
        slots = [asyncio.create_task(_slowloris(box.port, settings, result, stop, ramp * i / settings.connections))
                 for i in range(settings.connections)]
        await asyncio.sleep(ramp + settings.duration)
        stop.set()
        _, pending = await asyncio.wait(slots, timeout=settings.close_bound + 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return result

    normal = threading.Thread(target=normal_clients, daemon=True)
    normal.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(attack())
    finally:
        stop_normal.set()
        normal.join(15)
    overdue = result.overdue(settings.close_bound)
    f.saw(f"slowloris: {result.opened:,} opened, {result.answered_408:,} answered 408, {overdue} kept past "
          f"{settings.close_bound:g}s, {len(result.still_open)} still open, {result.connect_errors} connect errors")
    f.saw(f"normal clients ({first} and 49 more): {f.served.describe()}")
    f.check("normal clients all served whole", f.served.statuses[200] == sum(f.served.statuses.values())
            and f.served.cut == 0, f.served.describe())
    f.check("every slowloris connection closed within header_timeout + sweep", overdue == 0
            and not result.still_open, f"{overdue} overdue, {len(result.still_open)} still open")
    f.check("no tier failed", all(t["state"] == "up" for t in tiers(box).values()), tier_line(box))
    f.lost.append("none")
    f.recovery = f"connections back to {admin(box, '/status')[1].get('connections')} after the attack"


def disconnects(ctx: Ctx, f: Findings) -> None:
    big = os.urandom(8 * MiB)
    box = ctx.box("box", {"titles/1/1080p/big.mp4": big}, server={"workers": 2})
    pids = [box.process.pid, *box.worker_pids()]
    for _ in range(10):  # warm up: first requests open what stays open
        get(box.port, "/titles/1/1080p/big.mp4")
    time.sleep(0.5)
    before = process_fds(pids)
    f.injected = "1,000 clients (10 waves of 100) start an 8 MiB download and reset the connection mid-body"
    request = b"GET /titles/1/1080p/big.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    started = 0
    for _ in range(10):
        socks = []
        for _ in range(100):
            sock = block_socket(box.port, 16 * 1024)
            sock.sendall(request)
            socks.append(sock)
        for sock in socks:
            with contextlib.suppress(OSError):
                if sock.recv(4096):
                    started += 1
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST mid-body
    peak = process_fds(pids)
    back = wait_for(lambda: process_fds(pids) <= before, 15, 0.2)
    after = process_fds(pids)
    f.saw(f"{started} of 1,000 downloads had started when reset")
    f.check("the box's descriptors (master + workers) back to the baseline", back is not None,
            f"{before} before, {after} after")
    answer = get(box.port, "/titles/1/1080p/big.mp4")
    f.served.record("titles/1/1080p/big.mp4", answer, big)
    f.check("the object is still served whole", answer.status == 200 and answer.body == big)
    f.check("no tier failed", all(t["state"] == "up" for t in tiers(box).values()), tier_line(box))
    f.lost.append("none")
    f.recovery = f"fds {before} → {peak} (after the waves) → {after} in {back or 0:.1f}s"


def bad_sighup(ctx: Ctx, f: Findings) -> None:
    data = os.urandom(100_000)
    box = ctx.box("box", {"titles/1/360p/a.m4s": data}, server={"workers": 2})
    with open(box.config_path, encoding="utf-8") as fh:
        good = fh.read()
    config = yaml.safe_load(good)
    config["server"]["header_timeout"] = "lots"
    with open(box.config_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)
    workers = sorted(box.worker_pids())
    f.injected = "server.header_timeout: lots written to the config, then SIGHUP"
    box.process.send_signal(signal.SIGHUP)
    said = wait_for(lambda: "reload rejected" in box.log(), 10)
    line = next((ln for ln in box.log().splitlines() if "reload rejected" in ln), "")
    f.check("the box says why it kept the old config", said is not None, "no 'reload rejected' in its log")
    f.check("the box keeps running its workers", box.process.poll() is None and sorted(box.worker_pids()) == workers,
            f"workers {workers} → {sorted(box.worker_pids())}")
    for _ in range(5):
        f.served.record("titles/1/360p/a.m4s", get(box.port, "/titles/1/360p/a.m4s"), data)
    f.check("the box keeps serving", f.served.whole == 5, f.served.describe())
    status, body = admin(box, "/status")
    f.check("/status answers", status == 200, str(body)[:100])
    with open(box.config_path, "w", encoding="utf-8") as fh:
        fh.write(good)
    box.process.send_signal(signal.SIGHUP)
    fixed = wait_for(lambda: "reloaded" in box.log(), 15)
    f.check("a good config on the next SIGHUP is taken", fixed is not None, "no 'reloaded' in its log")
    f.saw(f"box log: {line.partition('ERROR')[2].strip()[:160]}")
    f.lost.append("none")
    f.recovery = f"old config kept (same workers); fixed config reloaded in {fixed or 0:.1f}s"


def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        return b"".join(chunks)


def missing_host(ctx: Ctx, f: Findings) -> None:
    data = os.urandom(10_000)
    box = ctx.box("box", {"titles/1/360p/a.m4s": data})
    f.injected = "an HTTP/1.1 request with no Host header (RFC 9112 §3.2: a server MUST answer 400)"
    answer = _raw(box.port, b"GET /titles/1/360p/a.m4s HTTP/1.1\r\n\r\n")
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
    f.saw(f"the request without Host: {status or 'no answer'}")
    f.check("answered 400", status == 400, str(status))
    f.served.record("titles/1/360p/a.m4s", get(box.port, "/titles/1/360p/a.m4s"), data)
    f.check("the box keeps serving", f.served.whole == 1, f.served.describe())
    f.lost.append("none")
    f.recovery = "-"


def deep_json(ctx: Ctx, f: Findings) -> None:
    box = ctx.box("box", {"titles/1/360p/a.m4s": b"a" * 1000})
    deep = b"[" * 100_000 + b"]" * 100_000
    f.injected = "JSON nested 100,000 deep POSTed to the admin API (/purge, /cache/import, /invalidations, /prefetch)"
    answers = {}
    for path in ("/purge", "/cache/import", "/invalidations", "/prefetch"):
        req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}{path}", data=deep, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answers[path] = resp.status
        except urllib.error.HTTPError as exc:
            answers[path] = exc.code
        except OSError:
            answers[path] = 0
    f.saw(", ".join(f"{p} {s}" for p, s in answers.items()))
    f.check("every route answers 4xx (bad input), never 5xx", all(400 <= s < 500 for s in answers.values()),
            ", ".join(f"{p} {s}" for p, s in answers.items() if not 400 <= s < 500))
    status, _ = admin(box, "/status")
    f.check("the admin API keeps answering", status == 200, str(status))
    f.lost.append("none")
    f.recovery = "-"


def invalidation_seq(ctx: Ctx, f: Findings) -> None:
    data = os.urandom(10_000)
    box = ctx.box("box", {"titles/1/360p/a.m4s": data, "titles/1/360p/b.m4s": data})
    huge = 10 ** 30
    f.injected = f"an invalidation pushed to the box's admin API with seq {huge:.0e} (past any 64-bit sequence)"
    status, body = admin(box, "/invalidations", "POST", {"invalidations": [
        {"seq": huge, "scope": "key", "value": "titles/1/360p/a.m4s", "soft": False}]})
    applied = admin(box, "/status")[1].get("invalidation_seq")
    f.saw(f"the push: {status} {str(body)[:80]}; /status invalidation_seq {applied}")
    f.check("refused as bad input (4xx)", 400 <= status < 500, str(status))
    f.check("the box's applied sequence is unchanged", applied == 0, str(applied))
    status2, _ = admin(box, "/invalidations", "POST", {"invalidations": [
        {"seq": 1, "scope": "key", "value": "titles/1/360p/b.m4s", "soft": False}]})
    gone = get(box.port, "/titles/1/360p/b.m4s").status
    f.check("the next real invalidation (seq 1) is still applied", status2 == 200 and gone == 404,
            f"push {status2}, then GET {gone}")
    f.lost.append("none")
    f.recovery = f"invalidation_seq now {admin(box, '/status')[1].get('invalidation_seq')}"


SCENARIOS = [
    Scenario("non-reading-client", "clients", non_reading_client, quick=True),
    Scenario("slowloris-2000", "clients", slowloris),
    Scenario("disconnects-1000", "clients", disconnects),
    Scenario("bad-config-sighup", "clients", bad_sighup, quick=True),
    Scenario("missing-host", "clients", missing_host),
    Scenario("deep-json-admin", "clients", deep_json),
    Scenario("invalidation-seq-unbounded", "clients", invalidation_seq),
]
