"""Fleet firmware roll-outs on the real lab (issue 7, "Done when"): five boxes, a real control plane, players
counting every request they make.

- V -> V+1 over waves 1, 2, 100% one box at a time: done, every box at V+1, no failed client request.
- A release whose /healthz answers 503: the canary refuses it (its own health gate), the roll-out halts,
  no other box is touched, no failed client request.
- A release whose worker crashes after the switch: the runner's gate sees the restart and reverts the
  canary to V.
- The control plane SIGKILLed mid-roll-out and started again: the same roll-out resumes and finishes, and
  the audit log shows every step.
- Two control-plane replicas (issue 14): the leader SIGKILLed mid-wave, the other takes the roll-out lease
  within the lease time and finishes the same roll-out; each step in the audit log once, no failed request.
- A tampered bundle, or one signed by a key nobody trusts, is refused at submit: no box is touched.

Run with `pytest -s tests/rollout` to see the measured figures.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.devices.players import Tally
from loadtest.lab_load import FleetWatch, json_documents, players_for
from oca import __version__
from oca.config.units import parse_duration
from oca.firmware.keys import write_keypair
from oca.lab import Lab
from oca.lab.layout import REPLICA_LEASE
from oca.lab.procs import http_get
from tests.firmware.conftest import NEXT, doctor_wheel, sick_healthz
from tests.rollout.support import (
    box_status,
    build_bundle,
    canary_version,
    control,
    drain_audit,
    oca_cli,
    rollout_audit,
    steps_done,
    wait_audit,
    wait_rollout,
)

pytestmark = pytest.mark.slow

V = __version__
BOX_STEPS = {"drain", "upload", "upgrade", "gate", "undrain"}
MIN_REQUESTS_PER_SECOND = 2.0  # the players' floor: eight devices make about ten


def _logs(lab: Lab) -> str:
    return f" (logs: {lab.control_log_path}, {lab.paths.path('boxes')}/*/box.log)"


def _why(lab: Lab, view: dict[str, Any], since: float) -> str:
    """A roll-out that did not finish: its reason, and what the boxes answered with status >= 500 since
    `since` (the error rate a gate holds the boxes to), as the boxes' access logs tell."""
    lines = [f"{view['state']}: {view['reason']}"]
    for box in lab.boxes:
        with open(box.access_log_path, encoding="utf-8") as fh:
            errors = [e for e in map(json.loads, fh) if e["ts"] >= since and e["status"] >= 500]
        if errors:
            kinds = Counter(f"{e['status']} {e['cache'] or '-'} to {e['client']}" for e in errors)
            lines.append(f"{box.id} answered {len(errors)} with status >= 500: {dict(kinds)}, e.g. {errors[-1]}")
    return "\n".join(lines) + _logs(lab)


def _box_traffic(tally: Tally) -> int:
    return sum(n for target, n in tally.requests.items() if target != "control")


def _crash_when(trigger: str) -> Callable[[str], str]:
    """oca/serve/worker.py rewritten so that a worker exits at once with code 70 (no drain: a crash) when
    `trigger` appears, taking the file: one crash, then the worker the master starts again serves."""
    helper = (
        "\n\ndef _crash_when(path: str) -> None:\n"
        "    import threading\n"
        "    import time\n\n"
        "    def watch() -> None:\n"
        "        while True:\n"
        "            time.sleep(0.05)\n"
        "            try:\n"
        "                os.unlink(path)\n"
        "            except FileNotFoundError:\n"
        "                continue\n"
        "            os._exit(70)\n\n"
        "    threading.Thread(target=watch, daemon=True).start()\n"
    )

    def edit(text: str) -> str:
        hook, main = "    loop = new_event_loop(args.loop)\n", "\n\ndef main("
        assert text.count(hook) == 1 and text.count(main) == 1
        text = text.replace(hook, f"    _crash_when({trigger!r})\n" + hook)
        return text.replace(main, helper + main)

    return edit


def test_a_rollout_of_five_boxes_under_load_fails_no_client_request(lab: Lab, next_wheel: str,
                                                                      tmp_path: Path) -> None:
    bundle = build_bundle(lab.paths.firmware_key, next_wheel, NEXT, str(tmp_path / f"oca-{NEXT}.bundle"))
    since = time.time()
    with FleetWatch(lab) as watch, players_for(lab) as players:
        time.sleep(3)  # players under way before the first drain
        started = time.monotonic()
        result = oca_cli(lab, "firmware", "roll", bundle, "--waves", "1,2,100%", "--max-unavailable", "1",
                         "--bake", "1s", "--watch", "--json")
        took = time.monotonic() - started
        time.sleep(2)  # and a little while on the new release everywhere
    tally = players.tally
    print(f"\nroll-out V {V} -> {NEXT} of 5 boxes under load: {took:.1f}s; players: {tally.summary()}; "
          f"most boxes drained at once {watch.most_drained}, out of steering at once {watch.most_out}")
    view = json_documents(result.stdout)[-1]
    assert (view["state"], view["reason"]) == ("done", f"all boxes at {NEXT}"), _why(lab, view, since)
    assert result.returncode == 0, result.stderr
    assert [sum(len(b) for b in wave["batches"]) for wave in view["waves"]] == [1, 1, 3]
    assert all(len(batch) == 1 for wave in view["waves"] for batch in wave["batches"])
    assert {b["box"]: b["state"] for b in view["boxes"]} == {b.id: "done" for b in lab.boxes}

    for box in lab.boxes:
        status = box_status(lab, box.id)
        assert (status["version"], status["previous_version"], status["firmware"]["state"]) == (NEXT, V, "idle")
        code, metrics = http_get(lab.box(box.id).admin_url + "/metrics", lab.box_token, timeout=5)
        served = [line for line in metrics.decode().splitlines() if line.startswith("oca_build_info{")]
        assert code == 200 and served and all(f'version="{NEXT}"' in line for line in served), (box.id, served)
    fleet = oca_cli(lab, "fleet", "status", "--json")
    assert fleet.returncode == 0, fleet.stderr
    assert {b["id"]: b["version"] for b in json.loads(fleet.stdout)["boxes"]} == {b.id: NEXT for b in lab.boxes}

    done = steps_done(rollout_audit(lab, view["id"]))
    for box in lab.boxes:
        assert done.get(box.id, set()) >= BOX_STEPS, (box.id, done)
    for w, wave in enumerate(view["waves"], 1):
        for b, _ in enumerate(wave["batches"], 1):
            assert "bake" in done.get(f"wave {w} batch {b}", set()), (w, b, done)
    assert watch.drained == {b.id for b in lab.boxes} and watch.most_drained == 1, watch

    assert tally.failures == [], tally.failures[:10]
    assert {status for (target, status) in tally.statuses if target != "control"} == {200}, tally.summary()
    assert _box_traffic(tally) >= MIN_REQUESTS_PER_SECOND * took, tally.summary()
    assert tally.segments > 0 and tally.sessions >= 8


def test_a_release_that_fails_its_health_check_stops_at_the_canary(lab: Lab, next_wheel: str,
                                                                   tmp_path: Path) -> None:
    sick = canary_version(lab, NEXT)  # newer than V (the boxes accept it), its canary serves players
    wheel = doctor_wheel(next_wheel, sick, str(tmp_path), {"oca/serve/handler.py": sick_healthz})
    bundle = build_bundle(lab.paths.firmware_key, wheel, sick, str(tmp_path / f"oca-{sick}.bundle"))
    drains_before = drain_audit(lab)
    with FleetWatch(lab) as watch, players_for(lab) as players:
        time.sleep(3)
        started = time.monotonic()
        result = oca_cli(lab, "firmware", "roll", bundle, "--waves", "1,100%", "--max-unavailable", "1",
                         "--bake", "1s", "--watch", "--json")
        took = time.monotonic() - started
        time.sleep(1)
    tally = players.tally
    print(f"\nroll-out of a release with a sick /healthz: halted in {took:.1f}s; players: {tally.summary()}")
    view = json_documents(result.stdout)[-1]
    canary = view["waves"][0]["batches"][0][0]
    print(f"canary {canary}: {tally.requests[canary]} player requests")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr + _logs(lab)
    assert view["state"] == "halted", view
    assert view["reason"].startswith(f"upgrade failed on {canary} (wave 1): {canary} answered 422"), view["reason"]
    assert f"release {sick} answered GET /healthz with 503" in view["reason"], view["reason"]
    assert {b["box"]: b["state"] for b in view["boxes"]} == {
        b.id: "undrained" if b.id == canary else "pending" for b in lab.boxes}

    status = box_status(lab, canary)  # it refused the release: its own health gate kept V serving
    assert (status["version"], status["firmware"]["state"]) == (V, "failed"), status
    assert "503" in status["firmware"]["reason"]
    for box in lab.boxes:
        if box.id != canary:
            status = box_status(lab, box.id)
            assert (status["version"], status["staged"], status["firmware"]["state"]) == (V, None, "idle"), status
    entries = rollout_audit(lab, view["id"])
    assert {e["subject"] for e in entries} <= {view["id"], canary, "wave 1 batch 1"}, entries
    operator = f"rollout {view['id']}"
    assert drain_audit(lab)[len(drains_before):] == [("drain", canary, operator), ("undrain", canary, operator)]
    assert watch.drained | watch.box_draining <= {canary}, watch

    assert tally.failures == [], tally.failures[:10]
    assert tally.requests[canary] > 0, f"no player was on the canary {canary}: {tally.summary()}"
    assert _box_traffic(tally) >= MIN_REQUESTS_PER_SECOND * took, tally.summary()


def test_a_release_whose_worker_crashes_after_the_switch_is_reverted_by_the_runner(lab: Lab, next_wheel: str,
                                                                                   tmp_path: Path) -> None:
    trigger = tmp_path / "crash-now"
    crashing = canary_version(lab, NEXT)
    wheel = doctor_wheel(next_wheel, crashing, str(tmp_path), {"oca/serve/worker.py": _crash_when(str(trigger))})
    bundle = build_bundle(lab.paths.firmware_key, wheel, crashing, str(tmp_path / f"oca-{crashing}.bundle"))
    with FleetWatch(lab) as watch, players_for(lab) as players:
        time.sleep(3)
        started = time.monotonic()
        # a 3 s bake: the crash (within 0.2 s of the upgrade showing in the audit log) and the master's
        # restart of the worker both land inside it, before the gate looks
        submitted = oca_cli(lab, "firmware", "roll", bundle, "--waves", "1,100%", "--max-unavailable", "1",
                            "--bake", "3s", "--json")
        assert submitted.returncode == 0, submitted.stderr
        rollout = json.loads(submitted.stdout)
        canary = rollout["waves"][0]["batches"][0][0]

        def upgraded(entries: list[dict[str, Any]]) -> bool:
            return any(e["subject"] == canary and e["detail"].get("step") == "upgrade" for e in entries)

        switched = wait_audit(lab, rollout["id"], 60, upgraded)
        assert steps_done(switched)[canary] >= {"drain", "upload", "upgrade"}, switched
        trigger.touch()
        view = wait_rollout(lab, rollout["id"], 60)
        took = time.monotonic() - started
        time.sleep(1)
    tally = players.tally
    print(f"\nroll-out of a release whose worker crashes after the switch: rolled back in {took:.1f}s; "
          f"players: {tally.summary()}; canary {canary}: {tally.requests[canary]} player requests")
    assert not trigger.exists(), "the release's worker never crashed"
    assert view["state"] == "halted", view
    assert view["reason"] == f"gate failed on {canary} (wave 1): gate: 1 restarts above 0", view["reason"]
    assert {b["box"]: b["state"] for b in view["boxes"]} == {
        b.id: "rolled back" if b.id == canary else "pending" for b in lab.boxes}
    status = box_status(lab, canary)
    assert (status["version"], status["previous_version"], status["firmware"]["state"]) == (V, crashing, "idle")
    for box in lab.boxes:
        if box.id != canary:
            assert box_status(lab, box.id)["version"] == V
    entries = rollout_audit(lab, rollout["id"])
    assert steps_done(entries)[canary] == BOX_STEPS - {"gate"} | {"revert"}, entries
    assert [e["detail"]["result"] for e in entries if e["detail"].get("step") == "gate"] == ["failed"]
    assert watch.drained | watch.box_draining <= {canary}, watch

    assert tally.failures == [], tally.failures[:10]
    assert tally.requests[canary] > 0, f"no player was on the canary {canary}: {tally.summary()}"


def test_the_control_plane_killed_mid_rollout_resumes_it_and_finishes(lab: Lab, next_wheel: str,
                                                                     tmp_path: Path) -> None:
    bundle = build_bundle(lab.paths.firmware_key, next_wheel, NEXT, str(tmp_path / f"oca-{NEXT}.bundle"))
    since = time.time()
    with FleetWatch(lab) as watch, players_for(lab) as players:
        time.sleep(3)
        started = time.monotonic()
        submitted = oca_cli(lab, "firmware", "roll", bundle, "--waves", "1,2,100%", "--max-unavailable", "1",
                            "--bake", "1s", "--json")
        assert submitted.returncode == 0, submitted.stderr
        rollout_id = json.loads(submitted.stdout)["id"]

        def second_upgrade(entries: list[dict[str, Any]]) -> bool:
            return len({e["subject"] for e in entries if e["detail"].get("step") == "upgrade"
                        and e["detail"].get("result") == "done"}) >= 2

        before = wait_audit(lab, rollout_id, 90, second_upgrade)
        lab.stop_control("kill")
        killed = time.monotonic()
        time.sleep(1)
        lab.start_control()
        down = time.monotonic() - killed
        view = wait_rollout(lab, rollout_id, 120)
        took = time.monotonic() - started
        time.sleep(1)
    tally = players.tally
    print(f"\nroll-out with the control plane SIGKILLed after {len(before)} audit entries, down {down:.1f}s: "
          f"{view['state']} in {took:.1f}s; players: {tally.summary()}; "
          f"failed on the control plane: {len(tally.failed(targets=lambda t: t == 'control'))}")
    assert (view["id"], view["state"], view["steps_done"]) == (rollout_id, "done", view["steps_total"]), \
        _why(lab, view, since)
    with open(lab.control_log_path, encoding="utf-8") as fh:
        assert f"roll-out {rollout_id} of {NEXT} was under way: resuming" in fh.read()
    for box in lab.boxes:
        assert box_status(lab, box.id)["version"] == NEXT
    done = steps_done(rollout_audit(lab, rollout_id))
    for box in lab.boxes:
        assert done.get(box.id, set()) >= BOX_STEPS, (box.id, done)
    assert sum(1 for subject in done if subject.startswith("wave ")) == 5, done
    assert watch.most_drained <= 1, watch
    assert control(lab, "/v1/rollouts")["rollouts"][0]["id"] == rollout_id
    # the boxes served throughout; only the control plane's own answers (manifests, steering) failed
    assert tally.failed(targets=lambda t: t != "control") == [], tally.failures[:10]


def _leaders(lab: Lab) -> list[str]:
    """The running replicas that say they lead roll-outs (GET /v1/status on each, not through HAProxy)."""
    out: list[str] = []
    for replica in lab.replicas:
        if not replica.running:
            continue
        try:
            status, body = http_get(replica.url + "/v1/status", lab.operator_token, timeout=2)
        except OSError:
            continue
        if status == 200 and json.loads(body)["leader"]:
            out.append(replica.name)
    return out


def _wait_leaders(lab: Lab, timeout: float, until: Callable[[list[str]], bool]) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        leaders = _leaders(lab)
        if until(leaders):
            return leaders
        assert time.monotonic() < deadline, f"replica leaders {leaders} after {timeout}s{_logs(lab)}"
        time.sleep(0.05)


def test_the_leader_replica_killed_mid_wave_another_resumes_the_rollout_within_the_lease(
        replicated_lab: Lab, next_wheel: str, tmp_path: Path) -> None:
    lab = replicated_lab
    lease = parse_duration(REPLICA_LEASE)
    # the dead leader renewed at most a third of the lease before the kill, so its lease ends within `lease`
    # of it; the other replica tries to take it every third of the lease; plus slack for a loaded machine
    takeover_bound = lease + lease / 3 + 2.0
    bundle = build_bundle(lab.paths.firmware_key, next_wheel, NEXT, str(tmp_path / f"oca-{NEXT}.bundle"))
    since = time.time()
    first = _wait_leaders(lab, 2 * lease, lambda leaders: len(leaders) == 1)[0]
    with FleetWatch(lab) as watch, players_for(lab) as players:
        time.sleep(3)
        started = time.monotonic()
        submitted = oca_cli(lab, "firmware", "roll", bundle, "--waves", "1,2,100%", "--max-unavailable", "1",
                            "--bake", "1s", "--json")  # through HAProxy: whichever replica takes it
        assert submitted.returncode == 0, submitted.stderr
        rollout = json.loads(submitted.stdout)
        rollout_id = rollout["id"]
        second = rollout["waves"][1]["batches"][0][0]  # the one box of wave 2

        def mid_second_wave(entries: list[dict[str, Any]]) -> bool:
            # the canary wave done (its bake) and wave 2's box drained: the kill lands inside wave 2,
            # with that box out of steering and its upload or upgrade under way
            done = steps_done(entries)
            return "bake" in done.get("wave 1 batch 1", set()) and "drain" in done.get(second, set())

        before = wait_audit(lab, rollout_id, 90, mid_second_wave)
        leader = _leaders(lab)
        assert leader == [first], (leader, first)  # it led from the start: it ran the roll-out so far
        lab.stop_control("kill", replica=int(first[1:]))
        killed = time.monotonic()
        successor = _wait_leaders(lab, 30, lambda leaders: leaders != [])[0]
        takeover = time.monotonic() - killed
        view = wait_rollout(lab, rollout_id, 120)
        took = time.monotonic() - started
        time.sleep(1)
    tally = players.tally
    control_failed = tally.failed(targets=lambda t: t == "control")
    print(f"\nroll-out with leader {first} SIGKILLed after {len(before)} audit entries (mid wave 2, on "
          f"{second}): {successor} led after {takeover:.2f}s (bound {takeover_bound:.1f}s, lease {lease:.0f}s); "
          f"{view['state']} in {took:.1f}s; players: {tally.summary()}; control URL (HAProxy): "
          f"{tally.requests['control']} requests, {len(control_failed)} failed")
    assert successor != first
    assert takeover <= takeover_bound, f"{successor} took the lease {takeover:.2f}s after the kill{_logs(lab)}"
    assert (view["id"], view["state"], view["steps_done"]) == (rollout_id, "done", view["steps_total"]), \
        _why(lab, view, since)
    assert view["reason"] == f"all boxes at {NEXT}", view["reason"]
    with open(lab.replica(int(successor[1:])).log_path, encoding="utf-8") as fh:
        assert f"replica {successor} now leads roll-outs" in fh.read()
    for box in lab.boxes:
        assert box_status(lab, box.id)["version"] == NEXT, box.id
    assert control(lab, "/v1/rollouts")["rollouts"][0]["id"] == rollout_id

    entries = rollout_audit(lab, rollout_id)
    completed = Counter((e["subject"], e["detail"]["step"]) for e in entries if e["detail"].get("result") == "done")
    expected = {(box.id, step) for box in lab.boxes for step in BOX_STEPS}
    expected |= {(f"wave {w} batch {b}", "bake") for w, wave in enumerate(view["waves"], 1)
                 for b, _ in enumerate(wave["batches"], 1)}
    assert set(completed) == expected, sorted(set(completed) ^ expected)
    # the roll-out's own entries: its submit (through HAProxy, to either replica) and one end, by the successor
    assert [e["detail"].get("state") for e in entries if e["subject"] == rollout_id] == [None, "done"], entries
    # A step's outcome is audited before the progress that records it is saved (control/rollout/runner.py:
    # `_report`, then `_persist` at the next turn of `run`): a leader killed between the two leaves that step
    # undone in the store, and its successor runs it again (every step is idempotent on the box) and audits it
    # a second time. Only the step in flight at the kill can be repeated so, and only once.
    repeated = {pair: n for pair, n in completed.items() if n > 1}
    print(f"audit: {sum(completed.values())} completed steps of {len(expected)}, repeated: {repeated or 'none'}")
    assert len(repeated) <= 1 and set(repeated.values()) <= {2}, repeated
    if repeated:
        (subject, _), = repeated
        assert subject in (second, "wave 2 batch 1"), repeated
    assert watch.most_drained <= 1, watch

    # players follow steering through HAProxy: its GETs to the dead replica are retried on the other
    assert tally.failed(targets=lambda t: t != "control") == [], tally.failures[:10]
    assert control_failed == [], control_failed[:10]
    assert {status for (target, status) in tally.statuses if target != "control"} == {200}, tally.summary()
    assert tally.segments > 0


def test_a_tampered_or_unknown_key_bundle_is_refused_and_no_box_is_touched(lab: Lab, next_wheel: str,
                                                                           tmp_path: Path) -> None:
    good = build_bundle(lab.paths.firmware_key, next_wheel, NEXT, str(tmp_path / "good.bundle"))
    data = bytearray(Path(good).read_bytes())
    data[len(data) // 2] ^= 1  # inside the payload (the wheel is nearly all of the bundle)
    tampered = tmp_path / "tampered.bundle"
    tampered.write_bytes(bytes(data))
    stranger_key = str(tmp_path / "stranger.pem")
    write_keypair(stranger_key)
    stranger = build_bundle(stranger_key, next_wheel, NEXT, str(tmp_path / "stranger.bundle"))
    for bundle, why in ((tampered, "payload digest mismatch"), (stranger, "which is not a trusted key")):
        result = oca_cli(lab, "firmware", "roll", str(bundle), "--bake", "1s")
        assert result.returncode != 0, result.stdout
        assert "400: bundle refused" in result.stderr and why in result.stderr, result.stderr
    assert control(lab, "/v1/rollouts")["rollouts"] == []
    assert [e for e in control(lab, "/v1/audit?limit=10000")["entries"]
            if e["action"] in ("rollout", "drain", "undrain")] == []
    for box in lab.boxes:
        status = box_status(lab, box.id)
        assert (status["version"], status["staged"], status["firmware"]["state"]) == (V, None, "idle"), status

