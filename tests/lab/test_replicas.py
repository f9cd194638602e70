"""The lab with two control-plane replicas (`--control-replicas 2`): the lab's own PostgreSQL, HAProxy on the
control URL, and a replica killed and restarted under a steady stream of player requests.

Needs Debian's postgresql and haproxy (make system-deps); skips without them. The lab lives in /tmp when run as
root: PostgreSQL runs as `postgres` and must be able to enter its directory (pytest's tmp dirs are 0700).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from oca.lab import Lab, LabConfig
from oca.lab.haproxy import CHECK_INTERVAL_MS, FALL, RISE
from oca.lab.postgres import server_bindir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(server_bindir() is None, reason="PostgreSQL server binaries missing: make system-deps"),
    pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                       reason="haproxy missing: make system-deps"),
]

CHECK_WINDOW = FALL * CHECK_INTERVAL_MS / 1000  # a dead replica is out of rotation after this long


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    workdir = tempfile.mkdtemp(prefix="oca-lab-replicas-", dir="/tmp" if os.geteuid() == 0 else None)
    os.chmod(workdir, 0o755)
    config = LabConfig(workdir=workdir, titles=1, boxes=2, duration=8, synthetic=True, control_port=0, box_ports=0,
                       control_replicas=2)
    try:
        with Lab(config) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fetch(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def play_once(lab: Lab) -> bool:
    """One player start through the load balancer: the master playlist, then its steering manifest."""
    headers = {lab.client_header: lab.site_clients["site-b"]}
    status, body = fetch(lab.master_url(lab.titles[0]), headers)
    if status != 200:
        return False
    found = re.search(rb'SERVER-URI="([^"]+)"', body)
    if found is None:
        return False
    status, body = fetch(found.group(1).decode(), headers)
    return status == 200 and bool(json.loads(body).get("PATHWAY-PRIORITY"))


def wait_for(what: str, check: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if callable(check) and check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not {what} within {timeout}s")


def test_both_replicas_serve_behind_haproxy(lab: Lab) -> None:
    described = lab.describe()
    assert [(r["name"], r["running"], r["balancer"]) for r in described["control_replicas"]] == [
        ("r1", True, "UP"), ("r2", True, "UP")]
    assert described["balancer"]["check_interval_ms"] == CHECK_INTERVAL_MS
    assert described["postgres"]["url"].startswith("postgresql://oca@127.0.0.1:")
    for replica in lab.replicas:
        assert fetch(replica.url + "/healthz", {})[0] == 200
    status, body = fetch(lab.master_url(lab.titles[0]), {lab.client_header: lab.site_clients["site-a"]})
    assert status == 200, body
    # players are sent back to the load balancer, never to one replica (public_url)
    assert re.search(rb'SERVER-URI="' + re.escape(lab.control_url.encode()) + rb"/", body), body
    # what one replica wrote (the catalog, at ingest) the other serves: the state is shared
    assert all(play_once(lab) for _ in range(6))
    # one of them leads roll-outs (the lease in the shared database); the lab API asks each (GET /v1/status)
    wait_for("one roll-out leader", lambda: len(leaders(lab)) == 1, 15)


def leaders(lab: Lab) -> list[str]:
    with urllib.request.urlopen(lab.api_url + "/api/lab", timeout=10) as response:
        replicas = json.loads(response.read())["control_replicas"]
    assert all(r["state_ok"] is True for r in replicas if r["running"]), replicas
    return [r["name"] for r in replicas if r["leader"]]


def test_a_killed_replica_costs_no_request_after_the_check_interval_and_rejoins(lab: Lab) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(lambda _: play_once(lab), range(40)))
        killed = time.monotonic()
        lab.stop_control("kill", replica=1)
        during = list(pool.map(lambda _: (play_once(lab), time.monotonic() - killed), range(80)))
        down_after = wait_for("r1 DOWN at HAProxy", lambda: lab.balancer_states().get("r1", "").startswith("DOWN"),
                              10)
        time.sleep(max(0.0, CHECK_WINDOW - (time.monotonic() - killed)))
        after = list(pool.map(lambda _: play_once(lab), range(200)))
    failed_during = sum(not ok for ok, _ in during)
    print(f"\nr1 SIGKILLed: DOWN at HAProxy after {down_after:.2f}s; {failed_during}/{len(during)} player starts "
          f"failed meanwhile, {after.count(False)}/{len(after)} after the check interval ({CHECK_WINDOW:.1f}s)")
    assert after.count(False) == 0
    assert failed_during <= 2  # an answer cut mid-way is retried (GET); only a request caught in-flight may fail

    lab.start_control(replica=1)
    back = wait_for("r1 UP again", lambda: lab.balancer_up() == {"r1", "r2"},
                    RISE * CHECK_INTERVAL_MS / 1000 + 10)
    print(f"r1 restarted: UP at HAProxy {back:.2f}s after it answered")
    with open(lab.paths.haproxy_log, encoding="utf-8") as fh:
        log = fh.read()
    assert "Server control/r1 is DOWN" in log and "Server control/r1 is UP" in log
    assert fetch(lab.replica(1).url + "/healthz", {})[0] == 200
    assert all(play_once(lab) for _ in range(10))
    assert lab.check() == []
    wait_for("one roll-out leader again", lambda: len(leaders(lab)) == 1, 15)


def test_the_lab_api_stops_and_starts_a_replica(lab: Lab) -> None:
    def post(path: str) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(lab.api_url + path, method="POST", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post("/api/control/3/stop")[0] == 404
    assert post("/api/control/2/stop?how=term") == (200, {"replica": 2, "running": False, "how": "term"})
    assert not lab.replica(2).running
    wait_for("r2 DOWN at HAProxy", lambda: lab.balancer_states().get("r2") == "DOWN", 10)
    assert all(play_once(lab) for _ in range(10))  # r1 answers alone
    assert post("/api/control/2/start") == (202, {"replica": 2, "running": True})
    wait_for("r2 UP again", lambda: lab.balancer_up() == {"r1", "r2"}, 30)
    with urllib.request.urlopen(lab.api_url + "/api/lab", timeout=10) as response:
        described = json.loads(response.read())
    assert [(r["name"], r["running"], r["balancer"]) for r in described["control_replicas"]] == [
        ("r1", True, "UP"), ("r2", True, "UP")]


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="chromium missing: make system-deps")
def test_the_page_has_stop_and_start_for_each_replica(lab: Lab, tmp_path: Any) -> None:
    from tests.players.browser import chromium

    with chromium(str(tmp_path / "profile")) as browser:
        page = browser.new_page()
        page.goto(lab.page_url)
        page.wait_for_function("() => window.labState && window.labState.ready", timeout=20_000)
        page.wait_for_selector('#replicas button[data-replica="2"][data-action="kill"]', timeout=10_000)
        assert "HAProxy" in page.inner_text("#balancer")
        page.click('#replicas button[data-replica="2"][data-action="kill"]')
        wait_for("r2 killed from the page", lambda: not lab.replica(2).running, 10)
        page.wait_for_selector('#replicas button[data-replica="2"][data-action="start"]', timeout=10_000)
        page.click('#replicas button[data-replica="2"][data-action="start"]')
        wait_for("r2 UP again", lambda: lab.replica(2).running and lab.balancer_up() == {"r1", "r2"}, 30)
        page.wait_for_function("() => [...document.querySelectorAll('#replicas tbody tr')].map("
                               "r => r.cells[3].textContent).join() === 'UP,UP'", timeout=10_000)
