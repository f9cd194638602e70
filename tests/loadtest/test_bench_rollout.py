"""bench_rollout: its verdict from known counts, and one real quick run (a lab of five boxes rolled to V+1
under ten players) that must end done with no failed box request and every box at V+1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench_rollout import NEXT, Rollout, passed
from loadtest.devices.players import Tally
from loadtest.lab_load import json_documents

FIVE_AT_NEXT = {box: NEXT for box in ("a1", "a2", "a3", "b1", "b2")}


def test_the_verdict_holds_the_boxes_to_zero_failures_and_the_new_version() -> None:
    done = Rollout("done", "all boxes at " + NEXT, 30.0, [1, 1, 3], {}, 0)
    tally = Tally()
    tally.add("a1", "http://127.0.0.1:1/t/x/seg_00001.m4s", 200)
    tally.add("control", "http://127.0.0.1:2/v1/play/1001/master.m3u8", 503)
    assert passed(done, tally, FIVE_AT_NEXT)  # the control plane is not what is rolled: reported, not failed
    assert not passed(done, tally, {**FIVE_AT_NEXT, "b2": "0.0.1"})
    assert not passed(Rollout("halted", "gate", 30.0, [1], {}, 1), tally, FIVE_AT_NEXT)
    tally.add("b1", "http://127.0.0.1:3/t/x/seg_00002.m4s", 0, "reset")
    assert not passed(done, tally, FIVE_AT_NEXT)


def test_watch_output_is_read_as_one_document_per_change() -> None:
    text = json.dumps({"state": "running"}, indent=2) + "\n" + json.dumps({"state": "done"}, indent=2) + "\n"
    assert [d["state"] for d in json_documents(text)] == ["running", "done"]


# the timed run is a benchmark (`make bench`): the same roll-out under players, without the timings, is
# tests/rollout/test_live.py's test_a_rollout_of_five_boxes_under_load_fails_no_client_request, in make test
@pytest.mark.bench
def test_quick_run_rolls_every_box_without_a_failed_box_request(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "loadtest.bench_rollout", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in done.stdout.splitlines()
            if line.startswith("| ")}
    assert rows["failed requests, boxes"][1:] == ["0", "0", "meets |"], done.stdout
    assert rows["outcome"][1].startswith("done"), done.stdout
    versions = dict(item.split() for item in rows["box versions at the end"][1].split(", "))
    assert versions == FIVE_AT_NEXT, done.stdout
    report = json.loads((tmp_path / "bench_rollout.json").read_text())
    assert report["rollout"]["state"] == "done" and report["versions"] == FIVE_AT_NEXT
    assert not [line for line in report["players"]["failures"] if " control " not in line]
    assert sum(n for target, n in report["players"]["requests"].items() if target != "control") > 0
