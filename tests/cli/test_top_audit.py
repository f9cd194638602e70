"""`oca top` (the pure frame from two samples, then --once against a real box and against a control plane) and
`oca audit` (filters applied by the control plane's /v1/audit)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from control.api import build_app
from control.config import load_control_config
from control.plane import ControlPlane
from oca.cli.audit import parse_since
from oca.cli.format import iec, sizes, table
from oca.errors import ConfigError
from oca.top import BoxSample, FleetSample, box_frame, fleet_frame, frame_lines, hit_ratio
from tests.conftest import OCA
from tests.control.fixtures import serve_fake_boxes, write_control_config, write_tokens

STATUS = {"box": "b1", "site": "ams", "version": "1.2.3", "uptime": 3723.5, "workers": 2, "connections": 7,
          "draining": False, "tiers": [{"name": "ssd", "state": "up", "used": 512 << 20, "capacity": 1 << 30,
                                        "objects": 10},
                                       {"name": "hdd", "state": "failed", "used": 0, "capacity": 0, "objects": 0}]}


def _metrics(hit: int, miss: int, requests: int, fills: int = 0, video: int = 0, rebuffers: int = 0,
             sessions: int = 0) -> str:
    return "\n".join([
        "# TYPE oca_requests_total counter",
        f'oca_requests_total{{status="200",cache="hit"}} {requests}',
        "# TYPE oca_sent_bytes_total counter",
        f'oca_sent_bytes_total{{tier="ssd",cache="hit"}} {hit}',
        f'oca_sent_bytes_total{{tier="upstream",cache="miss"}} {miss}',
        "# TYPE oca_fills_total counter",
        f"oca_fills_total {fills}",
        "# TYPE oca_player_requests_total counter",
        f'oca_player_requests_total{{ot="v"}} {video}',
        "# TYPE oca_player_rebuffers_total counter",
        f'oca_player_rebuffers_total{{ot="v"}} {rebuffers}',
        "# TYPE oca_player_sessions gauge",
        f"oca_player_sessions {sessions}",
        "",
    ])


def _sample(at: float, text: str, status: dict[str, Any] | None = None) -> BoxSample:
    return BoxSample.parse(at, status or STATUS, text)


# (name, old sample, new sample, what the frame's data must say)
BOX_CASES: list[tuple[str, BoxSample, BoxSample, dict[str, Any]]] = [
    ("steady", _sample(0, _metrics(0, 0, 0)), _sample(2, _metrics(3 << 20, 1 << 20, 100, 4, 50, 2, 3)),
     {"requests_per_second": 50.0, "egress_bytes_per_second": 2 << 20, "hit_ratio_bytes": 0.75,
      "hit_ratio_bytes_total": 0.75, "fills_per_second": 2.0}),
    ("ratio by bytes, not requests", _sample(10, _metrics(1000, 1000, 10)), _sample(11, _metrics(1000, 5000, 11)),
     {"requests_per_second": 1.0, "egress_bytes_per_second": 4000.0, "hit_ratio_bytes": 0.0,
      "hit_ratio_bytes_total": 1000 / 6000}),
    ("idle: no ratio", _sample(0, _metrics(5, 5, 1)), _sample(1, _metrics(5, 5, 1)),
     {"requests_per_second": 0.0, "egress_bytes_per_second": 0.0, "hit_ratio_bytes": None,
      "hit_ratio_bytes_total": 0.5}),
    ("a restarted box counts from zero", _sample(0, _metrics(9000, 0, 900)), _sample(4, _metrics(400, 0, 8)),
     {"requests_per_second": 2.0, "egress_bytes_per_second": 100.0, "hit_ratio_bytes": 1.0}),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), BOX_CASES, ids=[c[0] for c in BOX_CASES])
def test_box_frame_rates_and_hit_ratio_by_bytes(name: str, old: BoxSample, new: BoxSample,
                                                expected: dict[str, Any]) -> None:
    frame = box_frame(old, new, iec)
    for key, value in expected.items():
        assert frame.data[key] == pytest.approx(value) if value is not None else frame.data[key] is None, key


def test_box_frame_rows_show_iec_sizes_tiers_and_players() -> None:
    frame = box_frame(_sample(0, _metrics(0, 0, 0)), _sample(2, _metrics(3 << 20, 1 << 20, 100, 4, 50, 2, 3)), iec)
    text = "\n".join(frame_lines(frame, table))
    assert frame.title.startswith("box b1 site ams  version 1.2.3  up 01:02:03  workers 2  connections 7")
    summary = dict((row[0], row[1:]) for row in frame.tables[0][1])
    assert summary["egress/s"] == ["2.0 MiB (16.8 Mbit/s)", "4.0 MiB"]
    assert summary["hit ratio (bytes)"] == ["75.0%", "75.0%"]
    tiers = {row[0]: row for row in frame.tables[1][1]}
    assert tiers["ssd"] == ["ssd", "up", "512.0 MiB", "1.0 GiB", "50.0%", "10", "1.5 MiB"]
    assert tiers["hdd"][1:5] == ["failed", "0 B", "0 B", "-"]
    assert tiers["upstream"][-1] == "512.0 KiB"  # misses streamed while filling
    assert frame.tables[2] == ("players (CMCD): 3 sessions", [["OBJECT TYPE", "REQUESTS/s", "REBUFFERS/s", "TOTAL"],
                                                               ["v", "25.0", "1.0", "50"]])
    raw = box_frame(_sample(0, _metrics(0, 0, 0)), _sample(2, _metrics(3 << 20, 1 << 20, 100)), sizes(True))
    assert dict((row[0], row[1]) for row in raw.tables[0][1])["egress/s"].startswith("2097152 ")
    assert "TIER" in text and "OBJECT TYPE" in text


def _box(box_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": box_id, "site": "ams", "healthy": True, "draining": False, "version": "1.0", "load": 0.25,
            "connections": 3, "egress_bps": 8e6, "failed_tiers": [], **fields}


FLEET_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("hit ratio over the interval", _box("a", hit_bytes=100, miss_bytes=100), _box("a", hit_bytes=400, miss_bytes=200),
     ["a", "ams", "up", "1.0", "976.6 KiB/s", "75.0%", "25%", "3"]),
    ("no poll in the interval: since the box started", _box("a", hit_bytes=100, miss_bytes=300),
     _box("a", hit_bytes=100, miss_bytes=300), ["a", "ams", "up", "1.0", "976.6 KiB/s", "25.0%", "25%", "3"]),
    ("down, unknown counters", _box("b"), _box("b", healthy=False, egress_bps=None, connections=None, version=None),
     ["b", "ams", "down", "-", "-", "-", "25%", "-"]),
    ("drained by an operator", _box("c"), _box("c", drained_by_operator=True, draining=True),
     ["c", "ams", "drained", "1.0", "976.6 KiB/s", "-", "25%", "3"]),
    ("a failed tier", _box("d"), _box("d", failed_tiers=["hdd"]), ["d", "ams", "degraded", "1.0", "976.6 KiB/s", "-",
                                                                   "25%", "3"]),
]


@pytest.mark.parametrize(("name", "old", "new", "row"), FLEET_CASES, ids=[c[0] for c in FLEET_CASES])
def test_fleet_frame_rows(name: str, old: dict[str, Any], new: dict[str, Any], row: list[str]) -> None:
    frame = fleet_frame(FleetSample(0, {"boxes": [old]}), FleetSample(2, {"boxes": [new], "version": "1.0"}), iec)
    assert frame.tables[0][1][0] == ["BOX", "SITE", "STATE", "VERSION", "EGRESS", "HIT", "LOAD", "CONN"]
    assert frame.tables[0][1][1] == row


def test_hit_ratio_and_since() -> None:
    assert hit_ratio(0, 0) is None and hit_ratio(3, 1) == 0.75
    assert parse_since("2h", 10_000.0) == 10_000.0 - 7200 and parse_since("30s", 100.0) == 70.0
    assert parse_since("1700000000", 0) == 1_700_000_000.0
    assert parse_since("2024-01-01T00:00:00", 0) == 1_704_067_200.0
    with pytest.raises(ConfigError, match="--since"):
        parse_since("yesterday", 0)


# -- against a real box ----------------------------------------------------------------------------------------

OBJECTS = {f"titles/3/720p/seg_{i}.m4s": bytes([i]) * (100_000 + i) for i in range(4)}


def test_top_once_against_a_real_box(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    for key in OBJECTS:
        assert box.get("/" + key)[0] == 200
    argv = [OCA, "top", "--config", box.config_path, "--once", "--interval", "0.5"]
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    frame = json.loads(done.stdout)
    assert frame["box"] == "test-box" and frame["requests"] >= 4 and frame["sent_bytes"] >= 400_000
    assert frame["hit_ratio_bytes_total"] == 1.0 and {t["name"] for t in frame["tiers"]} >= {"ssd", "hdd"}
    hits = [box.get("/" + key) for key in OBJECTS for _ in range(3)]  # traffic during the interval: a rate
    assert all(h[0] == 200 for h in hits)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("box test-box") and any(line.startswith("hit ratio (bytes)") for line in lines)
    assert any(line.startswith("TIER") for line in lines) and "\x1b" not in done.stdout  # no ANSI when piped
    _live_view_redraws_until_ctrl_c(box.config_path)


def _live_view_redraws_until_ctrl_c(config_path: str) -> None:
    """On a terminal: each frame clears the screen and goes home; Ctrl-C (SIGINT) ends it with exit 0."""
    controller, terminal = pty.openpty()
    # a test run started as a background job (a CI script's `&`) inherits SIGINT ignored, and so would the child,
    # which Ctrl-C could then not stop: it starts with the default disposition, as at a terminal (a handler set
    # here is reset to the default on exec; an ignored signal would stay ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([OCA, "top", "--config", config_path, "--interval", "0.2"], stdin=terminal,
                                stdout=terminal, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 30
    while seen.count(b"\x1b[H\x1b[2J") < 2 and time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            seen += os.read(controller, 65536)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    os.close(controller)
    assert seen.count(b"\x1b[H\x1b[2J") >= 2 and b"box test-box" in seen, seen[-500:]


# -- against a control plane in process --------------------------------------------------------------------------

@pytest.fixture
async def plane_url(tmp_path: Any, aiohttp_server: Any) -> AsyncIterator[tuple[ControlPlane, str]]:
    _, _, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2")
    path = write_control_config(str(tmp_path), entries, auth=write_tokens(tmp_path))
    plane = await ControlPlane.open(load_control_config(path))
    server = await aiohttp_server(build_app(plane))
    await plane.poller.poll_once()
    try:
        yield plane, str(server.make_url("")).rstrip("/")
    finally:
        await plane.close()


async def _oca(*argv: str, token: str = "operator-secret") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCA_CONTROL_TOKEN": token}
    return await asyncio.to_thread(subprocess.run, [OCA, *argv], capture_output=True, text=True, timeout=60, env=env)


async def test_top_fleet_once(plane_url: tuple[ControlPlane, str]) -> None:
    _, url = plane_url
    done = await _oca("top", "--fleet", "--control", url, "--once", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("fleet: 2/2 boxes healthy")
    assert lines[2].split() == ["BOX", "SITE", "STATE", "VERSION", "EGRESS", "HIT", "LOAD", "CONN"]
    assert [line.split()[0] for line in lines[3:]] == ["b1", "b2"] and "up" in lines[3].split()
    done = await _oca("top", "--fleet", "--control", url, "--once", "--interval", "0.1", "--json")
    assert done.returncode == 0, done.stderr
    assert [b["id"] for b in json.loads(done.stdout)["boxes"]] == ["b1", "b2"]
    wrong = await _oca("top", "--fleet", "--control", url, "--once", "--interval", "0.1", token="nope")
    assert wrong.returncode == 2 and "401" in wrong.stderr


async def test_audit_filters(plane_url: tuple[ControlPlane, str]) -> None:
    plane, url = plane_url
    now = time.time()
    for at, operator, action, subject in ((now - 7200, "ann@h", "drain", "b1"), (now - 60, "bob@h", "undrain", "b1"),
                                          (now - 30, "ann@h", "drain", "b2"), (now - 10, "ann@h", "invalidate", "42")):
        plane.store.add_audit(time=at, operator=operator, action=action, subject=subject, detail={"n": 1})

    async def subjects(*args: str) -> list[tuple[str, str, str]]:
        done = await _oca("audit", "--control", url, "--json", *args)
        assert done.returncode == 0, done.stderr
        return [(e["operator"], e["action"], e["subject"]) for e in json.loads(done.stdout)["entries"]]

    assert len(await subjects()) == 4
    assert await subjects("--action", "drain") == [("ann@h", "drain", "b1"), ("ann@h", "drain", "b2")]
    assert await subjects("--subject", "b1", "--operator", "bob@h") == [("bob@h", "undrain", "b1")]
    assert await subjects("--since", "1h") == [("bob@h", "undrain", "b1"), ("ann@h", "drain", "b2"),
                                               ("ann@h", "invalidate", "42")]
    assert await subjects("--operator", "ann@h", "--limit", "1") == [("ann@h", "invalidate", "42")]
    done = await _oca("audit", "--control", url, "--action", "drain")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TIME", "OPERATOR", "ACTION", "SUBJECT", "DETAIL"] and len(lines) == 3
    assert lines[1].split()[2:] == ["ann@h", "drain", "b1", "n=1"] and done.stderr == "2 entries\n"
    bad = await _oca("audit", "--control", url, "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.startswith("oca: oca audit: --since:")


@pytest.mark.parametrize(("query", "message"), [("since=-1", "since"), ("since=nan", "since"), ("limit=0", "limit"),
                                                ("action=" + "x" * 300, "action")])
async def test_audit_query_is_range_checked(plane_url: tuple[ControlPlane, str], query: str, message: str) -> None:
    _, url = plane_url
    done = await _oca("audit", "--control", url)  # the route answers at all
    assert done.returncode == 0, done.stderr
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{url}/v1/audit?{query}", headers={"Authorization": "Bearer operator-secret"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
    assert caught.value.code == 400 and message in caught.value.read().decode()
