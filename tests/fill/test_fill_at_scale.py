"""The lab test of issue 20: a box that holds a million objects, filled at night, passes every health poll.

Real processes on loopback: the control plane (`oca control serve`) polling the box with its real health poller
at the configured defaults (`health.interval` 2 s, `timeout` 1 s, `down_after` 2), the project's origin (the
fault-injecting origin of the fill tests, no faults), and the box (`oca serve`, its storage settings at their
defaults) filled by `oca fill run` from the control plane's plan of a few hundred titles.

What the box already holds is its million objects' index rows, written directly (as tests/storage/test_scale.py
does) and shaped like titles (titles/held0000/720p/seg_00042.m4s): the control plane's polls and the fill depend on
the box's catalog, not on those files (writing a million files takes tens of minutes on a test machine). What the
fill stores is real: files fetched from the origin, checked against the catalog's size and digest, then read back
over the data port.

The verdict is the control plane's own record: from the moment it judged the box healthy until a full poll
interval after the fill ended, the box's polls counted in `/v1/fleet` (`polls`, `failed_polls`) show none judged
bad, the box is healthy at every look, and `/v1/status` gives each round's duration (with one box, the one poll
of the round), the slowest of which is the figure reported. A benchmark-sized run: `make bench`, not `make test`.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from control.config import HealthConfig
from oca.storage.index import Index, Row, index_path
from oca.wire.inventory import lookup_batches
from tests.conftest import start_box
from tests.fill.world import World, wait_until
from tests.upstream.origin import Origin

HELD = 1_000_000  # index rows the box holds before the fill
HELD_TITLES = 2_000  # ... as titles of 5 renditions x 100 segments
RENDITIONS = ("360p", "540p", "720p", "1080p", "audio")
TITLES = 200  # titles the fill plans (22 files each)
SEGMENT = 16_000  # bytes a segment: about 200 KB a title
RATE = "8Mbit"  # the fill's cap, 1 MB/s: the 40 MB of the plan take about 40 s
FILL_AT_LEAST = 30.0  # the fill must last this long (15 health rounds) for the test to mean anything
HEALTH = HealthConfig()  # the control plane's defaults: the poller as deployed
BOX = "big"


def held_rows(first: int, count: int) -> list[tuple[object, ...]]:
    """Index rows `first`..`first + count` of the held million (no files behind them)."""
    rows = []
    per_title = len(RENDITIONS) * 100
    for i in range(first, first + count):
        title, rest = divmod(i, per_title)
        rendition, segment = divmod(rest, 100)
        key = f"titles/held{title:04d}/{RENDITIONS[rendition]}/seg_{segment:05d}.m4s"
        rows.append(Row(key, "hdd", 2_000_000, f"{i:032x}", 1.7e9 + i, 1.7e9 + i, False, False).values())
    return rows


def write_held_index(state_dir: str) -> float:
    started = time.monotonic()
    os.makedirs(state_dir, exist_ok=True)
    batches = (held_rows(first, min(20_000, HELD - first)) for first in range(0, HELD, 20_000))
    Index.create(index_path(state_dir), batches).close(clean=True)
    return time.monotonic() - started


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    with Origin() as origin:
        made = World(str(tmp_path), origin)
        try:
            yield made
        finally:
            made.stop()


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _fleet_entry(world: World) -> dict[str, Any]:
    assert world.control is not None
    entry: dict[str, Any] = next(b for b in world.control.get("/v1/fleet")["boxes"] if b["id"] == BOX)
    return entry


@dataclasses.dataclass
class HealthRecord:
    """What the control plane said about the box, looked at about once a second during the fill."""

    first_round: int = 0  # rounds done before the watch began are not the fill's
    looks: int = 0
    unhealthy: list[str] = dataclasses.field(default_factory=list)  # "<elapsed>s: <error>" at each look it was not
    rounds: dict[int, float] = dataclasses.field(default_factory=dict)  # round number -> seconds it took

    def look(self, world: World, elapsed: float) -> None:
        assert world.control is not None
        entry = _fleet_entry(world)
        self.looks += 1
        if not entry["healthy"]:
            self.unhealthy.append(f"{elapsed:.1f}s: {entry['error']}")
        health = world.control.get("/v1/status")["health"]
        recent = health["recent_rounds_seconds"]
        first = health["rounds"] - len(recent) + 1
        self.rounds.update({first + i: seconds for i, seconds in enumerate(recent) if first + i > self.first_round})


def _read_back(port: int, keys: list[str], catalog: dict[str, tuple[int, str]]) -> int:
    """GET each key from the box's data port (one kept connection): 200 with the catalog's size; the count."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for key in keys:
            conn.request("GET", "/" + key)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200 and len(body) == catalog[key][0], (key, response.status, len(body))
    finally:
        conn.close()
    return len(keys)


@pytest.mark.bench
@pytest.mark.timeout(900)
def test_a_box_of_a_million_objects_passes_every_health_poll_through_a_nightly_fill(world: World) -> None:
    started = time.monotonic()
    world.make_titles(TITLES, SEGMENT)
    world.plan_boxes({"site-a": [BOX]})
    world.start_control(health={"interval": _duration(HEALTH.interval), "timeout": _duration(HEALTH.timeout),
                                "down_after": HEALTH.down_after, "up_after": HEALTH.up_after})
    workdir = os.path.join(world.root, BOX)
    hdd = os.path.join(workdir, "hdd")
    defaults = {"health_check_interval": "5s", "access_flush_interval": "1s"}  # oca's, not the test suite's
    config_path = world.box_config(BOX, storage={"tiers": [{"name": "hdd", "path": hdd, "capacity": "8TiB"}],
                                                 **defaults})
    os.makedirs(os.path.join(hdd, "objects"))
    index_seconds = write_held_index(os.path.join(workdir, "state"))
    box = start_box(config_path, workdir, session=True, timeout=180)
    world.boxes[BOX] = box
    wait_until(lambda: bool(_fleet_entry(world)["healthy"]), 60, "the control plane never judged the box healthy")
    plan = world.wait_for_plan(BOX, timeout=60)
    assert len(plan["titles"]) == TITLES and len(plan["files"]) == TITLES * 22, (len(plan["titles"]), plan["left_out"])

    # the window under watch opens once the box is judged healthy: its catalog may still be loading
    assert world.control is not None
    before, before_health = _fleet_entry(world), world.control.get("/v1/status")["health"]
    watch_started = time.monotonic()
    record = HealthRecord(first_round=before_health["rounds"])
    fill_started = time.monotonic()
    fill = world.fill_process(BOX, "--rate", RATE)
    try:
        while fill.poll() is None:
            record.look(world, time.monotonic() - fill_started)
            assert time.monotonic() - fill_started < 600, "the fill did not end within 10 minutes"
            time.sleep(1.0)
        fill_seconds = time.monotonic() - fill_started
        out, err = fill.communicate(timeout=30)
    finally:
        if fill.poll() is None:
            fill.kill()
            fill.wait()
    # the polls that overlapped the fill's last moments, and one whole round after it
    time.sleep(HEALTH.interval + HEALTH.timeout)
    record.look(world, time.monotonic() - fill_started)
    after, after_health = _fleet_entry(world), world.control.get("/v1/status")["health"]
    watched = time.monotonic() - watch_started

    assert fill.returncode == 0, f"oca fill run exited {fill.returncode}: {out[-1000:]}{err[-2000:]}"
    summary = json.loads(out)
    assert fill_seconds >= FILL_AT_LEAST, f"the fill took {fill_seconds:.1f}s: too short to span many polls"
    assert summary["fetch_files"] == len(plan["files"]) and summary["present_bytes"] == summary["plan_bytes"]
    status = box.admin("/status")
    assert status["objects"] == HELD + len(plan["files"]), status["objects"]
    catalog = world.catalog()
    filled = [f["key"] for f in plan["files"]]
    held: dict[str, tuple[int, str]] = {}
    for batch in lookup_batches(filled):  # the box's own record of each file (not a listing of 10^6 objects)
        held.update((o["key"], (o["size"], o["digest"])) for o in box.admin("/inventory/lookup", "POST",
                                                                            {"keys": batch})["objects"])
    assert held == {key: catalog[key] for key in filled}
    read_back = _read_back(box.port, filled, catalog)

    loaded = [json.loads(line) for line in err.splitlines() if '"event":"loaded"' in line]
    waited = loaded[0]["waited"] if loaded else 0.0  # the fill waited this long for the box's catalog to load
    polls = after["polls"] - before["polls"]
    failed = after["failed_polls"] - before["failed_polls"]
    skipped = after_health["skipped_polls"] - before_health["skipped_polls"]
    worst = max(record.rounds.values())
    print(f"\n{HELD:,} objects held; index written in {index_seconds:.1f}s; fill of {len(filled):,} files "
          f"({summary['present_bytes']:,} bytes) in {fill_seconds:.1f}s at {RATE} (of which {waited:.1f}s waiting "
          f"for the box's catalog to load); {polls} polls over "
          f"{watched:.1f}s (interval {HEALTH.interval:g}s, timeout {HEALTH.timeout:g}s), {failed} judged bad, "
          f"{skipped} skipped, box unhealthy at {len(record.unhealthy)} of {record.looks} looks; slowest round "
          f"{worst * 1000:.1f} ms over {len(record.rounds)} rounds; {read_back:,} files read back; "
          f"{time.monotonic() - started:.0f}s in all")
    assert not record.unhealthy, record.unhealthy
    assert failed == 0, f"{failed} of {polls} polls judged bad; the last: {after['error']}"
    assert skipped == 0, f"{skipped} polls skipped: the previous poll of the box was still running"
    assert polls >= int(watched / HEALTH.interval) - 1, f"{polls} polls in {watched:.1f}s"
    assert worst < HEALTH.timeout, worst
