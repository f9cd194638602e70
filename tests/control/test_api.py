"""The control plane's HTTP API in process, against fake boxes: manifests, steering, operator routes, restart."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from control.api import build_app
from control.catalog import ingest_source, title_to_json
from control.config import load_control_config
from control.plane import ControlPlane
from control.signals import PlayerSignals, SlowRule
from oca.tokens import generate_private_key, write_private_key
from tests.control.fixtures import (
    FakeBox,
    serve_fake_boxes,
    write_control_config,
    write_package,
    write_tokens,
)

DASH = "{urn:mpeg:dash:schema:mpd:2011}"
OPERATOR = {"Authorization": "Bearer operator-secret"}
BOX = {"Authorization": "Bearer box-secret"}


@dataclass
class Lab:
    plane: ControlPlane
    client: Any
    boxes: dict[str, FakeBox]
    config_path: str


@pytest.fixture
async def lab(tmp_path: Any, aiohttp_server: Any, aiohttp_client: Any) -> AsyncIterator[Lab]:
    fakes, _, entries = await serve_fake_boxes(aiohttp_server, "b1", "b2", "b3")
    write_private_key(str(tmp_path / "signing.pem"), generate_private_key("EdDSA"))
    path = write_control_config(str(tmp_path), entries, auth=write_tokens(tmp_path),
                                tokens={"signing_key_file": "signing.pem", "kid": "k1", "issuer": "lab"})
    plane = await ControlPlane.open(load_control_config(path))
    client = await aiohttp_client(build_app(plane))
    ingested = await ingest_source(write_package(str(tmp_path / "package")), "42", countries=[])
    answer = await client.post("/v1/catalog/42", json={"title": title_to_json(ingested.title), "mpd": ingested.mpd},
                               headers=OPERATOR)
    assert answer.status == 201, await answer.text()
    await plane.poller.poll_once()
    running = Lab(plane, client, fakes, path)
    try:
        yield running
    finally:
        await plane.close()
        await running.plane.close()


async def _json(response: Any, status: int = 200) -> Any:
    text = await response.text()
    assert response.status == status, text
    return json.loads(text)


def _hls_pathways(text: str) -> tuple[str, list[str], str]:
    steering = re.search(r'#EXT-X-CONTENT-STEERING:SERVER-URI="([^"]+)",PATHWAY-ID="([^"]+)"', text)
    assert steering is not None, text
    pathways = list(dict.fromkeys(re.findall(r'#EXT-X-STREAM-INF:.*PATHWAY-ID="([^"]+)"', text)))
    return steering.group(1), pathways, steering.group(2)


async def test_master_playlist_lists_boxes_then_origin_with_title_tokens(lab: Lab) -> None:
    response = await lab.client.get("/v1/play/42/master.m3u8")
    text = await response.text()
    assert response.status == 200 and response.content_type == "application/vnd.apple.mpegurl"
    assert response.headers["Cache-Control"] == "no-store"
    uri, pathways, first = _hls_pathways(text)
    assert sorted(pathways[:-1]) == ["b1", "b2", "b3"] and pathways[-1] == "origin" and first == pathways[0]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/steer/42\.[0-9a-z]+\.[0-9a-f]{16}", uri)
    box_urls = [line for line in text.splitlines() if line.startswith("http://") and "/origin/" not in line]
    token = box_urls[0].split("/t/")[1].split("/")[0]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "lab" and claims["cdniv"] == 1 and "titles/42/" in claims["cdniuc"]
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    assert all("/t/" not in line for line in text.splitlines() if "/origin/" in line)


async def test_mpd_carries_content_steering_and_one_base_url_per_pathway(lab: Lab) -> None:
    response = await lab.client.get("/v1/play/42/manifest.mpd")
    assert response.status == 200 and response.content_type == "application/dash+xml"
    root = ET.fromstring(await response.text())
    steering = root.find(f"{DASH}ContentSteering")
    assert steering is not None and "/v1/steer/42." in (steering.text or "")
    locations = [b.get("serviceLocation") or "" for b in root.findall(f"{DASH}BaseURL")]
    assert locations[-1] == "origin" and sorted(locations[:-1]) == ["b1", "b2", "b3"]
    assert (steering.get("defaultServiceLocation") or "").split() == locations


async def test_bad_titles_and_licences(lab: Lab) -> None:
    assert (await _json(await lab.client.get("/v1/play/43/master.m3u8"), 404))["error"] == "unknown title '43'"
    assert "not a title id" in (await _json(await lab.client.get("/v1/play/a.b/master.m3u8"), 400))["error"]
    assert (await lab.client.get("/v1/play/a%00b/manifest.mpd")).status == 400
    title = await lab.plane.catalog.require("42")
    await lab.plane.catalog.put(dataclasses.replace(title, countries=frozenset({"US"})),
                                await lab.plane.blocking(lab.plane.store.get_mpd, "42"))
    body = await _json(await lab.client.get("/v1/play/42/master.m3u8"), 451)
    assert "not licensed in NL" in body["error"]


async def test_steering_is_live_and_never_404_for_a_session(lab: Lab) -> None:
    uri, pathways, _ = _hls_pathways(await (await lab.client.get("/v1/play/42/master.m3u8")).text())
    path = uri.split("127.0.0.1", 1)[1].split("/", 1)[1]
    manifest = await _json(await lab.client.get(f"/{path}"))
    assert manifest["VERSION"] == 1 and manifest["TTL"] == 1 and manifest["RELOAD-URI"] == uri
    assert manifest["PATHWAY-PRIORITY"] == pathways
    for garbage in ("?_HLS_pathway=%ZZ&_HLS_throughput=fast", "?_DASH_pathway=%22%2C%2C%22&_DASH_throughput=-1",
                    "?_HLS_pathway=" + "x" * 5000, "?foo&&=&bar=%00"):
        assert (await _json(await lab.client.get(f"/{path}{garbage}")))["PATHWAY-PRIORITY"] == pathways
    lab.boxes[pathways[0]].mode = "error"
    await lab.plane.poller.poll_once()
    await lab.plane.poller.poll_once()
    assert (await _json(await lab.client.get(f"/{path}")))["PATHWAY-PRIORITY"] == pathways[1:]
    # a session of a title this replica does not know (removed, or another replica's catalogue): origin only
    assert (await _json(await lab.client.get("/v1/steer/999.1.0123456789abcdef")))["PATHWAY-PRIORITY"] == ["origin"]
    assert (await lab.client.get("/v1/steer/not-a-session")).status == 404


async def test_a_box_the_player_left_is_not_first_again_until_a_fresh_healthy_poll(lab: Lab) -> None:
    uri, pathways, first = _hls_pathways(await (await lab.client.get("/v1/play/42/master.m3u8")).text())
    path = "/v1/steer/" + uri.rsplit("/", 1)[1]
    other = pathways[1]
    left = await _json(await lab.client.get(path, params={"_HLS_pathway": f'"{other}"'}))
    assert left["PATHWAY-PRIORITY"][0] == other and left["PATHWAY-PRIORITY"].index(first) == 2
    again = await _json(await lab.client.get(path, params={"_HLS_pathway": other}))
    assert again["PATHWAY-PRIORITY"][0] == other  # no poll since: still avoided
    await lab.plane.poller.poll_once()
    back = await _json(await lab.client.get(path, params={"_HLS_pathway": other}))
    assert back["PATHWAY-PRIORITY"][0] == first
    # DASH reports: a quoted comma list of the pathways used since the last reload (ETSI TS 103 998); one
    # that holds the box we ranked first, wherever in the list, is no leaving; one without it is
    for dash_pathway in (f'"{pathways[2]},{first}"', f'"{first},{pathways[2]}"'):
        dash = await _json(await lab.client.get(path, params={"_DASH_pathway": dash_pathway}))
        assert dash["PATHWAY-PRIORITY"][0] == first, dash_pathway
    dash = await _json(await lab.client.get(path, params={"_DASH_pathway": f'"{pathways[2]}"'}))
    assert dash["PATHWAY-PRIORITY"][0] != first


async def test_operator_routes_need_the_operator_token(lab: Lab) -> None:
    for method, route in (("GET", "/v1/fleet"), ("POST", "/v1/fleet/b1/drain"), ("POST", "/v1/invalidations"),
                          ("GET", "/v1/steering/explain"), ("GET", "/v1/popularity"), ("GET", "/v1/catalog"),
                          ("POST", "/v1/catalog/42"), ("GET", "/v1/invalidations/1"), ("GET", "/v1/audit")):
        assert (await lab.client.request(method, route)).status == 401, route
        assert (await lab.client.request(method, route, headers=BOX)).status == 401, route
    assert (await lab.client.get("/v1/invalidations", headers=BOX)).status == 200
    assert (await lab.client.get("/v1/invalidations", headers={"Authorization": "Bearer nope"})).status == 401
    for scheme in ("bearer", "BEARER"):  # RFC 9110 §11.1: the auth scheme is case-insensitive
        operator = {"Authorization": f"{scheme} operator-secret"}
        assert (await lab.client.get("/v1/fleet", headers=operator)).status == 200
    assert (await lab.client.get("/healthz")).status == 200


async def test_fleet_drain_and_undrain(lab: Lab) -> None:
    fleet = await _json(await lab.client.get("/v1/fleet", headers=OPERATOR))
    assert [b["id"] for b in fleet["boxes"]] == ["b1", "b2", "b3"]
    assert all(b["healthy"] and b["version"] == "9.9" and b["tiers"][0]["state"] == "up" for b in fleet["boxes"])
    await _json(await lab.client.post("/v1/fleet/b2/drain", headers=OPERATOR))
    assert lab.boxes["b2"].draining  # told to the box as well
    _, pathways, _ = _hls_pathways(await (await lab.client.get("/v1/play/42/master.m3u8")).text())
    assert "b2" not in pathways
    fleet = await _json(await lab.client.get("/v1/fleet", headers=OPERATOR))
    assert [b["drained_by_operator"] for b in fleet["boxes"]] == [False, True, False]
    await _json(await lab.client.post("/v1/fleet/b2/undrain", headers=OPERATOR))
    await lab.plane.poller.poll_once()
    _, pathways, _ = _hls_pathways(await (await lab.client.get("/v1/play/42/master.m3u8")).text())
    assert "b2" in pathways
    assert (await lab.client.post("/v1/fleet/b9/drain", headers=OPERATOR)).status == 404


@pytest.mark.parametrize("path", ["/v1/invalidations", "/v1/catalog/42"])
async def test_deeply_nested_json_is_400_without_a_traceback(lab: Lab, path: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    for body in (b"[" * 100_000, b'{"a":' * 100_000):
        answer = await lab.client.post(path, data=body, headers=OPERATOR)
        assert "nested too deeply" in (await _json(answer, 400))["error"]
    assert not [r for r in caplog.records if r.exc_info or "Recursion" in r.getMessage()]


async def test_invalidations_push_idempotency_and_bad_input(lab: Lab) -> None:
    post: Callable[..., Awaitable[Any]] = lab.client.post
    body = {"scope": "title", "value": "42", "reason": "bad encode", "id": "ticket-1", "wait": 5}
    first = await _json(await post("/v1/invalidations", json=body, headers=OPERATOR), 201)
    assert first["created"] and first["complete"] and first["pending"] == []
    assert first["invalidation"]["seq"] == 1 and first["propagation_seconds"] < 2
    assert all(fake.received[0]["value"] == "42" for fake in lab.boxes.values())
    assert "warning" not in first  # 42 is in the catalog
    again = await _json(await post("/v1/invalidations", json=body, headers=OPERATOR), 200)
    assert not again["created"] and again["invalidation"]["seq"] == 1
    assert all(len(fake.received) == 1 for fake in lab.boxes.values())
    conflict = await _json(await post("/v1/invalidations", json={**body, "value": "43"}, headers=OPERATOR), 409)
    assert "ticket-1" in conflict["error"]
    for bad, message in (({"scope": "everything", "value": "x"}, "scope must be one of"),
                         ({"scope": "key", "value": "../etc/passwd"}, "not a valid content key"),
                         ({"scope": "title", "value": "4 2"}, "not a title id"),
                         ({"scope": "prefix", "value": ""}, "non-empty"),
                         ({"scope": "key", "value": "titles/1/a", "soft": "yes"}, "soft must be"),
                         ({"scope": "key", "value": "titles/1/a", "wait": "long"}, "wait must be")):
        assert message in (await _json(await post("/v1/invalidations", json=bad, headers=OPERATOR), 400))["error"]
    assert (await post("/v1/invalidations", data=b"{", headers=OPERATOR)).status == 400
    unknown = await _json(await post("/v1/invalidations", json={"scope": "title", "value": "99999"},
                                     headers=OPERATOR), 201)
    assert unknown["warning"] == "title '99999' is not in the catalog: the boxes may hold nothing under it"
    listed = await _json(await lab.client.get("/v1/invalidations", params={"since": "0"}, headers=BOX))
    assert listed["last_seq"] == 2 and listed["invalidations"][0]["scope"] == "title"
    for since in ("-1", "²", "9" * 5000):  # never int()'s ValueError: a 400 naming the parameter
        answer = await lab.client.get("/v1/invalidations", params={"since": since}, headers=BOX)
        assert answer.status == 400 and "since must be an integer" in (await answer.json())["error"]
    status = await _json(await lab.client.get("/v1/invalidations/1", headers=OPERATOR))
    assert all(b["applied"] for b in status["boxes"].values())
    assert (await lab.client.get("/v1/invalidations/7", headers=OPERATOR)).status == 404
    assert (await lab.client.get("/v1/invalidations/x", headers=OPERATOR)).status == 400


async def test_a_box_that_is_down_is_pending_and_gets_the_log_when_back(lab: Lab) -> None:
    lab.boxes["b3"].mode = "error"
    for _ in range(2):
        await lab.plane.poller.poll_once()
    body = {"scope": "prefix", "value": "titles/42/", "wait": 2}
    answer = await _json(await lab.client.post("/v1/invalidations", json=body, headers=OPERATOR), 201)
    assert answer["complete"] and answer["pending"] == ["b3"] and answer["pending_healthy"] == []
    assert lab.boxes["b3"].received == [] and len(lab.boxes["b1"].received) == 1
    lab.boxes["b3"].mode = "ok"
    await lab.plane.poller.poll_once()  # a good poll of a box behind the log: pushed, not yet healthy
    assert not lab.plane.health()["b3"].healthy
    for task in list(lab.plane.invalidator._pushing.values()):
        await task
    assert [e["seq"] for e in lab.boxes["b3"].received] == [1]
    await lab.plane.poller.poll_once()  # m = 2 good polls once it has caught up
    assert not lab.plane.health()["b3"].healthy
    await lab.plane.poller.poll_once()
    assert lab.plane.health()["b3"].healthy
    # every bad poll is on the record: the fleet per box, the status in all, the metrics per box
    fleet = {b["id"]: b for b in (await _json(await lab.client.get("/v1/fleet", headers=OPERATOR)))["boxes"]}
    assert (fleet["b3"]["polls"], fleet["b3"]["failed_polls"]) == (6, 3)  # 2 errors, 1 not caught up
    assert (fleet["b1"]["polls"], fleet["b1"]["failed_polls"]) == (6, 0)
    health = (await _json(await lab.client.get("/v1/status", headers=OPERATOR)))["health"]
    assert health["failed_polls"] == 3 and health["polls"] == 18
    metrics = await (await lab.client.get("/metrics", headers=OPERATOR)).text()
    failed = dict(re.findall(r'^oca_control_box_failed_polls_total\{box="(\w+)",site="\w+"\} (\S+)$', metrics, re.M))
    assert failed == {"b1": "0.0", "b2": "0.0", "b3": "3.0"}, failed


async def test_explain_popularity_catalog_and_audit(lab: Lab) -> None:
    explain = await _json(await lab.client.get("/v1/steering/explain", params={"ip": "127.0.0.9", "title": "42"},
                                               headers=OPERATOR))
    assert explain["status"] == 200 and explain["client_site"] == "lab" and explain["country"] == "NL"
    assert {c["box"] for c in explain["candidates"]} == {"b1", "b2", "b3"}
    for params, status in (({"ip": "999.1.1.1", "title": "42"}, 400), ({"ip": "127.0.0.1", "title": "43"}, 404),
                           ({"title": "42"}, 400), ({"ip": "127.0.0.1", "title": "../x"}, 400)):
        assert (await lab.client.get("/v1/steering/explain", params=params, headers=OPERATOR)).status == status
    for _ in range(3):
        await lab.client.get("/v1/play/42/master.m3u8")
    popularity = await _json(await lab.client.get("/v1/popularity", params={"site": "lab"}, headers=OPERATOR))
    assert popularity["titles"][0]["title"] == "42" and 2.9 < popularity["titles"][0]["score"] <= 3
    assert (await lab.client.get("/v1/popularity", params={"limit": "x"}, headers=OPERATOR)).status == 400
    assert (await lab.client.get("/v1/popularity", params={"site": "mars"}, headers=OPERATOR)).status == 404
    catalog = await _json(await lab.client.get("/v1/catalog", headers=OPERATOR))
    assert catalog["titles"][0]["id"] == "42" and catalog["titles"][0]["hls"] and catalog["titles"][0]["dash"]
    record = await _json(await lab.client.get("/v1/catalog/42", headers=OPERATOR))
    bad = dict(record, files=[{"path": "/etc/passwd", "size": 1, "digest": "0" * 32}])
    empty = dict(record, id="43", renditions=[], files=[], hls_master=None, dash_manifest=None)
    for body, message in (({"title": bad, "mpd": None}, "content path under titles/42/"),
                          ({"title": empty}, "is not the one in the path"),
                          ({"title": record, "mpd": None}, "mpd text is required"),
                          ({"source": "file:///etc"}, "source must be an http(s) URL"),
                          ({"title": "x"}, "title must be a JSON object")):
        answer = await _json(await lab.client.post("/v1/catalog/42", json=body, headers=OPERATOR), 400)
        assert message in answer["error"]
    audit = await _json(await lab.client.get("/v1/audit", headers=OPERATOR))
    assert audit["entries"][0]["action"] == "catalog"


async def test_restart_keeps_the_log_drains_catalog_and_popularity(lab: Lab) -> None:
    await _json(await lab.client.post("/v1/fleet/b1/drain", headers=OPERATOR))
    body = {"scope": "key", "value": "titles/42/720p/seg_00001.m4s", "id": "op-7"}
    await _json(await lab.client.post("/v1/invalidations", json=body, headers=OPERATOR), 201)
    await lab.client.get("/v1/play/42/master.m3u8")
    await lab.plane.close()
    lab.plane = await ControlPlane.open(load_control_config(lab.config_path))
    plane = lab.plane
    assert plane.poller.drained == frozenset({"b1"})
    assert plane.invalidator.last_seq == 1
    assert (await plane.invalidator.submit("key", body["value"], soft=False, reason="", operator="x",
                                           client_id="op-7"))[1] is False
    assert [t.id for t in plane.catalog.titles()] == ["42"]
    assert plane.popularity.scores(now=plane.clock(), site="lab")[0].title == "42"
    await plane.poller.poll_once()
    assert plane.health()["b1"].draining


async def test_inventory_from_the_boxes_steers_to_holders_first(lab: Lab) -> None:
    lab.boxes["b2"].titles, lab.boxes["b2"].inventory_sequence = {"42": 22}, 2
    lab.boxes["b3"].titles, lab.boxes["b3"].inventory_sequence = {"42": 5, "7": 1}, 2
    await lab.plane.poller.poll_once()
    explain = await _json(await lab.client.get("/v1/steering/explain", params={"ip": "127.0.0.1", "title": "42"},
                                               headers=OPERATOR))
    assert [p["id"] for p in explain["pathways"]] == ["b2", "b3", "b1", "origin"]
    reasons = {c["box"]: c["reason"] for c in explain["candidates"]}
    assert "live" in reasons["b2"] and "part" in reasons["b3"] and "not holding" in reasons["b1"]
    fleet = await _json(await lab.client.get("/v1/fleet", headers=OPERATOR))
    assert [b["titles"] for b in fleet["boxes"]] == [0, 1, 2]
    health = (await _json(await lab.client.get("/v1/status", headers=OPERATOR)))["health"]
    assert health["inventories_pending"] == 0 and health["unpolled_boxes"] == 0  # poll_once waited for them


async def test_client_address_from_the_load_balancer_header(lab: Lab) -> None:
    title = await lab.plane.catalog.require("42")
    await lab.plane.catalog.put(dataclasses.replace(title, countries=frozenset({"NL"})),
                                await lab.plane.blocking(lab.plane.store.get_mpd, "42"))
    spoofed = {"X-Forwarded-For": "10.1.2.3"}  # a US address, but no header is trusted yet
    assert (await lab.client.get("/v1/play/42/master.m3u8", headers=spoofed)).status == 200
    config = lab.plane.config
    lab.plane.config = dataclasses.replace(
        config, steering=dataclasses.replace(config.steering, client_ip_header="X-Forwarded-For"))
    assert (await lab.client.get("/v1/play/42/master.m3u8", headers=spoofed)).status == 451
    appended = {"X-Forwarded-For": "10.1.2.3, 127.0.0.5"}  # the balancer appended what it saw
    assert (await lab.client.get("/v1/play/42/master.m3u8", headers=appended)).status == 200


async def test_a_box_players_find_slow_is_ranked_last_for_new_sessions_only(lab: Lab) -> None:
    """Issue 18, passive signals: steering reloads carry the throughput players measured on their pathway."""
    lab.plane.signals = PlayerSignals(SlowRule(every=0.0))
    uri, pathways, slow = _hls_pathways(await (await lab.client.get("/v1/play/42/master.m3u8")).text())
    session = "/v1/steer/" + uri.rsplit("/", 1)[1]
    others = [p for p in pathways[:-1] if p != slow]
    second = (await (await lab.client.get("/v1/play/42/manifest.mpd")).text()).split("/v1/steer/", 1)[1]
    second = "/v1/steer/" + second.split("<", 1)[0].strip()
    for _ in range(SlowRule().min_reports):
        await _json(await lab.client.get(session, params={"_HLS_pathway": slow, "_HLS_throughput": "900000"}))
        # another session, a DASH one, fetching from the other boxes, sees ten times more on each
        await _json(await lab.client.get(second, params={"_DASH_pathway": '"' + ",".join(others) + '"',
                                                         "_DASH_throughput": ",".join(["9000000"] * len(others))}))
    _, fresh, _ = _hls_pathways(await (await lab.client.get("/v1/play/42/master.m3u8")).text())
    assert fresh[-2:] == [slow, "origin"], fresh  # every box still healthy: only the players' word moved it
    assert all(h.healthy for h in lab.plane.health().values())
    explain = await _json(await lab.client.get("/v1/steering/explain", params={"ip": "127.0.0.1", "title": "42"},
                                               headers=OPERATOR))
    reason = next(c["reason"] for c in explain["candidates"] if c["box"] == slow)
    assert "players report slow throughput (10% of its peers')" in reason, reason
    metrics = await (await lab.client.get("/metrics", headers=OPERATOR)).text()
    flags = dict(re.findall(r'^oca_control_box_slow\{box="(\w+)",site="\w+"\} (\S+)$', metrics, re.M))
    assert flags == {slow: "1.0", **{box: "0.0" for box in others}}, flags
    # the session already on it is not moved by it
    kept = await _json(await lab.client.get(session, params={"_HLS_pathway": slow, "_HLS_throughput": "900000"}))
    assert kept["PATHWAY-PRIORITY"][0] == slow
