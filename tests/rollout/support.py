"""What the live roll-out tests share: bundles signed with the lab's key (through `oca firmware build`), the
control plane's roll-out API and audit log, and the boxes' own view. The players and the watch of the fleet
while a roll-out runs are `loadtest.lab_load`'s (`loadtest.bench_rollout` measures with them too)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from control.model import Box
from control.rollout.plan import order_boxes
from oca.lab import Lab
from oca.lab.procs import http_get
from tests.conftest import OCA

FINAL = ("done", "halted", "aborted")


def build_bundle(signing_key: str, wheel: str, version: str, out: str) -> str:
    """`oca firmware build --wheel` of `wheel` (reporting `version`), signed with `signing_key` (the lab's:
    `lab.paths.firmware_key`)."""
    result = subprocess.run([OCA, "firmware", "build", "--version", version, "--signing-key", signing_key,
                             "--wheel", wheel, "--out", out],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return out


def canary_version(lab: Lab, base: str) -> str:
    """`<base>rcN` for the first N whose roll-out starts on a box players are steered to (one the lab put
    the title on), so that the canary carries player traffic until it is drained."""
    boxes = [Box(b.id, b.site, b.data_url, b.admin_url, 10**9) for b in lab.boxes]
    holders = {box for box, titles in lab.placement.items() if titles}
    for n in range(1, 100):
        version = f"{base}rc{n}"
        if order_boxes(boxes, version)[0] in holders:
            return version
    raise AssertionError(f"no {base}rcN up to 99 starts on one of {sorted(holders)}")


def oca_cli(lab: Lab, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """An `oca` command aimed at the lab's control plane with the operator token."""
    return subprocess.run([OCA, *args, "--control", lab.control_url, "--token-file", lab.paths.operator_token],
                          capture_output=True, text=True, timeout=timeout)


def control(lab: Lab, path: str) -> Any:
    status, body = http_get(lab.control_url + path, lab.operator_token, timeout=5)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def rollout_audit(lab: Lab, rollout_id: str) -> list[dict[str, Any]]:
    """The audit entries of one roll-out (its submit, each step's outcome, its end), oldest first."""
    entries = control(lab, "/v1/audit?limit=10000")["entries"]
    return [e for e in entries if e["action"] == "rollout" and e["detail"].get("rollout") == rollout_id]


def drain_audit(lab: Lab) -> list[tuple[str, str, str]]:
    """(action, box, operator) of every drain and undrain in the audit log."""
    entries = control(lab, "/v1/audit?limit=10000")["entries"]
    return [(e["action"], e["subject"], e["operator"]) for e in entries if e["action"] in ("drain", "undrain")]


def steps_done(entries: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Subject (a box, or "wave W batch B" for a bake) -> the steps that finished done there."""
    out: dict[str, set[str]] = {}
    for e in entries:
        if e["detail"].get("result") == "done":
            out.setdefault(e["subject"], set()).add(e["detail"]["step"])
    return out


def box_status(lab: Lab, box_id: str) -> dict[str, Any]:
    status, body = http_get(lab.box(box_id).admin_url + "/status", lab.box_token, timeout=5)
    assert status == 200, (box_id, status, body[:300])
    result: dict[str, Any] = json.loads(body)
    return result


def wait_rollout(lab: Lab, rollout_id: str, timeout: float,
                 until: Callable[[dict[str, Any]], bool] = lambda view: view["state"] in FINAL) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            view: dict[str, Any] = control(lab, f"/v1/rollouts/{rollout_id}")
        except OSError:  # the control plane is restarting
            view = {"state": "?"}
        if view["state"] != "?" and until(view):
            return view
        assert time.monotonic() < deadline, f"roll-out {rollout_id} not over within {timeout}s: {view}"
        time.sleep(0.2)


def wait_audit(lab: Lab, rollout_id: str, timeout: float,
               until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        entries = rollout_audit(lab, rollout_id)
        if until(entries):
            return entries
        assert time.monotonic() < deadline, f"audit of {rollout_id} not there within {timeout}s: {entries[-3:]}"
        time.sleep(0.1)
