"""The control plane as a real process (`oca control serve`) steering real boxes (`oca serve`) on loopback.

Done-when items of issue 4 shown here: a stopped box leaves every steering response's PATHWAY-PRIORITY
within 3 poll intervals and comes back after m healthy polls; an invalidation reaches the healthy boxes
within 2 s and a box that was down applies it before it reports healthy again; drains and the log survive
a control-plane restart; the operator CLI end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import OCA, Box, free_port, kill_box, start_box, wait_ready
from tests.control.fixtures import box_entry, write_control_config, write_package

INTERVAL = 0.4  # health.interval of these tests
UP_AFTER = 2
TOKEN = "operator-secret"


class Control:
    """A running `oca control serve`."""

    def __init__(self, config_path: str, port: int, workdir: str) -> None:
        self.config_path, self.port, self.workdir = config_path, port, workdir
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(workdir, "control.log")

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([OCA, "control", "serve", "--config", self.config_path], stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if self.get("/healthz", raw=True) == b"ok\n":
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"control plane not up:\n{self.log()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def get(self, path: str, raw: bool = False, method: str = "GET", body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
        return payload if raw else json.loads(payload)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OCA_CONTROL_URL": self.url, "OCA_CONTROL_TOKEN": TOKEN}
        return subprocess.run([OCA, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def lab(tmp_path: Any, box_factory: Callable[..., Box]) -> Iterator[tuple[Control, list[Box]]]:
    port = free_port()
    control_url = f"http://127.0.0.1:{port}"
    (tmp_path / "box.token").write_text("box-secret\n")
    boxes = [box_factory(box={"id": name, "site": "lab"},
                         control={"url": control_url, "credential_file": str(tmp_path / "box.token"),
                                  "poll_interval": "200ms"})
             for name in ("b1", "b2")]
    (tmp_path / "operator.token").write_text(TOKEN + "\n")
    path = write_control_config(str(tmp_path), [box_entry(name, b.port, b.admin_port)
                                                for name, b in zip(("b1", "b2"), boxes, strict=True)],
                                listen=f"127.0.0.1:{port}",
                                health={"interval": f"{INTERVAL}s", "timeout": "300ms", "down_after": 2,
                                        "up_after": UP_AFTER},
                                auth={"operator_token_file": "operator.token", "box_token_file": "box.token"})
    control = Control(path, port, str(tmp_path))
    control.start()
    try:
        result = control.cli("catalog", "ingest", write_package(str(tmp_path / "package")), "42")
        assert result.returncode == 0, result.stderr
        assert "42: HLS+DASH, 4 renditions, 22 files" in result.stdout
        yield control, boxes
    finally:
        control.kill()


def _steer(control: Control, steering_uri: str) -> list[str]:
    with urllib.request.urlopen(steering_uri, timeout=5) as response:
        return list(json.loads(response.read())["PATHWAY-PRIORITY"])


def _sessions(control: Control) -> list[str]:
    """Steering URIs of one HLS and one DASH session."""
    with urllib.request.urlopen(control.url + "/v1/play/42/master.m3u8", timeout=5) as response:
        hls = response.read().decode()
    with urllib.request.urlopen(control.url + "/v1/play/42/manifest.mpd", timeout=5) as response:
        dash = response.read().decode()
    uris = [hls.split('SERVER-URI="', 1)[1].split('"', 1)[0],
            dash.split("<ContentSteering", 1)[1].split(">", 1)[1].split("<", 1)[0]]
    return uris


def _wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s")


def _healthy(control: Control, box_id: str) -> bool:
    return bool(next(b for b in control.get("/v1/fleet")["boxes"] if b["id"] == box_id)["healthy"])


@pytest.mark.slow
def test_a_stopped_box_leaves_steering_within_three_polls_and_returns_after_m(lab: tuple[Control, list[Box]]) -> None:
    control, boxes = lab
    uris = _sessions(control)
    for uri in uris:
        assert sorted(_steer(control, uri)) == ["b1", "b2", "origin"]
    b1 = boxes[0]
    kill_box(b1)
    stopped = time.monotonic()
    gone = _wait_for(lambda: all("b1" not in _steer(control, uri) for uri in uris), 3 * INTERVAL + 1)
    assert gone <= 3 * INTERVAL, f"b1 still steered to {gone:.2f}s after it stopped"
    print(f"b1 left every steering response {gone:.3f}s after it stopped (poll interval {INTERVAL}s)")
    assert all(_steer(control, uri) == ["b2", "origin"] for uri in uris)
    fresh = _sessions(control)  # new sessions do not get it either
    assert all(_steer(control, uri) == ["b2", "origin"] for uri in fresh)

    restarted = start_box(b1.config_path, b1.workdir, wait=False)  # sample the fleet while it starts
    boxes[0] = restarted
    try:
        samples: list[tuple[float, bool, bool]] = []  # (time, polled good since restart, healthy)

        def sample() -> bool:
            box = next(b for b in control.get("/v1/fleet")["boxes"] if b["id"] == "b1")
            samples.append((time.monotonic(), box["error"] is None, box["healthy"]))
            return bool(box["healthy"])

        _wait_for(sample, (UP_AFTER + 2) * INTERVAL + 20, step=0.02)
        first_good = next(t for t, good, _ in samples if good)
        back = samples[-1][0]
        assert back - first_good >= (UP_AFTER - 1) * INTERVAL * 0.5, samples  # m polls, not the first one
        print(f"b1 steered to again {back - first_good:.3f}s after its first good poll (m={UP_AFTER})")
        assert all(sorted(_steer(control, uri)) == ["b1", "b2", "origin"] for uri in uris)
        wait_ready(restarted)
    finally:
        kill_box(restarted)
    assert time.monotonic() - stopped < 30


@pytest.mark.slow
def test_invalidation_with_a_box_down_and_a_control_plane_restart(lab: tuple[Control, list[Box]]) -> None:
    control, boxes = lab
    b1, b2 = boxes
    kill_box(b2)
    _wait_for(lambda: not _healthy(control, "b2"), 3 * INTERVAL + 1)
    result = control.cli("invalidate", "--title", "42", "--reason", "re-encode", "--id", "T-1", "--wait",
                         "--wait-timeout", "2", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["invalidation"]["seq"] == 1 and answer["created"]
    assert b1.admin("/status")["invalidation_seq"] == 1
    assert answer["pending"] == ["b2"] and answer["propagation_seconds"] < 2
    print(f"invalidation applied by the healthy box in {answer['propagation_seconds']:.3f}s")
    again = control.cli("invalidate", "--title", "42", "--id", "T-1", "--json")
    assert json.loads(again.stdout)["created"] is False

    # the control plane restarts: the log, the drain and the idempotency ids are still there
    assert control.cli("fleet", "drain", "b1").returncode == 0
    assert control.stop() == 0
    control.start()
    fleet = control.get("/v1/fleet")
    assert fleet["last_invalidation_seq"] == 1
    assert [b["drained_by_operator"] for b in fleet["boxes"]] == [True, False]
    assert json.loads(control.cli("invalidate", "--title", "42", "--id", "T-1", "--json").stdout)["created"] is False

    # the box that was down pulls the log at start: it has applied seq 1 before it reports healthy
    restarted = start_box(b2.config_path, b2.workdir)
    boxes[1] = restarted
    try:
        _wait_for(lambda: _healthy(control, "b2"), (UP_AFTER + 2) * INTERVAL + 5)
        assert restarted.admin("/status")["invalidation_seq"] == 1
        status = control.get("/v1/invalidations/1")
        assert status["pending"] == [] and status["complete"]
    finally:
        kill_box(restarted)


@pytest.mark.slow
def test_operator_cli(lab: tuple[Control, list[Box]]) -> None:
    control, _ = lab
    _wait_for(lambda: _healthy(control, "b1") and _healthy(control, "b2"), 5)
    table = control.cli("fleet", "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["BOX", "SITE", "HEALTH", "LOAD", "VERSION", "DRAINING", "TIERS"]
    assert lines[1].split()[:3] == ["b1", "lab", "up"] and "ssd:up" in lines[1]
    assert json.loads(control.cli("fleet", "status", "--json").stdout)["boxes"][1]["id"] == "b2"
    assert control.cli("fleet", "drain", "b2").stdout.strip() == "b2 drained"
    explain = json.loads(control.cli("steer", "explain", "--ip", "127.0.0.1", "--title", "42", "--json").stdout)
    assert [p["id"] for p in explain["pathways"]] == ["b1", "origin"]
    assert any(c["box"] == "b2" and "draining" in c["reason"] for c in explain["candidates"])
    text = control.cli("steer", "explain", "--ip", "127.0.0.1", "--title", "42")
    lines = text.stdout.splitlines()
    assert lines[1].split() == ["#", "PATHWAY", "URL"] and lines[2].split()[:2] == ["1.", "b1"]
    assert ["BOX", "SITE", "TIER", "REASON"] in [line.split() for line in lines] and "draining" in text.stdout
    assert control.cli("fleet", "undrain", "b2").returncode == 0
    listing = json.loads(control.cli("catalog", "ls", "--json").stdout)
    assert listing["titles"][0]["id"] == "42" and listing["titles"][0]["files"] == 22
    catalog_lines = control.cli("catalog", "ls").stdout.splitlines()
    assert catalog_lines[0].split() == ["TITLE", "RENDITIONS", "FILES", "SIZE", "PACKAGES", "COUNTRIES"]
    assert catalog_lines[1].split()[:3] == ["42", "4", "22"] and catalog_lines[1].split()[4] in ("KiB", "MiB")
    raw = control.cli("catalog", "ls", "--bytes").stdout.splitlines()[1].split()
    assert raw[3] == str(listing["titles"][0]["size"])

    bad = control.cli("fleet", "drain", "b9")
    assert bad.returncode == 1 and bad.stderr.strip() == "oca: control plane answered 404: unknown box 'b9'"
    no_token = subprocess.run([OCA, "fleet", "status", "--control", control.url], capture_output=True, text=True,
                              timeout=30, env={k: v for k, v in os.environ.items() if k != "OCA_CONTROL_TOKEN"})
    assert no_token.returncode == 2 and "401" in no_token.stderr
    assert "--token-file or $OCA_CONTROL_TOKEN" in no_token.stderr
    usage = control.cli("invalidate", "--key", "a", "--title", "42")
    assert usage.returncode == 2 and "exactly one of" in usage.stderr
    unreachable = control.cli("fleet", "status", "--control", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 3 and "cannot reach the control plane" in unreachable.stderr
