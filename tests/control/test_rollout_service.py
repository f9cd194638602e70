"""Roll-outs in process: the real control plane (API, store, runner) against fake boxes that keep a firmware
state and record every firmware call. The exact step sequence, failures and rollbacks, lost boxes, abort,
resume after a restart, and the API's refusals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control.api import build_app
from control.config import load_control_config
from control.plane import ControlPlane
from control.rollout.plan import order_boxes
from oca.firmware.keys import public_pem
from tests.conftest import OCA
from tests.control.fixtures import FakeBox, serve_fake_boxes, write_control_config, write_tokens
from tests.firmware.conftest import bundle_bytes

OPERATOR = {"Authorization": "Bearer operator-secret", "X-OCA-Operator": "alice@test"}
V = "10.0"
KEY = Ed25519PrivateKey.generate()


def bundle(version: str = V, key: Ed25519PrivateKey = KEY) -> bytes:
    return bundle_bytes(key, b"a wheel, as far as the control plane cares", version)


@dataclass
class Fleet:
    tmp: Any
    aiohttp_client: Any
    fakes: dict[str, FakeBox]
    servers: dict[str, Any]
    config_path: str
    plane: ControlPlane | None = None
    client: Any = None
    planes: list[ControlPlane] = field(default_factory=list)

    async def open(self) -> None:
        self.plane = await ControlPlane.open(load_control_config(self.config_path))
        self.planes.append(self.plane)
        await self.plane.poller.poll_once()
        self.plane.start()
        self.client = await self.aiohttp_client(build_app(self.plane))

    async def restart(self) -> None:
        assert self.plane is not None
        await self.plane.close()
        await self.client.close()
        await self.open()

    def order(self, version: str = V) -> list[str]:
        assert self.plane is not None
        return list(order_boxes(self.plane.config.fleet.boxes.values(), version))

    async def submit(self, body: bytes | None = None, status: int = 201, **query: str) -> dict[str, Any]:
        params = {"waves": "1,50%,100%", "max_unavailable": "1", "bake": "0", **query}
        response = await self.client.post("/v1/rollouts", params=params, data=bundle() if body is None else body,
                                          headers=OPERATOR)
        text = await response.text()
        assert response.status == status, text
        answer: dict[str, Any] = json.loads(text)
        return answer

    async def get(self, rollout_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/rollouts/{rollout_id}", headers=OPERATOR)
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer

    async def finish(self, rollout_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.get(rollout_id)
            if view["state"] in ("done", "halted", "aborted"):
                return view
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.02)

    async def audit(self, rollout_id: str) -> list[tuple[str, str, str]]:
        """(subject, step, result) of the roll-out's step entries, in order."""
        response = await self.client.get("/v1/audit", params={"limit": "1000"}, headers=OPERATOR)
        entries = (await response.json())["entries"]
        return [(e["subject"], e["detail"]["step"], e["detail"]["result"]) for e in entries
                if e["action"] == "rollout" and e["detail"].get("rollout") == rollout_id and "step" in e["detail"]]


@pytest.fixture
async def fleet(tmp_path: Any, aiohttp_server: Any, aiohttp_client: Any) -> AsyncIterator[Fleet]:
    fakes, servers, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2", "b3", "b4")
    (tmp_path / "trusted.pem").write_bytes(public_pem(KEY.public_key()))
    path = write_control_config(str(tmp_path), entries, auth=write_tokens(tmp_path),
                                rollout={"trusted_keys_file": "trusted.pem", "max_bundle_size": "1MiB",
                                         "request_timeout": "2s"})
    running = Fleet(tmp_path, aiohttp_client, fakes, servers, path)
    await running.open()
    try:
        yield running
    finally:
        for plane in running.planes:
            await plane.close()


def steps_for(box: str) -> list[tuple[str, str, str]]:
    return [(box, kind, "done") for kind in ("drain", "upload", "upgrade")]


async def test_a_roll_out_runs_the_exact_steps_wave_by_wave_and_ends_with_every_box_at_v(fleet: Fleet) -> None:
    order = fleet.order()
    view = await fleet.submit()
    assert view["version"] == V and view["state"] == "running" and view["operator"] == "alice@test"
    assert [w["batches"] for w in view["waves"]] == [[[order[0]]], [[order[1]]], [[order[2]], [order[3]]]]
    final = await fleet.finish(view["id"])
    assert final["state"] == "done", final
    assert final["steps_done"] == final["steps_total"] == 4 * 5 + 4  # 5 steps per box, a bake per batch
    assert {b["box"]: b["state"] for b in final["boxes"]} == dict.fromkeys(order, "done")
    assert {b["from_version"] for b in final["boxes"]} == {"9.9"}
    expected = []
    for wave, box in enumerate(order, 1):
        where = f"wave {min(wave, 3)} batch {1 if wave < 4 else 2}"
        expected += [*steps_for(box), (where, "bake", "done"), (box, "gate", "done"), (box, "undrain", "done")]
    assert await fleet.audit(view["id"]) == expected
    for fake in fleet.fakes.values():
        assert fake.version == V and fake.previous == "9.9"
        assert fake.firmware_calls == [f"stage {V}", f"activate {V}"]
    assert fleet.plane is not None and fleet.plane.poller.drained == frozenset()
    drains = [e for e in (await (await fleet.client.get("/v1/audit", headers=OPERATOR)).json())["entries"]
              if e["action"] in ("drain", "undrain")]
    assert [(e["action"], e["subject"]) for e in drains] == [(a, b) for b in order for a in ("drain", "undrain")]
    assert {e["operator"] for e in drains} == {f"rollout {view['id']}"}


async def test_a_canary_that_refuses_the_release_halts_the_roll_out_and_no_other_box_is_touched(
        fleet: Fleet) -> None:
    canary, *others = fleet.order()
    fleet.fakes[canary].refuse["activate"] = (422, f"release {V} failed its health gate: /healthz answered 503")
    view = await fleet.submit()
    final = await fleet.finish(view["id"])
    assert final["state"] == "halted"
    assert f"upgrade failed on {canary} (wave 1)" in final["reason"] and "/healthz answered 503" in final["reason"]
    assert fleet.fakes[canary].firmware_calls == [f"stage {V}", f"activate {V}"]
    assert fleet.fakes[canary].version == "9.9"
    assert all(fleet.fakes[b].firmware_calls == [] and fleet.fakes[b].version == "9.9" for b in others)
    assert await fleet.audit(view["id"]) == [*steps_for(canary)[:2], (canary, "upgrade", "failed"),
                                             (canary, "undrain", "done")]
    states = {b["box"]: b["state"] for b in final["boxes"]}
    assert states == {canary: "undrained", **dict.fromkeys(others, "pending")}
    assert fleet.plane is not None and fleet.plane.poller.drained == frozenset()


async def test_a_gate_that_fails_after_the_switch_reverts_the_canary_to_its_version(fleet: Fleet) -> None:
    canary, *others = fleet.order()
    fleet.fakes[canary].restarts = 2  # the new release's workers keep dying
    view = await fleet.submit()
    final = await fleet.finish(view["id"])
    assert final["state"] == "halted" and f"gate failed on {canary}" in final["reason"]
    assert "2 restarts above 0" in final["reason"]
    assert fleet.fakes[canary].firmware_calls == [f"stage {V}", f"activate {V}", "revert 9.9"]
    assert fleet.fakes[canary].version == "9.9"
    assert {b["box"]: b["state"] for b in final["boxes"]}[canary] == "rolled back"
    assert all(fleet.fakes[b].firmware_calls == [] for b in others)
    assert (await fleet.audit(view["id"]))[-3:] == [(canary, "gate", "failed"), (canary, "revert", "done"),
                                                    (canary, "undrain", "done")]


async def test_an_error_rate_over_the_threshold_fails_the_gate(fleet: Fleet) -> None:
    canary = fleet.order()[0]
    fleet.fakes[canary].errors = 5  # of 100 requests: 5% > 1%
    final = await fleet.finish((await fleet.submit())["id"])
    assert final["state"] == "halted" and "error rate 0.0500 above 0.0100" in final["reason"]


async def test_a_drained_box_s_few_requests_are_not_read_as_a_high_error_rate(fleet: Fleet) -> None:
    canary = fleet.order()[0]
    fleet.fakes[canary].requests, fleet.fakes[canary].errors = 4, 1  # 1 of 4: weighed as 1 of 100, not 25%
    assert (await fleet.finish((await fleet.submit())["id"]))["state"] == "done"
    canary = fleet.order("11.0")[0]
    fleet.fakes[canary].requests, fleet.fakes[canary].errors = 4, 2  # 2%: above 1%
    final = await fleet.finish((await fleet.submit(bundle("11.0")))["id"])
    assert final["state"] == "halted" and "error rate 0.0200 above 0.0100" in final["reason"]


async def test_a_failure_in_wave_two_rolls_back_wave_two_only(fleet: Fleet) -> None:
    canary, second, third, _ = fleet.order()
    fleet.fakes[third].restarts = 1
    final = await fleet.finish((await fleet.submit(waves="1,100%", max_unavailable="3"))["id"])
    assert final["state"] == "halted"
    assert fleet.fakes[canary].version == V and fleet.fakes[canary].firmware_calls[-1] == f"activate {V}"
    for box in (second, third):  # the whole failing batch goes back
        assert fleet.fakes[box].version == "9.9" and fleet.fakes[box].firmware_calls[-1] == "revert 9.9"


async def test_a_box_that_forgot_its_staged_release_is_sent_it_again(fleet: Fleet) -> None:
    box = fleet.order()[1]
    fleet.fakes[box].forget_staged = True
    final = await fleet.finish((await fleet.submit())["id"])
    assert final["state"] == "done"
    assert fleet.fakes[box].firmware_calls == [f"stage {V}", f"activate {V}", f"stage {V}", f"activate {V}"]


async def test_a_box_still_busy_with_an_earlier_step_is_waited_for(fleet: Fleet) -> None:
    canary = fleet.order()[0]
    fleet.fakes[canary].busy_until = time.monotonic() + 0.6  # e.g. a switch a killed control plane started
    final = await fleet.finish((await fleet.submit())["id"])
    assert final["state"] == "done" and fleet.fakes[canary].firmware_calls == [f"stage {V}", f"activate {V}"]


async def test_an_unreachable_box_is_lost_and_the_roll_out_halts_past_max_unavailable(fleet: Fleet) -> None:
    canary, second, *_ = fleet.order()
    await fleet.servers[second].close()
    final = await fleet.finish((await fleet.submit())["id"])
    assert final["state"] == "halted" and final["lost"] == [second]
    assert "1 lost box(es)" in final["reason"] and "max_unavailable 1" in final["reason"]
    states = {b["box"]: b["state"] for b in final["boxes"]}
    assert states[canary] == "done" and states[second] == "lost"
    assert fleet.plane is not None and second in fleet.plane.poller.drained  # out of service until someone looks


async def test_boxes_an_operator_drained_stay_drained(fleet: Fleet) -> None:
    box = fleet.order()[2]
    response = await fleet.client.post(f"/v1/fleet/{box}/drain", headers=OPERATOR)
    assert response.status == 200
    final = await fleet.finish((await fleet.submit())["id"])
    assert final["state"] == "done" and fleet.fakes[box].version == V
    assert fleet.plane is not None and fleet.plane.poller.drained == frozenset({box})


async def test_abort_during_a_bake_undrains_and_touches_no_further_box(fleet: Fleet) -> None:
    canary, *others = fleet.order()
    view = await fleet.submit(bake="30")
    deadline = time.monotonic() + 10
    while (await fleet.get(view["id"]))["current"]["kind"] != "bake":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert fleet.plane is not None
    await fleet.plane.poller.poll_once()  # the versions the boxes report now
    metrics = await (await fleet.client.get("/metrics", headers=OPERATOR)).text()
    rid = view["id"]
    assert f'oca_control_rollout_steps{{of="total",rollout="{rid}",version="{V}"}} 24.0' in metrics, metrics
    assert f'oca_control_rollout_steps{{of="done",rollout="{rid}",version="{V}"}} 3.0' in metrics
    assert f'oca_control_box_version{{box="{canary}",site="lab",version="{V}"}} 1.0' in metrics
    assert f'oca_control_box_version{{box="{others[0]}",site="lab",version="9.9"}} 1.0' in metrics
    response = await fleet.client.post(f"/v1/rollouts/{view['id']}/abort", headers=OPERATOR)
    assert response.status == 200, await response.text()
    final = await fleet.finish(view["id"], timeout=5)
    assert final["state"] == "aborted" and "aborted: by alice@test" in final["reason"]
    assert "oca_control_rollout_steps{" not in await (await fleet.client.get("/metrics", headers=OPERATOR)).text()
    assert fleet.fakes[canary].version == V  # an abort stops the roll-out; it does not roll back
    assert all(fleet.fakes[b].firmware_calls == [] for b in others)
    assert fleet.plane is not None and fleet.plane.poller.drained == frozenset()
    again = await fleet.client.post(f"/v1/rollouts/{view['id']}/abort", headers=OPERATOR)
    assert again.status == 409 and "already aborted" in (await again.json())["error"]


async def test_a_restarted_control_plane_resumes_the_roll_out_where_it_stopped(fleet: Fleet) -> None:
    order = fleet.order()
    view = await fleet.submit(bake="0.3")
    deadline = time.monotonic() + 10
    while not any(s == (order[1], "upgrade", "done") for s in await fleet.audit(view["id"])):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await fleet.restart()  # the runner stops mid-step (the bake); the progress is in the state database
    final = await fleet.finish(view["id"])
    assert final["state"] == "done" and final["id"] == view["id"]
    for fake in fleet.fakes.values():
        assert fake.version == V and fake.firmware_calls == [f"stage {V}", f"activate {V}"]
    steps = await fleet.audit(view["id"])
    assert [s for s in steps if s[1] != "bake"] == [s for box in order for s in
                                                    [*steps_for(box), (box, "gate", "done"), (box, "undrain", "done")]]


async def test_the_api_refuses_bad_submissions_with_the_reason(fleet: Fleet) -> None:
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({"waves": "1,50%"}, bundle(), 400, "the last wave must be 100%"),
        ({"waves": "2,1,100%"}, bundle(), 400, "counts must increase"),
        ({"max_unavailable": "0"}, bundle(), 400, "max_unavailable '0'"),
        ({"bake": "soon"}, bundle(), 400, "bake must be seconds"),
        ({"in_fill_window": "maybe"}, bundle(), 400, "in_fill_window must be 0 or 1"),
        ({}, b"", 400, "got nothing"),
        ({}, b"not a bundle at all", 400, "bundle refused"),
        ({}, bundle_bytes(KEY, b"w" * 50_000, V)[:30_000], 400, "bundle refused"),
        ({}, bundle(key=Ed25519PrivateKey.generate()), 400, "which is not a trusted key"),
        ({}, b"x" * (2 << 20), 413, "rollout.max_bundle_size"),
    ]
    for query, body, status, message in cases:
        answer = await fleet.submit(body, status=status, **query)
        assert message in answer["error"], (query, answer)
    assert all(f.firmware_calls == [] for f in fleet.fakes.values())
    listed = await (await fleet.client.get("/v1/rollouts", headers=OPERATOR)).json()
    assert listed == {"rollouts": []}
    missing = await fleet.client.get("/v1/rollouts/nope", headers=OPERATOR)
    assert missing.status == 404
    anonymous = await fleet.client.post("/v1/rollouts", data=bundle())
    assert anonymous.status == 401


async def test_preflight_skips_boxes_at_the_version_and_refuses_a_bundle_older_than_a_box(fleet: Fleet) -> None:
    assert fleet.plane is not None
    fleet.fakes["b3"].version = "11.0"
    await fleet.plane.poller.poll_once()
    refused = await fleet.submit(status=400)
    assert refused["error"].startswith(f"bundle {V} is older than the version of b3 (11.0)"), refused
    assert all(f.firmware_calls == [] for f in fleet.fakes.values())

    fleet.fakes["b3"].version = V
    fleet.fakes["b1"].version = V
    await fleet.plane.poller.poll_once()
    view = await fleet.submit()
    assert view["spec"]["skipped"] == "b1,b3"
    assert sorted(b for wave in view["waves"] for batch in wave["batches"] for b in batch) == ["b2", "b4"]
    final = await fleet.finish(view["id"])
    assert final["state"] == "done", final
    assert fleet.fakes["b1"].firmware_calls == [] and fleet.fakes["b3"].firmware_calls == []
    assert all(fleet.fakes[b].version == V for b in ("b2", "b4"))
    again = await fleet.submit(status=400)
    assert again["error"] == f"every box already runs {V}: nothing to roll out"


async def test_one_roll_out_at_a_time(fleet: Fleet) -> None:
    first = await fleet.submit(bake="30")
    second = await fleet.submit(status=409)
    assert first["id"] in second["error"] and "abort it first" in second["error"]
    await fleet.client.post(f"/v1/rollouts/{first['id']}/abort", headers=OPERATOR)
    assert (await fleet.finish(first["id"], timeout=5))["state"] == "aborted"
    listed = (await (await fleet.client.get("/v1/rollouts", headers=OPERATOR)).json())["rollouts"]
    assert [r["id"] for r in listed] == [first["id"]] and "boxes" not in listed[0]


async def oca(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    """The real CLI against this fleet's control plane."""
    import os

    assert fleet.client is not None
    env = {**os.environ, "OCA_CONTROL_URL": str(fleet.client.make_url("")).rstrip("/"),
           "OCA_CONTROL_TOKEN": "operator-secret"}
    proc = await asyncio.create_subprocess_exec(OCA, "firmware", *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_cli_rolls_watches_shows_and_aborts(fleet: Fleet) -> None:
    code, out, err = await oca(fleet, "status")
    assert (code, out.strip()) == (0, "no roll-outs yet"), err
    path = fleet.tmp / "oca.bundle"
    path.write_bytes(bundle())
    code, out, err = await oca(fleet, "roll", str(path), "--waves", "1,100%", "--max-unavailable", "2",
                               "--bake", "100ms", "--watch", "--json")
    assert code == 0, err
    final = json.loads(out[out.rindex('{\n  "id"'):])
    assert final["state"] == "done" and all(f.version == V for f in fleet.fakes.values())
    code, out, err = await oca(fleet, "status")
    assert code == 0 and f"roll-out {final['id']}: {V} DONE  (23/23 steps; by " in out, out + err
    assert f"all boxes at {V}" in out and "WAVE  BATCH  BOX  FROM  STATE" in out
    assert [line.split()[-1] for line in out.splitlines()[3:]] == ["done"] * 4, out
    code, out, err = await oca(fleet, "abort", final["id"])
    assert code == 1 and "already done" in err, err
    code, out, err = await oca(fleet, "roll", str(path), "--bake", "soon")
    assert code == 2 and "--bake" in err, err
    fleet.fakes[fleet.order()[0]].refuse["stage"] = (400, "bad signature")
    path.write_bytes(bundle("11.0"))
    code, out, err = await oca(fleet, "roll", str(path), "--bake", "0", "--watch")
    assert code == 1 and "HALTED" in out and "upload failed on" in out and "bad signature" in out, out + err


async def test_in_the_fill_window_only_a_closed_window_touches_no_box(fleet: Fleet) -> None:
    import dataclasses

    assert fleet.plane is not None
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    fleet.plane.config = dataclasses.replace(fleet.plane.config, fill=dataclasses.replace(
        fleet.plane.config.fill, window=f"{start:02d}:00-{(start + 1) % 24:02d}:00"))
    fleet.plane.rollouts.config = fleet.plane.config
    view = await fleet.submit(in_fill_window="1")
    await asyncio.sleep(0.5)
    view = await fleet.get(view["id"])
    assert view["state"] == "running" and view["steps_done"] == 0
    assert "outside the window" in view["waiting"]["why"] and 3600 <= view["waiting"]["seconds"] <= 3 * 3600
    assert all(f.firmware_calls == [] for f in fleet.fakes.values())
    assert fleet.plane.poller.drained == frozenset()
    fleet.plane.config = dataclasses.replace(fleet.plane.config, fill=dataclasses.replace(
        fleet.plane.config.fill, window="always"))
    fleet.plane.rollouts.config = fleet.plane.config
    second = await fleet.client.post(f"/v1/rollouts/{view['id']}/abort", headers=OPERATOR)
    assert second.status == 200
    assert (await fleet.finish(view["id"], timeout=5))["state"] == "aborted"
    refused = await fleet.submit(status=400, in_fill_window="1")
    assert "no fill.window" in refused["error"]


async def test_bundles_of_the_five_newest_roll_outs_are_kept(fleet: Fleet) -> None:
    import os

    from control.rollout.service import KEEP_BUNDLES

    ids = []
    for n in range(KEEP_BUNDLES + 2):
        view = await fleet.submit(bundle(f"{11 + n}.0"))
        assert (await fleet.finish(view["id"]))["state"] == "done"
        ids.append(view["id"])
    assert fleet.plane is not None
    bundles = fleet.plane.rollouts.bundles_dir
    kept = sorted(e for e in os.listdir(bundles) if e.endswith(".tar"))
    newest = [await fleet.plane.rollouts.get(i) for i in ids[-KEEP_BUNDLES:]]
    assert kept == sorted(os.path.basename(r.bundle_path) for r in newest)
