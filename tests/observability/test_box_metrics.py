"""A real box (master + 2 workers) on loopback: hits and misses move the byte and request counters, CMCD sent by
query and by headers becomes the player series, a prefetch job shows as fill progress."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable

import pytest

from tests.conftest import Box
from tests.observability.exposition import value
from tests.upstream.origin import Origin

STORED = "titles/9/720p/seg_0.m4s"
MISSED = "titles/9/720p/seg_1.m4s"
PREFETCHED = "titles/9/720p/seg_2.m4s"
MISSED_WITH_CMCD = "titles/9/720p/seg_3.m4s"


def metrics_when(box: Box, ready: Callable[[str], bool], timeout: float = 5.0) -> str:
    """The box's /metrics once `ready` holds (workers report every access_flush_interval)."""
    deadline = time.monotonic() + timeout
    while True:
        text: str = box.admin("/metrics")
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def query_cmcd(payload: str) -> str:
    return "CMCD=" + urllib.parse.quote(payload, safe="")


def test_hits_misses_cmcd_and_prefetch_show_in_metrics(box_factory: Callable[..., Box], origin: Origin) -> None:
    stored, missed, prefetched = os.urandom(50_000), os.urandom(70_000), os.urandom(30_000)
    origin.add(MISSED, missed)
    origin.add(PREFETCHED, prefetched)
    box = box_factory({STORED: stored}, fetch={"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}]})

    for _ in range(3):
        assert box.get("/" + STORED)[0] == 200  # plain hits: the fast path
    assert box.get("/" + MISSED)[0] == 200
    text = metrics_when(box, lambda t: value(t, "oca_requests_total", cache="hit") >= 3
                        and value(t, "oca_requests_total", cache="miss") >= 1)
    assert value(text, "oca_requests_total", status="200", cache="hit") == 3
    assert value(text, "oca_requests_total", status="200", cache="miss") == 1
    assert value(text, "oca_sent_bytes_total", cache="hit") == 3 * len(stored)
    assert value(text, "oca_sent_bytes_total", cache="miss", tier="upstream") == len(missed)
    assert value(text, "oca_player_requests_total") == 0  # no CMCD yet: no player series moved

    # a player starts a session: CMCD in the query (su: needed urgently at startup) ...
    startup = 'su,bl=0,br=3200,d=4000,ot=v,sf=h,sid="6e2fb550",v=1'
    assert box.get(f"/{STORED}?{query_cmcd(startup)}")[0] == 200
    time.sleep(0.25)
    # the master has the su request before the next one is sent, whichever worker takes which
    metrics_when(box, lambda t: value(t, "oca_player_startup_requests_total") >= 1)
    # ... then plays, in headers, after a stall (bs)
    headers = {"CMCD-Request": "bl=12000", "CMCD-Object": "br=800,d=4000,ot=v", "CMCD-Status": "bs",
               "CMCD-Session": 'sf=h,sid="6e2fb550",v=1'}
    assert box.get("/" + STORED, headers=headers)[0] == 200
    text = metrics_when(box, lambda t: value(t, "oca_player_requests_total") >= 2)
    assert value(text, "oca_player_requests_total", ot="v") == 2
    assert value(text, "oca_player_startup_requests_total", ot="v") == 1
    assert value(text, "oca_player_rebuffers_total", ot="v") == 1
    assert value(text, "oca_player_media_seconds_total", ot="v") == pytest.approx(8.0)
    assert value(text, "oca_player_buffer_length_seconds_count") == 2
    assert value(text, "oca_player_buffer_length_seconds_bucket", le="0.5") == 1
    assert value(text, "oca_player_bitrate_bytes_per_second_bucket", le="125000.0") == 1  # 1 Mbit/s
    assert value(text, "oca_player_bitrate_bytes_per_second_count") == 2
    assert value(text, "oca_player_sessions") == 1
    assert value(text, "oca_player_sessions_started_total") == 1
    assert value(text, "oca_player_startup_seconds_count") == 1
    assert 0.25 <= value(text, "oca_player_startup_seconds_sum") < 5
    assert value(text, "oca_requests_total", status="200", cache="hit") == 5  # CMCD requests are hits too

    job = box.admin("/prefetch", "POST", {"items": [{"key": PREFETCHED}]})
    assert job["items"] == 1
    text = metrics_when(box, lambda t: value(t, "oca_prefetch_jobs", state="done") >= 1)
    assert value(text, "oca_prefetch_items_total", result="stored") == 1
    assert value(text, "oca_prefetch_bytes_total", source="origin") == len(prefetched)
    assert value(text, "oca_prefetch_items_pending") == 0
    assert value(text, "oca_prefetch_jobs", state="done") == 1

    # a miss that carries CMCD counts too (the response is decided once the fill starts)
    origin.add(MISSED_WITH_CMCD, missed)
    assert box.get("/" + MISSED_WITH_CMCD, headers={"CMCD-Object": "ot=av,br=1500"})[0] == 200
    text = metrics_when(box, lambda t: value(t, "oca_player_requests_total", ot="av") >= 1)
    assert value(text, "oca_player_requests_total", ot="av") == 1
    assert value(text, "oca_sent_bytes_total", cache="miss", tier="upstream") == 2 * len(missed)
