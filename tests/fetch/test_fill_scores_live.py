"""The fill plan's per-file scores reach a running box (issue 19, "fill-aware"): the fill job (fill/runner.py,
over HTTP) sends them with `PUT /cache/fill-scores`, the box hands them to its tiers' policies, and
`/cache/why/<key>` shows each held file's score. A plan without scores fills the box as before and ends the
previous plan's. Prefetched files that are not hot land on the slowest tier."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import xxhash

from fill.runner import OK, BoxAdmin, Options, Runner
from oca.wire.control_client import ControlClient
from oca.wire.fill import BoxPlan, FillSettings, PlannedFile, PlanReply, Source
from tests.conftest import Box
from tests.upstream.origin import Origin

KEYS = [f"titles/9/720p/seg_{i}.m4s" for i in range(4)]
SIZE = 50_000
BODIES = {key: (key.encode() * SIZE)[:SIZE] for key in KEYS}
DIGESTS = {key: xxhash.xxh3_128_hexdigest(body) for key, body in BODIES.items()}  # what the catalog would list


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        for key, body in BODIES.items():
            server.add(key, body)
        yield server


@pytest.fixture
def box(box_factory: Callable[..., Box], origin: Origin) -> Box:
    return box_factory(fetch={"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}]})


class PlanServer(ControlClient):
    """The control plane's answer to `GET /v1/fill-plans/<box>`: one fixed plan (the plan's own code is tested in
    tests/control; here the box's side is)."""

    def __init__(self, plan: BoxPlan) -> None:
        super().__init__("http://control.test", "t")
        self.plan = plan

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        return PlanReply(self.plan, None, 0.0, FillSettings()).to_json()


def plan_for(box_id: str, origin: Origin, scores: list[float | None]) -> BoxPlan:
    files = tuple(PlannedFile(key, "9", SIZE, DIGESTS[key], "hdd", False, True, ("origin",), score)
                  for key, score in zip(KEYS, scores, strict=True))
    return BoxPlan(box_id, "s", (), (), files, (), {"origin": Source("origin", origin.url, "origin")})


def run_fill(box: Box, plan: BoxPlan) -> Any:
    admin = BoxAdmin(f"http://127.0.0.1:{box.admin_port}", box.extra.get("token"))
    return Runner(plan.box, admin, PlanServer(plan)).run(Options(poll_interval=0.05))


def held(box: Box, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = box.admin(f"/cache/why/{key}")["held"]
    return answer


def test_the_fill_job_hands_the_plans_scores_to_the_box_and_a_plan_without_them_ends_them(
        box: Box, origin: Origin) -> None:
    box_id = box.admin("/status")["box"]
    box.admin("/prefetch", "POST", {"items": [{"key": KEYS[0], "size": SIZE}]})  # already held before the plan
    scored = plan_for(box_id, origin, [4.0, 3.0, 2.5, 0.5])
    report = run_fill(box, scored)
    assert report.exit_code == OK and report.scored == 4 and report.fetch_files in (3, 4)
    assert [held(box, key)["fill_score"] for key in KEYS] == [4.0, 3.0, 2.5, 0.5]
    # not hot: the plan's files were stored on the slowest tier, leaving the fast one to demand
    assert {held(box, key)["tier"] for key in KEYS[1:]} == {"hdd"}

    unscored = dataclasses.replace(scored, files=tuple(dataclasses.replace(f, score=None) for f in scored.files))
    report = run_fill(box, unscored)
    assert report.exit_code == OK and report.scored == 0 and report.fetch_files == 0
    assert [held(box, key)["fill_score"] for key in KEYS] == [None] * 4


def test_a_box_that_never_got_scores_fills_and_serves_as_before(box: Box, origin: Origin) -> None:
    report = run_fill(box, plan_for(box.admin("/status")["box"], origin, [None] * 4))
    assert report.exit_code == OK and report.present_files == 4
    assert all(held(box, key)["fill_score"] is None and held(box, key)["pinned"] for key in KEYS)
    status, headers, body = box.get(f"/{KEYS[2]}")
    assert status == 200 and len(body) == SIZE and headers["cache-status"].startswith("oca; hit")


@pytest.mark.parametrize(("body", "problem"), [
    (b"[1", "not valid JSON"),
    (b'{"version": 1, "scores": {"../etc/passwd": 1}}', "not a valid content key"),
    (b'{"version": 1, "scores": {"titles/9/a.m4s": -1}}', "finite non-negative number"),
    (b'{"version": 1, "scores": {"titles/9/a.m4s": true}}', "finite non-negative number"),
    (b'{"version": 2, "scores": {}}', "version must be 1"),
    (b'{"version": 1, "scores": []}', "scores must be an object"),
])
def test_bad_fill_scores_are_400_naming_the_problem(box: Box, body: bytes, problem: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}/cache/fill-scores", data=body, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert caught.value.code == 400 and problem in json.loads(caught.value.read())["error"]


def test_scores_for_a_plan_past_the_admin_apis_1_mib_are_taken(box: Box) -> None:
    scores = {f"titles/{i}/720p/seg_{i}.m4s": 1.0 + i for i in range(60_000)}  # ~2.6 MB of JSON
    assert box.admin("/cache/fill-scores", "PUT", {"version": 1, "scores": scores}) == {"files": 60_000}
