"""The fault suite: `python -m loadtest.faults --quick` against real processes, every quick row PASS.

It runs the suite as a subprocess, as an operator would, and holds it to the issue's criteria through the
suite's own verdicts (no body served that differs from the origin's bytes, no tier failed by a client, no
traceback in any log, every fault recovered or reported in /status). Rows that find a known defect fail here
until the defect is fixed: that is what the suite is for. The pure parts (judging a row, comparing bodies)
are checked without processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from loadtest.faults.common import Answer, Findings, Served
from loadtest.faults.report import FAIL, PASS, SKIP, judge, render
from loadtest.faults.runner import SCENARIOS, parse_args, select

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_cut_body_that_is_a_prefix_is_cut_and_anything_else_differing_is_corrupted() -> None:
    served = Served()
    data = b"0123456789"
    served.record("k", Answer(200, {}, data), data)
    served.record("k", Answer(200, {}, data[:4], cut=True), data)
    served.record("k", Answer(200, {}, b"xx", cut=True), data)
    served.record("k", Answer(200, {}, b"0123"), data)  # a clean short body
    served.record("k", Answer(206, {"content-range": "bytes 2-4/10"}, b"234"), data)
    served.record("k", Answer(502, {"x-oca-reason": "origin: answered 503"}, b"bad gateway"), data)
    assert (served.whole, served.cut, len(served.corrupted)) == (2, 2, 2)
    assert served.statuses == {200: 4, 206: 1, 502: 1}
    assert "502 origin: answered 503" in served.describe()


def test_a_row_fails_on_corruption_a_failed_check_or_a_traceback_and_skips_with_its_reason() -> None:
    clean = Findings(injected="x")
    clean.check("holds", True)
    assert judge("a", "g", clean, [], None, None, 1.0).verdict == PASS
    bad = Findings()
    bad.served.corrupted.append("k: differs")
    assert judge("a", "g", bad, [], None, None, 1.0).verdict == FAIL
    failed = Findings()
    failed.check("tier up", False, "hdd failed")
    row = judge("a", "g", failed, [], None, None, 1.0)
    assert row.verdict == FAIL and row.why == ["tier up (hdd failed)"]
    assert judge("a", "g", Findings(), ["box.log: OSError"], None, None, 1.0).verdict == FAIL
    assert judge("a", "g", Findings(), [], "RuntimeError: x", None, 1.0).verdict == FAIL
    skipped = judge("a", "g", Findings(), [], None, "not root", 1.0)
    assert skipped.verdict == SKIP and "not root" in render([skipped])


def test_quick_is_the_named_subset_and_every_scenario_is_selectable() -> None:
    quick = {s.name for s in select(parse_args(["--quick"]))}
    assert quick == {"kill9-mid-write", "enospc-fill", "eio", "origin-truncated", "origin-desync",
                     "non-reading-client", "bad-config-sighup"}
    assert len(select(parse_args([]))) == len(SCENARIOS)
    assert isinstance(select(parse_args(["--scenario", "nope"])), str)
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.slow
def test_the_quick_fault_suite_passes_against_real_processes(tmp_path: Any) -> None:
    report = tmp_path / "faults.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-m", "loadtest.faults", "--quick", "--json", str(report)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=280)
    rows = {row["scenario"]: row for row in json.loads(report.read_text())["rows"]}
    quick = {s.name for s in SCENARIOS if s.quick}
    assert set(rows) == quick, done.stderr[-2000:]
    failed = {name: row["why"] for name, row in rows.items() if row["verdict"] not in (PASS, SKIP)}
    assert not failed, f"{done.stdout}\n{failed}"
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
