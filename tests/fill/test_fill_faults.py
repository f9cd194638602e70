"""The fill runner against faults, with real processes (one box, a control plane, an origin):

- the control plane unreachable: exit 3, the box untouched (no pin, no job, nothing stored);
- a planned file the origin lacks: reported with its reason, every other file filled, exit 1;
- `kill -9` of the runner halfway: the next run cancels the orphaned job and completes, and no file is
  fetched from the origin twice;
- `kill -9` of the box halfway: restarted, the next run completes without refetching any file that was
  complete before the kill;
- the window ends: the job is cancelled, exit 4, and a capped fill moved no more than cap x time + 1 s of
  burst; the next run resumes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import kill_box
from tests.fill.world import World, wait_until
from tests.upstream.origin import Origin, closed_port

TITLES = 20
SEGMENT = 8_000  # about 100 KB a title, 2 MB in all
MISSING = "titles/1003/720p/seg_00002.m4s"


def single(tmp_path: Any, origin: Origin, missing: tuple[str, ...] = ()) -> World:
    world = World(str(tmp_path), origin)
    world.make_titles(TITLES, SEGMENT, missing_at_origin=missing)
    world.plan_boxes({"site": ["x1"]})
    world.start_control()
    world.start_box("x1")
    world.wait_for_plan("x1")
    return world


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    with Origin() as origin:
        made = single(tmp_path, origin)
        try:
            yield made
        finally:
            made.stop()


def job_bytes(world: World) -> int:
    jobs = world.boxes["x1"].admin("/prefetch")["jobs"]
    return int(jobs[-1]["bytes"]) if jobs else 0


def test_control_plane_unreachable_exits_3_and_leaves_the_box_untouched(world: World) -> None:
    code, summary, stderr = world.fill("x1", "--control", f"http://127.0.0.1:{closed_port()}")
    assert code == 3, stderr
    assert "cannot reach the control plane" in stderr and "the box was not touched" in stderr
    assert summary == {}
    assert world.inventory("x1") == {} and world.boxes["x1"].admin("/prefetch")["jobs"] == []
    assert world.origin.count() == 0


def test_a_file_the_origin_lacks_is_reported_and_the_rest_is_filled(tmp_path: Any) -> None:
    with Origin() as origin:
        world = single(tmp_path, origin, missing=(MISSING,))
        try:
            code, summary, stderr = world.fill("x1")
            assert code == 1, (summary, stderr)
            assert summary["missing"] == [MISSING] and summary["missing_count"] == 1
            size = world.catalog()[MISSING][0]
            assert summary["present_bytes"] == summary["plan_bytes"] - size
            assert sum(summary["failures"].values()) == 1, summary["failures"]
            held = world.inventory("x1")
            assert MISSING not in held and len(held) == len(world.catalog()) - 1
        finally:
            world.stop()


def test_kill_9_of_the_runner_then_the_next_run_completes_without_refetching(world: World) -> None:
    runner = world.fill_process("x1", "--rate", "400KB")
    wait_until(lambda: job_bytes(world) > 600_000, 20, "the capped fill to get going")
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    done_before = set(world.inventory("x1"))
    assert 0 < len(done_before) < len(world.catalog())
    code, summary, stderr = world.fill("x1")
    assert code == 0, (summary, stderr)
    assert '"event":"orphan_cancelled"' in stderr
    assert summary["kept_files"] >= len(done_before)
    assert summary["present_bytes"] == summary["plan_bytes"]
    assert all(world.origin.count(key) == 1 for key in world.catalog()), "a file was fetched twice"


def test_kill_9_of_the_box_then_restart_and_the_next_run_completes(world: World) -> None:
    runner = world.fill_process("x1", "--rate", "400KB")
    wait_until(lambda: job_bytes(world) > 600_000, 20, "the capped fill to get going")
    done_before = set(world.inventory("x1"))
    kill_box(world.boxes["x1"])
    assert runner.wait(60) == 3  # the runner reports the box gone: unreachable (the exit-code table)
    world.restart_box("x1")
    code, summary, stderr = world.fill("x1")
    assert code == 0, (summary, stderr)
    assert summary["present_bytes"] == summary["plan_bytes"]
    assert done_before and all(world.origin.count(key) == 1 for key in done_before), \
        "a file complete before the kill was fetched again"


def test_the_window_ends_the_job_and_the_next_run_resumes(world: World) -> None:
    now = time.time()
    # the window closes 8 s from now: room for the command's start-up on a loaded machine (seconds at load 20),
    # and at 100 KB/s the ~2 MB plan cannot finish inside it
    start, end = time.localtime(now - 60), time.localtime(now + 8)
    window = f"{time.strftime('%H:%M:%S', start)}-{time.strftime('%H:%M:%S', end)}"
    rate = 100_000
    code, summary, stderr = world.fill("x1", "--window", window, "--rate", str(rate))
    assert code == 4, (summary, stderr)
    assert summary["job_state"] == "cancelled" and '"event":"window_end"' in stderr
    assert 0 < summary["present_bytes"] < summary["plan_bytes"]
    # cap x time + the token bucket's one second of burst (+ one chunk per parallel fill in flight)
    assert summary["bytes"] <= rate * (summary["elapsed"] + 1) + 4 * 65536, summary
    code, summary, stderr = world.fill("x1")
    assert code == 0, (summary, stderr)
    assert all(world.origin.count(key) == 1 for key in world.catalog())
