"""The runner against a fake box admin API and a fake control plane: the exact exchange, the window, the
exit codes. Time is injected: no sleeping."""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Any

import pytest

from fill.runner import (
    CONTROL_UNREACHABLE,
    FAILED,
    OK,
    WINDOW_ENDED,
    BoxAdmin,
    BoxUnreachable,
    ControlUnreachable,
    Options,
    PlanRefused,
    Runner,
)
from oca.wire.control_client import ControlClient, ControlError
from oca.wire.fill import BoxPlan, FillSettings, PlannedFile, PlanReply, Source
from tests.clock import FakeClock

FILES = tuple(PlannedFile(f"titles/1/f{i}", "1", 100, f"d{i}", "hdd", False, True, ("origin",)) for i in range(3))
PLAN = BoxPlan("b1", "s", (), (), FILES, (), {"origin": Source("origin", "http://o", "origin")})


class FakeControl(ControlClient):
    def __init__(self, answer: Any = None, error: ControlError | None = None, window: str | None = None) -> None:
        super().__init__("http://control.test", "t")
        self.answer = answer if answer is not None else PlanReply(PLAN, window, 1000.0, FillSettings()).to_json()
        self.error = error

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        assert (method, path) == ("GET", "/v1/fill-plans/b1")
        if self.error is not None:
            raise self.error
        return self.answer


class FakeBox(BoxAdmin):
    """Stores a job's files after `polls_to_finish` polls; `fail` keys are failed instead."""

    def __init__(self, held: list[dict[str, Any]] | None = None, polls_to_finish: int = 2,
                 fail: tuple[str, ...] = (), old: bool = False) -> None:
        super().__init__("http://box.test", None)
        self.old = old  # a box without the fill-scores route: it answers 404 (None with missing_ok)
        self.held = {o["key"]: o for o in held or []}
        self.calls: list[tuple[str, str, Any]] = []
        self.polls_to_finish, self.fail = polls_to_finish, fail
        self.job: dict[str, Any] | None = None
        self.polls = 0
        self.loading_polls = 0  # /status answers that say the catalog is still loading

    def call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        self.calls.append((method, path, body))
        if path == "/status":
            self.loading_polls -= 1
            return {"box": "b1", "pid": 42, "loading": self.loading_polls >= 0, "objects": 5}
        if (method, path) == ("POST", "/inventory/lookup"):
            if self.old:  # a box without the route
                assert missing_ok
                return None
            return {"objects": [self.held[k] for k in body["keys"] if k in self.held]}
        if method == "GET" and path.startswith("/inventory?"):
            query = urllib.parse.parse_qs(path.split("?", 1)[1])
            pinned_only = query.get("pinned") == ["1"] and not self.old  # an old box ignores the parameter
            return {"objects": [o for o in self.held.values() if o["key"].startswith(query["prefix"][0])
                                and (o["pinned"] or not pinned_only)]}
        if path == "/cache/pin":
            self.held[body["key"]]["pinned"] = body["pinned"]
            return {}
        if (method, path) == ("PUT", "/cache/fill-scores"):
            return None if self.old else {"files": len(body["scores"])}
        if method == "POST" and path == "/prefetch":
            self.job = {"id": 7, "state": "running", "priority": body["priority"], "items": body["items"],
                        "finished": 0, "stored": 0, "present": 0, "failed": 0, "failures": {}, "bytes": 0,
                        "bytes_by_source": {}}
            return {**self.job, "items": len(body["items"])}
        if method == "GET" and path == "/prefetch/7":
            assert self.job is not None
            self.polls += 1
            if self.polls >= self.polls_to_finish and self.job["state"] == "running":
                for item in self.job["items"]:
                    if item["key"] in self.fail:
                        self.job["failures"][item["key"]] = "fail: origin answered 404"
                        continue
                    self.held[item["key"]] = {"key": item["key"], "size": item["size"], "digest": item["digest"],
                                              "pinned": item["pin"]}
                    self.job["bytes"] += item["size"]
                    self.job["bytes_by_source"]["origin"] = self.job["bytes"]
                self.job.update(state="done", finished=len(self.job["items"]),
                                stored=len(self.job["items"]) - len(self.fail), failed=len(self.fail))
            return {**self.job, "items": len(self.job["items"])}
        if method == "DELETE" and path == "/prefetch/7":
            assert self.job is not None
            self.job["state"] = "cancelled"
            return {**self.job, "items": len(self.job["items"])}
        raise AssertionError(f"unexpected {method} {path}")

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.calls if m != "GET" and p != "/inventory/lookup"]

    def reads(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.calls if m == "GET" or p == "/inventory/lookup"]


START = 1000.0  # the fake clock's time at the start of a test; second_of_day is measured from it


def runner(box: FakeBox, control: FakeControl, clock: FakeClock | None = None,
           second_of_day: float = 7200.0) -> Runner:
    clock = clock or FakeClock(START)
    return Runner("b1", box, control, clock=clock, second_of_day=lambda now: second_of_day + (now - START),
                  sleep=clock.sleep)


def test_a_fill_submits_one_job_in_plan_order_then_verifies_the_inventory() -> None:
    box = FakeBox(held=[{"key": "titles/1/f0", "size": 100, "digest": "d0", "pinned": False},
                        {"key": "titles/9/old", "size": 5, "digest": "x", "pinned": True}])
    report = runner(box, FakeControl()).run(Options(rate=1000))
    assert box.writes() == [("PUT", "/cache/fill-scores"), ("POST", "/cache/pin"), ("POST", "/cache/pin"),
                            ("POST", "/prefetch")]
    assert box.calls[[c[1] for c in box.calls].index("/cache/fill-scores")][2] == {"version": 1, "scores": {}}
    assert [c[2] for c in box.calls if c[1] == "/cache/pin"] == [{"key": "titles/9/old", "pinned": False},
                                                                  {"key": "titles/1/f0", "pinned": True}]
    job = next(c[2] for c in box.calls if c[1] == "/prefetch")
    assert [i["key"] for i in job["items"]] == ["titles/1/f1", "titles/1/f2"] and job["rate"] == 1000
    assert job["items"][0]["sources"] == [{"name": "origin", "url": "http://o", "kind": "origin"}]
    assert report.exit_code == OK and report.present_bytes == report.plan_bytes == 300
    assert report.kept_files == 1 and report.fetch_files == 2 and report.bytes_by_source == {"origin": 200}


@pytest.mark.parametrize("old", [False, True])
def test_the_box_is_asked_for_the_plans_keys_and_its_pins_not_for_everything_it_holds(old: bool) -> None:
    # the held object of another title, unpinned, is never listed: a box of 10^6 objects walked them all
    box = FakeBox(held=[{"key": "titles/1/f0", "size": 100, "digest": "d0", "pinned": False},
                        {"key": "titles/9/old", "size": 5, "digest": "x", "pinned": True},
                        {"key": "titles/8/other", "size": 5, "digest": "y", "pinned": False}], old=old)
    report = runner(box, FakeControl()).run(Options())
    assert report.exit_code == OK and report.unpinned == 1 and report.kept_files == 1
    pins = "/inventory?pinned=1&prefix=titles/"
    if old:  # no lookup route: the full listing, before and after, as before
        assert box.reads() == [("GET", "/status"), ("POST", "/inventory/lookup"), ("GET", "/inventory?prefix=titles/"),
                               ("GET", "/prefetch/7"), ("GET", "/prefetch/7"), ("POST", "/inventory/lookup"),
                               ("GET", "/inventory?prefix=titles/")]
    else:
        assert box.reads() == [("GET", "/status"), ("POST", "/inventory/lookup"), ("GET", pins),
                               ("GET", "/prefetch/7"), ("GET", "/prefetch/7"), ("POST", "/inventory/lookup"),
                               ("GET", pins)]
        assert [c[2] for c in box.calls if c[1] == "/inventory/lookup"] == [{"keys": [f.key for f in FILES]}] * 2


def test_a_box_still_loading_its_catalog_is_waited_for_then_filled() -> None:
    box = FakeBox()
    box.loading_polls = 4
    clock = FakeClock(START)
    events: list[str] = []
    run = runner(box, FakeControl(), clock)
    run.on_event = lambda event, fields: events.append(event)
    report = run.run(Options(poll_interval=0.5))
    assert report.exit_code == OK and events[:3] == ["plan", "loading", "loaded"]
    first_inventory = next(i for i, c in enumerate(box.calls) if c[1].startswith("/inventory"))
    assert [c[1] for c in box.calls[:first_inventory]] == ["/status"] * 5  # nothing asked until it was loaded
    # one that does not finish loading in time: exit 3, nothing touched
    box = FakeBox()
    box.loading_polls = 1_000_000
    with pytest.raises(BoxUnreachable, match="still loading its catalog"):
        runner(box, FakeControl(), FakeClock(START)).run(Options(load_wait=60))
    assert box.writes() == [] and BoxUnreachable.exit_code == CONTROL_UNREACHABLE


@pytest.mark.parametrize("old", [False, True])
def test_the_plans_scores_go_to_the_box_first_for_every_planned_file_held_or_not(old: bool) -> None:
    scored = BoxPlan("b1", "s", (), (), tuple(dataclasses.replace(f, score=3.0 - i) for i, f in enumerate(FILES)), (),
                     PLAN.sources)
    box = FakeBox(held=[{"key": "titles/1/f0", "size": 100, "digest": "d0", "pinned": True}], old=old)
    report = runner(box, FakeControl(PlanReply(scored, None, 1000.0, FillSettings()).to_json())).run(Options())
    assert box.writes()[0] == ("PUT", "/cache/fill-scores") and box.writes()[-1] == ("POST", "/prefetch")
    assert box.calls[[c[1] for c in box.calls].index("/cache/fill-scores")][2] == {
        "version": 1, "scores": {"titles/1/f0": 3.0, "titles/1/f1": 2.0, "titles/1/f2": 1.0}}
    # a box too old for scores (404) is filled all the same, and the report says it took none
    assert report.exit_code == OK and report.scored == (0 if old else 3)


def test_failures_are_counted_by_reason_and_exit_1() -> None:
    box = FakeBox(fail=("titles/1/f2",))
    report = runner(box, FakeControl()).run(Options())
    assert report.exit_code == FAILED and report.missing == ["titles/1/f2"]
    assert report.failures == {"origin answered N": 1}


def test_the_end_of_the_window_cancels_the_job_exit_4() -> None:
    box = FakeBox(polls_to_finish=10_000)
    clock = FakeClock(START)
    # 13:59:58 in a 02:00-14:00 window: two seconds left
    report = runner(box, FakeControl(window="02:00-14:00"), clock, second_of_day=14 * 3600 - 2).run(Options())
    assert ("DELETE", "/prefetch/7") in box.writes()
    assert report.exit_code == WINDOW_ENDED and report.job_state == "cancelled"
    assert 2.0 <= clock.now - 1000.0 <= 2.5


def test_outside_the_window_nothing_is_asked_of_the_box() -> None:
    box = FakeBox()
    report = runner(box, FakeControl(window="02:00-14:00"), second_of_day=15 * 3600).run(Options())
    assert box.writes() == [] and report.exit_code == WINDOW_ENDED and "outside" in report.message
    # --window overrides the plan's
    box = FakeBox()
    report = runner(box, FakeControl(window="02:00-14:00"), second_of_day=15 * 3600).run(Options(window="always"))
    assert report.exit_code == OK


def test_dry_run_changes_nothing() -> None:
    box = FakeBox()
    report = runner(box, FakeControl()).run(Options(dry_run=True))
    assert box.writes() == [] and report.exit_code == OK
    assert report.commands == [{"command": "fetch", "files": 3, "bytes": 300,
                                "first": ["titles/1/f0", "titles/1/f1", "titles/1/f2"]}]


@pytest.mark.parametrize(("error", "kind"), [
    (ControlError(503, "cannot reach the control plane at http://control.test: refused"), ControlUnreachable),
    (ControlError(502, "control plane answered something that is not JSON"), ControlUnreachable),
    (ControlError(404, "control plane answered 404: unknown box 'b1'"), PlanRefused),
    (ControlError(401, "control plane answered 401: missing or wrong bearer token"), PlanRefused),
])
def test_control_plane_errors_leave_the_box_untouched(error: ControlError, kind: type[Exception]) -> None:
    box = FakeBox()
    with pytest.raises(kind, match="the box was not touched"):
        runner(box, FakeControl(error=error)).run(Options())
    assert box.calls == []
    assert ControlUnreachable.exit_code == CONTROL_UNREACHABLE and PlanRefused.exit_code == 2


def test_a_junk_plan_is_the_control_planes_fault() -> None:
    box = FakeBox()
    with pytest.raises(ControlUnreachable, match="unusable plan"):
        runner(box, FakeControl(answer={"version": 1, "box": "b1"})).run(Options())
    assert box.calls == []
