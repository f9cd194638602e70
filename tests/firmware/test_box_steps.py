"""The control plane's roll-out steps on a live box: stage a bundle, activate it, revert to the previous release,
each repeatable; the current release's counters (`release_stats`) for the roll-out's health gate. Also the
staged slot's life in `Releases`, and the counters' arithmetic, without a box."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from oca import __version__
from oca.firmware.counters import ReleaseCounters
from oca.firmware.releases import Release, Releases
from oca.protocol.messages import Report
from oca.serve.stats import release_delta
from tests.conftest import Box
from tests.firmware.conftest import NEXT, SEGMENT, admin_post, firmware_box, sick_healthz
from tests.upstream.origin import closed_port


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _step(box: Box, step: str, version: str) -> tuple[int, Any]:
    return admin_post(box, f"/firmware/{step}", json.dumps({"version": version}).encode(),
                      {"Content-Type": "application/json"})


def _stage(box: Box, bundle: bytes) -> tuple[int, Any]:
    return admin_post(box, "/firmware/stage", bundle)


def _slots(box: Box) -> list[str]:
    root = os.path.join(box.workdir, "state", "releases")
    return sorted(e for e in os.listdir(root) if not e.startswith(".") and e != "state.json") \
        if os.path.isdir(root) else []


def _wait_stats(box: Box, done: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    """The box's release_stats once `done(stats)` holds (workers report every access_flush_interval)."""
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, Any] = box.admin("/status")["release_stats"]
        if done(stats):
            return stats
        assert time.monotonic() < deadline, f"release_stats never got there: {stats}"
        time.sleep(0.05)


def test_stage_activate_revert_each_step_repeatable(box_factory: Callable[..., Box], keys: dict[str, Any],
                                                    bundle_of: Callable[..., str]) -> None:
    box = firmware_box(box_factory, keys)
    status = box.admin("/firmware")
    assert (status["version"], status["previous_version"], status["staged"]) == (__version__, None, None)
    assert status["release_stats"]["version"] == __version__
    for _ in range(30):
        assert box.get(SEGMENT)[0] == 200
    before = _wait_stats(box, lambda s: s["requests"] >= 30)
    assert (before["errors"], before["restarts"]) == (0, 0)

    # a tampered bundle is refused at staging: nothing staged, nothing unpacked
    good = _read(bundle_of(NEXT))
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 1
    code, error = _stage(box, bytes(tampered))
    assert code == 400 and "tampered" in error, (code, error)
    status = box.admin("/status")
    assert (status["version"], status["staged"], status["firmware"]["state"]) == (__version__, None, "failed")
    assert _slots(box) == []
    assert _step(box, "activate", NEXT) == (409, f"release {NEXT} is not staged (staged: none)")

    # staged: unpacked, not serving
    code, staged = _stage(box, good)
    assert code == 200, staged
    assert (staged["version"], staged["staged"], staged["firmware"]) == (__version__, NEXT,
                                                                         {"state": "idle", "reason": None})
    assert _slots(box) == [NEXT]
    assert box.get(SEGMENT)[1]["server"] == f"oca/{__version__}"
    assert _step(box, "activate", "99.0") == (409, f"release 99.0 is not staged (staged: {NEXT})")
    assert admin_post(box, "/firmware/activate", b"{}")[0] == 400
    assert admin_post(box, "/firmware/revert", b"not json")[0] == 400

    # activate: the staged release serves, its counters start afresh; meanwhile every other step is busy
    switched_at = time.time()
    answers: list[tuple[int, Any]] = []
    activating = threading.Thread(target=lambda: answers.append(_step(box, "activate", NEXT)))
    activating.start()
    deadline = time.monotonic() + 10
    while box.admin("/firmware")["firmware"]["state"] != "switching":
        assert time.monotonic() < deadline and activating.is_alive(), answers
        time.sleep(0.02)
    assert _step(box, "revert", "9.9.9") == (409, "a firmware step is already under way (switching)")
    assert _stage(box, good) == (409, "a firmware step is already under way (switching)")
    activating.join(60)
    code, active = answers[0]
    assert code == 200, active
    assert (active["version"], active["previous_version"], active["staged"]) == (NEXT, __version__, None)
    stats = active["release_stats"]
    assert stats["version"] == NEXT and stats["since"] >= switched_at - 1
    assert stats["requests"] < 30 and (stats["errors"], stats["restarts"]) == (0, 0)  # the gate's probes at most
    assert box.get(SEGMENT)[1]["server"] == f"oca/{NEXT}"
    workers = set(box.worker_pids())
    code, again = _step(box, "activate", NEXT)  # repeated (the control plane restarted): nothing happens
    assert (code, again["version"], again["previous_version"]) == (200, NEXT, __version__)
    assert set(box.worker_pids()) == workers
    assert _step(box, "activate", "99.0") == (409, "release 99.0 is not staged (staged: none)")

    # revert: back to the builtin release (no slot: the installed package), the one reverted from kept
    assert _step(box, "revert", "9.9.9") == (409, f"release 9.9.9 is not the previous release "
                                                  f"(previous: {__version__})")
    code, reverted = _step(box, "revert", __version__)
    assert code == 200, reverted
    assert (reverted["version"], reverted["previous_version"], reverted["releases"]) == (
        __version__, NEXT, [__version__, NEXT])
    assert reverted["release_stats"]["version"] == __version__
    assert reverted["firmware"] == {"state": "idle", "reason": None}
    for _ in range(5):
        assert box.get(SEGMENT)[1]["server"] == f"oca/{__version__}"
    assert _slots(box) == [NEXT]
    code, again = _step(box, "revert", __version__)
    assert (code, again["version"], again["previous_version"]) == (200, __version__, NEXT)


def test_a_staged_release_that_fails_health_is_refused_and_dropped(
        box_factory: Callable[..., Box], keys: dict[str, Any], bundle_of: Callable[..., str]) -> None:
    sick = _read(bundle_of("99.1", replace={"oca/serve/handler.py": sick_healthz}))
    box = firmware_box(box_factory, keys, health_timeout="5s")
    workers = set(box.worker_pids())
    assert _stage(box, _read(bundle_of(NEXT)))[0] == 200
    code, staged = _stage(box, sick)  # a new stage replaces the earlier one, whose slot goes
    assert (code, staged["staged"]) == (200, "99.1"), staged
    assert _slots(box) == ["99.1"]
    assert _step(box, "activate", NEXT) == (409, f"release {NEXT} is not staged (staged: 99.1)")
    code, error = _step(box, "activate", "99.1")
    assert code == 422 and "release 99.1 answered GET /healthz with 503" in error, (code, error)
    status = box.admin("/status")
    assert (status["version"], status["previous_version"], status["staged"], status["workers"]) == (
        __version__, None, None, 2)
    assert status["firmware"]["state"] == "failed" and "503" in status["firmware"]["reason"]
    assert status["release_stats"]["version"] == __version__
    assert set(box.worker_pids()) == workers
    assert _slots(box) == []
    assert box.get(SEGMENT)[1]["server"] == f"oca/{__version__}"


def test_release_stats_count_answers_errors_and_restarts(box_factory: Callable[..., Box],
                                                         keys: dict[str, Any]) -> None:
    # an origin that refuses every connection: a miss is answered 502
    dead = {"name": "origin", "url": f"http://127.0.0.1:{closed_port()}", "kind": "origin"}
    box = firmware_box(box_factory, keys, fetch={"sources": [dead], "connect_timeout": "1s"})
    before = _wait_stats(box, lambda s: True)
    for i in range(3):
        assert box.get(f"/titles/missing/seg_{i}.m4s")[0] == 502
    for _ in range(5):
        assert box.get(SEGMENT)[0] == 200
    stats = _wait_stats(box, lambda s: s["requests"] >= before["requests"] + 8 and s["errors"] >= 3)
    assert (stats["version"], stats["errors"], stats["restarts"]) == (__version__, 3, 0)

    # a worker killed is restarted, and counted; so is a stuck one, which the master kills
    first, second = box.worker_pids()
    os.kill(first, signal.SIGKILL)
    assert _wait_stats(box, lambda s: s["restarts"] >= 1)["restarts"] == 1
    os.kill(second, signal.SIGSTOP)
    assert _wait_stats(box, lambda s: s["restarts"] >= 2)["restarts"] == 2
    deadline = time.monotonic() + 10
    while box.admin("/status")["workers"] != 2:
        assert time.monotonic() < deadline, "the workers were not restarted"
        time.sleep(0.05)
    assert box.get(SEGMENT)[0] == 200


def test_a_staged_slot_survives_prune_until_replaced_or_dropped(tmp_path: Any) -> None:
    def slot(version: str) -> Release:
        os.makedirs(tmp_path / version)
        return Release(version, str(tmp_path / version))

    releases = Releases(str(tmp_path), "1.0")
    staged = slot("1.1")
    releases.stage(staged)
    stray = slot("0.9")
    releases.prune()
    assert sorted(os.listdir(tmp_path)) == ["1.1"]
    assert stray.path is not None and not os.path.exists(stray.path)

    replacement = slot("1.2")
    releases.stage(replacement)  # the earlier staged slot goes
    assert (releases.staged, sorted(os.listdir(tmp_path))) == (replacement, ["1.2"])

    releases.commit(slot("1.3"))  # another release is installed: the staged one is dropped
    assert releases.staged is None
    assert sorted(os.listdir(tmp_path)) == ["1.3", "state.json"]

    releases.stage(slot("1.4"))
    releases.commit(Release("1.4", str(tmp_path / "1.4")))  # activated: current, no longer staged
    assert (releases.staged, releases.current.version, releases.previous) == (None, "1.4", Release("1.3", str(
        tmp_path / "1.3")))
    assert sorted(os.listdir(tmp_path)) == ["1.3", "1.4", "state.json"]


def test_release_counters_add_up_worker_reports() -> None:
    counters = ReleaseCounters("1.0", 1000.0)
    counters.add(*release_delta(Report(requests=[(200, "hit", 5), (206, "hit", 2), (502, "miss", 3),
                                                 (404, "miss", 1)])))
    counters.add(*release_delta(Report(requests=[(503, "none", 1)])))
    counters.add(*release_delta(Report(bytes_sent=[])))
    assert counters.to_json() == {"version": "1.0", "since": 1000.0, "requests": 12, "errors": 4, "restarts": 0}


def test_a_peer_asking_for_what_the_box_lacks_is_no_error_of_the_release() -> None:
    # a 504 answered to a peer's only-if-cached request (cache result peer-miss) is counted, not as an error
    assert release_delta(Report(requests=[(504, "peer-miss", 7), (504, "miss", 2)])) == (9, 2)


def _crash_when_told(text: str) -> str:
    """oca/serve/worker.py rewritten so a worker exits at once when OCA_TEST_CRASH is set in its environment."""
    hook = "def main(argv: list[str] | None = None) -> int:\n"
    assert text.count(hook) == 1
    return text.replace(hook, hook + '    if os.environ.get("OCA_TEST_CRASH"):\n        return 3\n')


def test_a_box_restarted_into_a_release_that_no_longer_starts_falls_back_to_the_previous_one(
        box_factory: Callable[..., Box], keys: dict[str, Any], bundle_of: Callable[..., str]) -> None:
    from tests.conftest import start_box

    box = firmware_box(box_factory, keys)
    status, answer = admin_post(box, "/firmware", _read(bundle_of(NEXT, tag="-crashy",
                                                                  replace={"oca/serve/worker.py": _crash_when_told})))
    assert status == 200 and answer["version"] == NEXT, answer
    assert box.stop() == 0
    # the same box starts again in an environment where NEXT's workers die at once (builtin ones do not care)
    again = start_box(box.config_path, box.workdir, env={"OCA_TEST_CRASH": "1"})
    try:
        deadline = time.monotonic() + 30
        while (status_now := again.admin("/status"))["version"] != __version__ and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status_now["version"] == __version__ and status_now["previous_version"] == NEXT
        assert status_now["firmware"]["state"] == "failed"
        assert f"release {NEXT} did not start" in status_now["firmware"]["reason"]
        assert f"fell back to {__version__}" in status_now["firmware"]["reason"]
        assert again.get(SEGMENT)[0] == 200
        with open(again.log_path, encoding="utf-8") as fh:
            assert f"falling back to the previous release {__version__}" in fh.read()
    finally:
        again.stop()
