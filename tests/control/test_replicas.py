"""Several control-plane replicas on one PostgreSQL state (a real server the tests start): any replica answers
anything, what one writes reaches the others within the refresh interval, invalidation numbers stay dense,
popularity is merged, and while the database is away playlists, MPDs and steering go on from memory."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from control.api import build_app
from control.catalog import ingest_source, title_to_json
from control.config import load_control_config
from control.plane import ControlPlane
from tests.control.fixtures import FakeBox, serve_fake_boxes, write_control_config, write_package, write_tokens
from tests.postgres import PostgresCluster

OPERATOR = {"Authorization": "Bearer operator-secret"}
BOX = {"Authorization": "Bearer box-secret"}


@dataclass
class Replica:
    plane: ControlPlane
    client: Any


@dataclass
class Fleet:
    replicas: list[Replica]
    boxes: dict[str, FakeBox]
    cluster: PostgresCluster


async def start_replicas(tmp_path: Any, aiohttp_client: Any, cluster: PostgresCluster, entries: list[dict[str, Any]],
                         **sections: Any) -> list[Replica]:
    """Replicas c1 and c2 on one new database of `cluster`, started, each with an API client."""
    database = cluster.create_database()
    replicas = []
    for name in ("c1", "c2"):
        workdir = tmp_path / name
        workdir.mkdir()
        path = write_control_config(str(workdir), entries, auth=write_tokens(workdir), state=cluster.url(database),
                                    state_password_file=cluster.password_file,
                                    replica={"id": name, "refresh_interval": "100ms", "lease": "1500ms"},
                                    rollout={"bundles_dir": str(workdir / "bundles"), **sections.get("rollout", {})},
                                    **{k: v for k, v in sections.items() if k != "rollout"})
        plane = await ControlPlane.open(load_control_config(path))
        await plane.poller.poll_once()
        plane.start()
        replicas.append(Replica(plane, await aiohttp_client(build_app(plane))))
    return replicas


@pytest.fixture
async def fleet(tmp_path: Any, aiohttp_server: Any, aiohttp_client: Any,
                postgres_cluster: PostgresCluster) -> AsyncIterator[Fleet]:
    fakes, _, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2")
    replicas = await start_replicas(tmp_path, aiohttp_client, postgres_cluster, entries)
    running = Fleet(replicas, fakes, postgres_cluster)
    try:
        yield running
    finally:
        for replica in replicas:
            await replica.plane.close()


async def test_every_replica_reloads_the_prefix_files_deployed_beside_its_config(
        tmp_path: Any, aiohttp_server: Any, aiohttp_client: Any, postgres_cluster: PostgresCluster) -> None:
    """Prefix data is config, not state: each replica watches its own copy, no operator call per replica."""
    _, _, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2")
    replicas = await start_replicas(tmp_path, aiohttp_client, postgres_cluster, entries,
                                    prefixes_check_interval="100ms")
    try:
        assert [len(r.plane.index.coverage) for r in replicas] == [2, 2]
        for name in ("c1", "c2"):  # the operator deploys the new file to every replica's host
            new = tmp_path / name / "coverage.csv.new"
            new.write_text("prefix,lat,lon,country\n127.0.0.0/8,52.37,4.90,NL\n10.0.0.0/8,40.71,-74.0,US\n"
                           "192.0.2.0/24,48.85,2.35,FR\n")
            os.replace(new, tmp_path / name / "coverage.csv")
        await _until(lambda: [len(r.plane.index.coverage) for r in replicas] == [3, 3])
        for replica in replicas:
            status = await (await replica.client.get("/v1/status", headers=OPERATOR)).json()
            assert status["prefixes"]["coverage"] == 3 and status["prefixes"]["reloads"] == 1
    finally:
        for replica in replicas:
            await replica.plane.close()


async def _ingest(client: Any, tmp_path: Any) -> None:
    ingested = await ingest_source(write_package(str(tmp_path / "package")), "42", countries=[])
    answer = await client.post("/v1/catalog/42", json={"title": title_to_json(ingested.title), "mpd": ingested.mpd},
                               headers=OPERATOR)
    assert answer.status == 201, await answer.text()


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.02)


async def test_what_one_replica_writes_the_other_serves_within_the_refresh(fleet: Fleet, tmp_path: Any) -> None:
    one, two = fleet.replicas
    await _ingest(one.client, tmp_path)
    await _until(lambda: [t.id for t in two.plane.catalog.titles()] == ["42"])
    for replica in (one, two):
        for path in ("/v1/play/42/master.m3u8", "/v1/play/42/manifest.mpd"):
            assert (await replica.client.get(path)).status == 200
    answer = await one.client.post("/v1/fleet/b1/drain", headers=OPERATOR)
    assert answer.status == 200, await answer.text()
    await _until(lambda: two.plane.poller.drained == frozenset({"b1"}))
    fleet_view = await (await two.client.get("/v1/fleet", headers=OPERATOR)).json()
    assert {b["id"]: b["drained_by_operator"] for b in fleet_view["boxes"]} == {"b1": True, "b2": False}
    await two.client.post("/v1/fleet/b1/undrain", headers=OPERATOR)
    await _until(lambda: one.plane.poller.drained == frozenset())


async def test_two_replicas_append_1000_invalidations_and_every_box_applies_them_in_order(fleet: Fleet) -> None:
    one, two = fleet.replicas

    async def append(replica: Replica, n: int) -> int:
        body = {"scope": "key", "value": f"titles/9/720p/seg_{n:05d}.m4s", "reason": "load", "id": f"op-{n}"}
        answer = await replica.client.post("/v1/invalidations", json=body, headers=OPERATOR)
        assert answer.status == 201, await answer.text()
        return int((await answer.json())["invalidation"]["seq"])

    seqs: list[int] = []
    for start in range(0, 1000, 50):  # 50 at a time, alternating replicas: both append concurrently
        seqs += await asyncio.gather(*(append(fleet.replicas[n % 2], n) for n in range(start, start + 50)))
    assert sorted(seqs) == list(range(1, 1001))
    await _until(lambda: all(box.invalidation_seq == 1000 for box in fleet.boxes.values()), timeout=20)
    for box in fleet.boxes.values():
        assert [entry["seq"] for entry in box.received] == list(range(1, 1001))
    await _until(lambda: one.plane.invalidator.last_seq == two.plane.invalidator.last_seq == 1000)
    again = await two.client.post("/v1/invalidations", headers=OPERATOR, json={
        "scope": "key", "value": "titles/9/720p/seg_00007.m4s", "reason": "load", "id": "op-7"})
    assert again.status == 200 and (await again.json())["invalidation"]["seq"] == seqs[7]  # idempotent anywhere


async def test_popularity_counted_on_each_replica_reaches_both(fleet: Fleet, tmp_path: Any) -> None:
    one, two = fleet.replicas
    await _ingest(one.client, tmp_path)
    await _until(lambda: [t.id for t in two.plane.catalog.titles()] == ["42"])
    for replica, starts in ((one, 3), (two, 2)):
        for _ in range(starts):
            assert (await replica.client.get("/v1/play/42/master.m3u8")).status == 200
    for replica in (one, two):
        await replica.plane.save_popularity()
    for replica in (one, two):
        await replica.plane._read_popularity()
        view = await (await replica.client.get("/v1/popularity", headers=OPERATOR)).json()
        assert view["titles"][0]["title"] == "42" and view["titles"][0]["score"] == pytest.approx(5, rel=0.01)


async def test_while_postgresql_is_away_playlists_mpds_and_steering_go_on_and_writes_are_503(
        fleet: Fleet, tmp_path: Any) -> None:
    one, two = fleet.replicas
    await _ingest(one.client, tmp_path)
    await _until(lambda: [t.id for t in two.plane.catalog.titles()] == ["42"])
    master = await two.client.get("/v1/play/42/master.m3u8")
    steering = next(line for line in (await master.text()).splitlines() if "SERVER-URI" in line)
    session = steering.split("/v1/steer/")[1].split('"')[0].split("?")[0]
    fleet.cluster.stop()
    try:
        await _until(lambda: all(r.plane.follower.error for r in fleet.replicas), timeout=20)  # a pool wait first
        for replica in (one, two):
            for path in ("/v1/play/42/master.m3u8", "/v1/play/42/manifest.mpd", f"/v1/steer/{session}"):
                answer = await replica.client.get(path)
                assert answer.status == 200, (path, answer.status, await answer.text())
            write = await replica.client.post("/v1/fleet/b2/drain", headers=OPERATOR)
            error = (await write.json())["error"]
            assert write.status == 503 and "\n" not in error, error
            status = await (await replica.client.get("/v1/status", headers=OPERATOR)).json()
            assert status["state"]["ok"] is False and "unreachable" in status["state"]["error"]
            metrics = await (await replica.client.get("/metrics", headers=OPERATOR)).text()
            assert "oca_control_state_store_up 0.0" in metrics
    finally:
        fleet.cluster.start()
    await _until(lambda: not any(r.plane.follower.error for r in fleet.replicas), timeout=15)
    answer = await two.client.post("/v1/fleet/b2/drain", headers=OPERATOR)
    assert answer.status == 200, await answer.text()
    await _until(lambda: one.plane.poller.drained == frozenset({"b2"}))


async def test_a_roll_out_whose_leader_dies_mid_wave_is_resumed_by_the_other_replica(
        tmp_path: Any, aiohttp_server: Any, aiohttp_client: Any, postgres_cluster: PostgresCluster) -> None:
    from oca.firmware.keys import public_pem
    from tests.control.test_rollout_service import KEY, V, bundle
    from tests.control.test_rollout_service import OPERATOR as ALICE

    fakes, _, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2", "b3", "b4")
    (tmp_path / "trusted.pem").write_bytes(public_pem(KEY.public_key()))
    replicas = await start_replicas(tmp_path, aiohttp_client, postgres_cluster, entries, rollout={
        "trusted_keys_file": str(tmp_path / "trusted.pem"), "request_timeout": "2s"})
    try:
        await _until(lambda: sum(r.plane.rollouts.leader for r in replicas) == 1)
        leader = next(r for r in replicas if r.plane.rollouts.leader)
        other = next(r for r in replicas if r is not leader)
        # submitted to the replica that does not lead: the leader starts it from the store
        answer = await other.client.post("/v1/rollouts", params={"waves": "1,50%,100%", "max_unavailable": "1",
                                                                  "bake": "1"}, data=bundle(), headers=ALICE)
        assert answer.status == 201, await answer.text()
        rollout_id = (await answer.json())["id"]

        async def steps() -> list[tuple[str, str]]:
            audit = await (await other.client.get("/v1/audit", params={"limit": "1000"}, headers=OPERATOR)).json()
            return [(e["subject"], e["detail"]["step"]) for e in audit["entries"]
                    if e["action"] == "rollout" and e["detail"].get("rollout") == rollout_id and "step" in e["detail"]]

        deadline = time.monotonic() + 20
        while len(await steps()) < 7:  # the canary done, the second wave under way
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        killed_at, audited_then = time.monotonic(), len(await steps())
        leader.plane.rollouts.leader = False  # a crash: the lease is not given back, it expires
        await leader.plane.close()
        await _until(lambda: other.plane.rollouts.leader, timeout=5)
        took_over = time.monotonic() - killed_at
        assert took_over <= 1.5 + 1.5 / 3 + 1.0, took_over  # the lease, one renewal period, and slack
        deadline = time.monotonic() + 30
        while True:
            view = await (await other.client.get(f"/v1/rollouts/{rollout_id}", headers=OPERATOR)).json()
            if view["state"] in ("done", "halted", "aborted"):
                break
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.05)
        assert view["state"] == "done", view
        assert all(fake.version == V for fake in fakes.values())
        done = await steps()
        assert len(done) == len(set(done)), done  # every step exactly once
        assert {box for box, step in done if step == "undrain"} == set(fakes)
        print(f"leader killed after {audited_then} steps were audited; the other replica took the lease "
              f"{took_over:.2f}s later (lease 1.5s); {len(done)} steps, each once")
    finally:
        for replica in replicas:
            await replica.plane.close()
