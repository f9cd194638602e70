"""The control plane's /metrics in process, against fake boxes: steering decisions and sessions after real
manifest requests, steering reloads and active sessions, box health, invalidation propagation, fill plans."""

from __future__ import annotations

import dataclasses
import re

from tests.observability.conftest import BOX, OPERATOR, TTL, Lab
from tests.observability.exposition import value


async def test_metrics_need_the_operator_token(lab: Lab) -> None:
    assert (await lab.client.get("/metrics")).status == 401
    assert (await lab.client.get("/metrics", headers=BOX)).status == 401
    await lab.metrics()


async def test_sessions_decisions_reloads_and_active_sessions(lab: Lab) -> None:
    playlist = await lab.client.get("/v1/play/42/master.m3u8")
    assert playlist.status == 200
    uri = re.search(r'SERVER-URI="http://[^/]+(/v1/steer/[^"]+)"', await playlist.text())
    assert uri is not None
    assert (await lab.client.get("/v1/play/42/manifest.mpd")).status == 200
    text = await lab.metrics()
    # 127.0.0.1 is in the coverage file (127.0.0.0/8 -> NL), nearest site lab
    assert value(text, "oca_control_steering_decisions_total", matched_by="coverage", status="200") == 2
    assert value(text, "oca_control_sessions_started_total", site="lab", protocol="hls") == 1
    assert value(text, "oca_control_sessions_started_total", site="lab", protocol="dash") == 1
    assert value(text, "oca_control_active_sessions") == 2

    lab.clock.now += 1.5 * TTL
    assert (await lab.client.get(uri.group(1))).status == 200  # the HLS session reloads its steering manifest
    lab.clock.now += 1.5 * TTL  # the DASH session has not reloaded for 3 TTL: no longer active
    text = await lab.metrics()
    assert value(text, "oca_control_steering_reloads_total") == 1
    assert value(text, "oca_control_active_sessions") == 1

    title = await lab.plane.catalog.require("42")
    await lab.plane.catalog.put(dataclasses.replace(title, countries=frozenset({"US"})),
                                await lab.plane.blocking(lab.plane.store.get_mpd, "42"))
    assert (await lab.client.get("/v1/play/42/master.m3u8")).status == 451
    text = await lab.metrics()
    assert value(text, "oca_control_steering_decisions_total", status="451") == 1
    assert value(text, "oca_control_sessions_started_total") == 2  # a 451 starts no session
    assert value(text, "oca_control_http_requests_total", route="/v1/play/{title}/master.m3u8", status="451") == 1


async def test_box_health_invalidation_lag_and_fill_plan_requests(lab: Lab) -> None:
    text = await lab.metrics()
    assert value(text, "oca_control_box_up", box="b1", site="lab") == 1
    assert value(text, "oca_control_box_up", box="b2", site="lab") == 1

    lab.boxes["b2"].mode = "error"
    for _ in range(2):  # down_after: 2
        await lab.plane.poller.poll_once()
    answer = await lab.client.post("/v1/invalidations", json={"scope": "key", "value": "titles/42/a.m4s",
                                                              "wait": 5}, headers=OPERATOR)
    assert answer.status == 201 and (await answer.json())["complete"]
    text = await lab.metrics()
    assert value(text, "oca_control_box_up", box="b2") == 0
    assert value(text, "oca_control_inventory_pending") == 0  # poll_once waited for the inventories
    assert value(text, "oca_control_invalidation_last_seq") == 1
    assert value(text, "oca_control_box_invalidations_behind", box="b1") == 0
    assert value(text, "oca_control_box_invalidations_behind", box="b2") == 1
    assert value(text, "oca_control_invalidation_propagation_seconds_count") == 1  # b1 only: b2 is down

    lab.boxes["b2"].mode = "ok"
    lab.clock.now += 7.0
    lab.boxes["b2"].invalidation_seq = 1  # b2 caught up from the log while it was away: its poll says so
    await lab.plane.poller.poll_once()
    text = await lab.metrics()
    assert value(text, "oca_control_box_invalidations_behind", box="b2") == 0
    assert value(text, "oca_control_invalidation_propagation_seconds_count") == 2
    assert value(text, "oca_control_invalidation_propagation_seconds_bucket", le="5.0") == 1
    assert value(text, "oca_control_invalidation_propagation_seconds_bucket", le="10.0") == 2

    assert (await lab.client.get("/v1/fill-plans/b1", headers=BOX)).status == 200
    text = await lab.metrics()
    assert value(text, "oca_control_http_requests_total", route="/v1/fill-plans/{box}", method="GET",
                 status="200") == 1
    assert value(text, "oca_control_http_requests_total", route="/metrics", status="200") >= 1
