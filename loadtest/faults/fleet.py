"""Fleet faults on the lab (origin, control plane, boxes a1, a2, b1; synthetic titles) under simulated players
following content steering (loadtest.devices via loadtest.lab_load): a box killed, a box hung (SIGSTOP), the
control plane killed, and an invalidation pushed while a box is down. One lab serves every fleet scenario of
a run; each scenario leaves it whole (every box and the control plane up) for the next."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from typing import Any

import xxhash

from loadtest.devices.players import Tally
from loadtest.faults.common import Ctx, Findings, Scenario, wait_for
from loadtest.lab_load import players_for
from oca.lab import Lab, LabConfig
from oca.lab.procs import http_get

DEVICES = 10


def use_lab(ctx: Ctx) -> Lab:
    """The run's lab, started on first use; its logs are watched from here on for this scenario."""
    lab = ctx.shared.get("lab")
    if not isinstance(lab, Lab):
        config = LabConfig(workdir=os.path.join(ctx.shared["run_dir"], "lab"), titles=2, boxes=3, duration=30,
                           synthetic=True, control_port=0, box_ports=0, workers=1,
                           # box-hung-under-players stops a box for 12 s and continues it: what a box and the
                           # control plane do with no supervisor killing it (tests/players/test_hung.py has one)
                           watchdog=0)
        ctx.say("lab: starting (origin, control plane, 3 boxes, 2 synthetic titles)")
        lab = Lab(config, say=lambda line: ctx.say(f"lab: {line}"))
        ctx.shared["lab"] = lab
        lab.start()
    for box in lab.boxes:
        if not box.running:
            lab.start_box(box.id)
    lab.wait_healthy(timeout=30)
    for path in [lab.control_log_path, lab.origin_log_path, *(b.log_path for b in lab.boxes)]:
        ctx.watch_log(path)
    return lab


def stop_lab(shared: dict[str, Any]) -> None:
    lab = shared.pop("lab", None)
    if isinstance(lab, Lab):
        for box in lab.boxes:  # a box left stopped by SIGSTOP would not take SIGTERM
            if box.pid:
                with contextlib.suppress(OSError):
                    os.killpg(box.pid, signal.SIGCONT)
        lab.stop()


def _lab(ctx: Ctx) -> Lab:
    lab = ctx.shared["lab"]
    assert isinstance(lab, Lab)
    return lab


def check_stored(lab: Lab, f: Findings) -> int:
    """Every object every running box holds, its digest against the origin's file: mismatches are corrupted."""
    checked = 0
    for box in lab.boxes:
        if not box.running:
            continue
        status, body = http_get(box.admin_url + "/inventory", lab.box_token, timeout=10)
        if status != 200:
            continue
        for obj in json.loads(body)["objects"]:
            path = os.path.join(lab.paths.content, obj["key"])
            try:
                with open(path, "rb") as fh:
                    want = xxhash.xxh3_128_hexdigest(fh.read())
            except OSError:
                continue
            checked += 1
            if obj.get("digest") != want:
                f.served.corrupted.append(f"{box.id} {obj['key']}: stored digest differs from the origin's")
    return checked


def _box_failures(tally: Tally) -> list[str]:
    return tally.failed(targets=lambda target: target != "control")


def _busiest(tally: Tally, lab: Lab) -> str:
    counts = {b.id: tally.requests.get(b.id, 0) for b in lab.boxes}
    return max(counts, key=lambda b: counts[b])


def _worker_pids(pid: int | None) -> list[int]:
    if pid is None:
        return []
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return sorted(int(p) for p in out.stdout.split())


def _failover(ctx: Ctx, f: Findings, how: str) -> None:
    lab = _lab(ctx)
    seen: dict[str, Any] = {}

    def inject(tally: Tally) -> str:
        victim = _busiest(tally, lab)  # the box that served most so far: the one the players are on
        box = lab.box(victim)
        seen["workers"] = _worker_pids(box.pid)
        seen["pid"] = box.pid
        seen["log"] = os.path.getsize(box.log_path)
        if how == "kill":
            lab.stop_box(victim, "kill")
        else:
            assert box.pid is not None
            os.killpg(box.pid, signal.SIGSTOP)
        return victim

    hang = 12.0
    with players_for(lab, DEVICES, 0.2) as players:
        time.sleep(6)
        before = len(players.tally.failures)
        requests_before = dict(players.tally.requests)
        victim = inject(players.tally)
        f.injected = (f"SIGKILL of box {victim} (master and worker) under {DEVICES} players" if how == "kill" else
                      f"SIGSTOP of box {victim} (master and worker) for {hang:g}s under {DEVICES} players, then "
                      f"SIGCONT")
        time.sleep(hang if how == "stop" else 8)
        if how == "stop":
            os.killpg(seen["pid"], signal.SIGCONT)
        settled = len(players.tally.failures)
        time.sleep(5)
        end = len(players.tally.failures)
    tally = players.tally
    after = {t: n - requests_before.get(t, 0) for t, n in tally.requests.items()}
    others = sum(n for t, n in after.items() if t not in (victim, "control"))
    elsewhere = [line for target, line in tally.failures if target not in (victim, "control")]
    f.saw(f"{tally.total():,} player requests, {len(tally.failures)} failed ({before} before the fault, "
          f"{settled - before} while it lasted, {end - settled} in the 5 s after); {others} requests to the other "
          f"boxes after the fault; {tally.sessions} sessions, playback errors {sum(tally.playback_errors.values())}, "
          f"rebuffering {tally.stall_time:.1f}s of {tally.play_time + tally.stall_time:.0f}s played")
    f.check("players fail over: the other boxes serve them after the fault", others > 0, f"{others}")
    f.check("no failed request once the players have moved (the last 5 s)", end == settled,
            f"{end - settled}: {tally.failures[settled:settled + 1]}")
    f.check("failed requests only to the faulty box", not elsewhere, f"{elsewhere[:1]}")
    f.check("no player session dies", sum(tally.playback_errors.values()) == 0, str(dict(tally.playback_errors)))
    if how == "stop":
        box = lab.box(victim)
        time.sleep(2)
        with open(box.log_path, "rb") as fh:
            fh.seek(seen["log"])
            new = fh.read().decode("utf-8", "replace")
        blamed = [ln for ln in new.splitlines() if "sent nothing" in ln or "killing it" in ln]
        now = _worker_pids(box.pid)
        f.check("after SIGCONT the master does not blame (kill) its workers", not blamed and now == seen["workers"],
                f"workers {seen['workers']} → {now}; {blamed[0][:160] if blamed else ''}")
        back = wait_for(lambda: _fleet_healthy(lab, victim), 30, 0.25)
        f.recovery = f"{victim} healthy at the control plane {back or 0:.1f}s after SIGCONT (+2 s)"
    else:
        started = time.monotonic()
        lab.start_box(victim)
        lab.wait_healthy([victim], 30)
        f.recovery = f"{victim} restarted and steered to again in {time.monotonic() - started:.1f}s"
    f.lost.append(f"{check_stored(lab, f)} stored objects checked against the origin")


def _fleet_healthy(lab: Lab, box_id: str) -> bool:
    status, body = http_get(lab.control_url + "/v1/fleet", lab.operator_token, timeout=2)
    return status == 200 and any(b["id"] == box_id and b["healthy"] for b in json.loads(body)["boxes"])


def box_killed(ctx: Ctx, f: Findings) -> None:
    _failover(ctx, f, "kill")


def box_hung(ctx: Ctx, f: Findings) -> None:
    _failover(ctx, f, "stop")


def control_killed(ctx: Ctx, f: Findings) -> None:
    lab = _lab(ctx)
    outage = 8.0
    with players_for(lab, DEVICES, 0.2) as players:
        time.sleep(6)
        requests_before = dict(players.tally.requests)
        failures_before = len(_box_failures(players.tally))
        lab.stop_control("kill")
        f.injected = f"SIGKILL of the control plane for {outage:g}s under {DEVICES} players"
        time.sleep(outage)
        box_failed = len(_box_failures(players.tally)) - failures_before
        during = {t: n - requests_before.get(t, 0) for t, n in players.tally.requests.items()}
        started = time.monotonic()
        lab.start_control()
        lab.wait_healthy(timeout=30)
        back = time.monotonic() - started
        time.sleep(3)
    tally = players.tally
    box_requests = sum(n for t, n in during.items() if t != "control")
    f.saw(f"during the outage: {box_requests} requests to boxes, {box_failed} failed; "
          f"{during.get('control', 0)} to the control plane (failing); playback errors "
          f"{sum(tally.playback_errors.values())} (sessions that could not start); rebuffering "
          f"{tally.stall_time:.1f}s of {tally.play_time + tally.stall_time:.0f}s played")
    f.check("the boxes keep serving: requests to boxes during the outage", box_requests > 0, str(box_requests))
    f.check("no request to a box failed during the outage", box_failed == 0,
            str(_box_failures(tally)[failures_before:failures_before + 1]))
    f.lost.append(f"{check_stored(lab, f)} stored objects checked against the origin")
    f.recovery = f"control plane restarted, every box healthy again in {back:.1f}s"


def invalidation_while_down(ctx: Ctx, f: Findings) -> None:
    lab = _lab(ctx)
    victim = next((b for b, titles in sorted(lab.placement.items()) if titles), lab.boxes[0].id)
    box = lab.box(victim)
    status, body = http_get(box.admin_url + "/inventory", lab.box_token, timeout=10)
    keys = sorted(o["key"] for o in json.loads(body)["objects"]) if status == 200 else []
    if not keys:
        f.check("the box holds something to invalidate", False, f"{victim} /inventory: {status}")
        return
    key = keys[len(keys) // 2]
    lab.stop_box(victim, "kill")
    request = urllib.request.Request(lab.control_url + "/v1/invalidations", method="POST",
                                     data=json.dumps({"scope": "key", "value": key,
                                                      "reason": "loadtest.faults"}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {lab.operator_token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        view = json.loads(resp.read())
    seq = int(view["invalidation"]["seq"])
    f.check("the control plane logs it, with the down box pending", seq > 0 and victim in view.get("pending", []),
            f"seq {seq}, pending {view.get('pending')}")
    f.injected = f"box {victim} killed; invalidation #{seq} of {key} pushed while it is down; restart"
    started = time.monotonic()
    lab.start_box(victim)
    ready = time.monotonic() - started

    def applied() -> bool:
        s, b = http_get(box.admin_url + "/status", lab.box_token, timeout=2)
        return s == 200 and int(json.loads(b).get("invalidation_seq", 0)) >= seq

    took = wait_for(applied, 15, 0.1)
    s, b = http_get(box.admin_url + "/inventory", lab.box_token, timeout=10)
    still = s == 200 and key in {o["key"] for o in json.loads(b)["objects"]}
    f.check("the box applied the invalidation when it came back", took is not None,
            f"invalidation_seq below {seq}")
    f.check("the invalidated object is gone from the box", not still, key)
    f.saw(f"{victim} restarted: serving in {ready:.1f}s")
    f.lost.append(f"{check_stored(lab, f)} stored objects checked against the origin")
    f.recovery = f"invalidation #{seq} applied {ready + (took or 0):.1f}s after the restart began"


SCENARIOS = [
    Scenario("box-killed-under-players", "fleet", box_killed, lab=True),
    Scenario("box-hung-under-players", "fleet", box_hung, lab=True),
    Scenario("control-plane-killed", "fleet", control_killed, lab=True),
    Scenario("invalidation-while-down", "fleet", invalidation_while_down, lab=True),
]
