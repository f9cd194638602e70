"""The lab as the player tests use it: `with Lab(LabConfig(...)) as lab:` with real processes on loopback.

One lab (one synthetic title, three boxes, free ports) serves most tests of this module; a short real-ffmpeg
lab shows a segment of real video served from a box's cache.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import m3u8
import pytest

from oca.lab import Lab, LabConfig
from oca.lab.layout import HEALTH_INTERVAL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory: Any) -> Iterator[Lab]:
    config = LabConfig(workdir=str(tmp_path_factory.mktemp("lab")), titles=1, boxes=3, duration=8, synthetic=True,
                       control_port=0, box_ports=0)
    with Lab(config) as running:
        yield running


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def master(lab: Lab, site: str) -> m3u8.M3U8:
    status, _, body = get(lab.master_url(lab.titles[0]), {lab.client_header: lab.site_clients[site]})
    assert status == 200, body
    return m3u8.loads(body.decode())


def pathway_boxes(lab: Lab, playlist: m3u8.M3U8) -> list[str]:
    """Box ids of the variants' URLs, in playlist order, without repeats."""
    boxes = [lab.box_serving(p.uri) for p in playlist.playlists]
    return list(dict.fromkeys(b for b in boxes if b is not None))


def steering(lab: Lab, uri: str, site: str) -> list[str]:
    _, _, body = get(uri, {lab.client_header: lab.site_clients[site]})
    return list(json.loads(body)["PATHWAY-PRIORITY"])


def wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_every_box_is_healthy_and_the_fill_put_the_title_where_the_table_says(lab: Lab) -> None:
    assert [(b.id, b.site) for b in lab.boxes] == [("a1", "site-a"), ("a2", "site-a"), ("b1", "site-b")]
    assert all(b.running for b in lab.boxes)
    status, _, body = get(lab.control_url + "/v1/fleet", {"Authorization": f"Bearer {lab.operator_token}"})
    assert status == 200
    fleet = {b["id"]: b for b in json.loads(body)["boxes"]}
    assert all(fleet[b.id]["healthy"] for b in lab.boxes)
    title = lab.titles[0]
    placed = sorted(b for b, titles in lab.placement.items() if title in titles)
    assert len(placed) == 2 and "b1" in placed
    held = lab.holdings()
    for box in lab.boxes:
        entry = held[box.id].get(title)
        assert (entry is not None and entry.live) == (box.id in placed), (box.id, entry)
    table = lab.table().splitlines()
    row = next(line for line in table if line.startswith(title))
    assert row.count("live") == 2


def test_each_site_is_steered_to_its_own_boxes_first(lab: Lab) -> None:
    a, b = master(lab, "site-a"), master(lab, "site-b")
    a_boxes, b_boxes = pathway_boxes(lab, a), pathway_boxes(lab, b)
    holder_a = next(x for x in lab.placement if x.startswith("a") and lab.titles[0] in lab.placement[x])
    assert a_boxes[0] == holder_a and set(a_boxes) == {"a1", "a2"}
    assert b_boxes[0] == "b1" and set(b_boxes[1:]) == {"a1", "a2"}  # site A is site B's parent
    assert lab.box_serving(lab.origin_url + "/titles/x") is None


def test_a_segment_through_the_signed_box_url_is_a_cache_hit(lab: Lab) -> None:
    variant = master(lab, "site-b").playlists[0].uri
    assert lab.box_serving(variant) == "b1" and "/t/" in variant
    status, _, body = get(variant)
    assert status == 200, body
    segment = urllib.parse.urljoin(variant, m3u8.loads(body.decode()).segments[0].uri)
    status, headers, body = get(segment)
    assert status == 200 and body
    assert headers["Cache-Status"].startswith("oca; hit"), headers
    unsigned = lab.boxes[2].data_url + "/" + segment.split("/", 5)[5]
    assert get(unsigned)[0] == 403  # tokens required


def test_a_stopped_box_leaves_steering_and_returns_when_started(lab: Lab) -> None:
    uri = master(lab, "site-b").content_steering.uri
    assert steering(lab, uri, "site-b")[0] == "b1"
    lab.stop_box("b1")
    assert not lab.box("b1").running
    gone = wait_for(lambda: "b1" not in steering(lab, uri, "site-b"), 3 * HEALTH_INTERVAL + 2)
    print(f"b1 left PATHWAY-PRIORITY {gone:.2f}s after SIGKILL")
    assert steering(lab, uri, "site-b")[-1] == "origin"
    lab.start_box("b1")
    assert lab.box("b1").running
    back = wait_for(lambda: "b1" in steering(lab, uri, "site-b"), 5 * HEALTH_INTERVAL + 3)
    print(f"b1 back in PATHWAY-PRIORITY {back:.2f}s after it served again")
    assert lab.check() == []


def test_the_lab_api_and_the_page(lab: Lab) -> None:
    status, headers, body = get(lab.api_url + "/api/lab")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    described = json.loads(body)
    assert [s["client"] for s in described["sites"]] == ["127.0.1.10", "127.0.2.10"]
    assert described["titles"][0]["master"] == lab.master_url(lab.titles[0])
    assert {b["id"]: b["healthy"] for b in described["boxes"]} == {"a1": True, "a2": True, "b1": True}
    status, _, body = get(lab.api_url + "/api/boxes/a2/stop?how=term", method="POST")
    assert status == 200 and not lab.box("a2").running
    assert lab.check() == []  # stopped on purpose: not reported
    status, _, _ = get(lab.api_url + "/api/boxes/a2/start", method="POST")
    assert status == 202
    wait_for(lambda: json.loads(get(lab.api_url + "/api/lab")[2])["boxes"][1]["healthy"] is True, 10)
    assert get(lab.api_url + "/api/boxes/zz/stop", method="POST")[0] == 404
    assert get(lab.api_url + "/api/boxes/a2/stop?how=gently", method="POST")[0] == 400
    status, _, page = get(lab.page_url)
    assert status == 200 and b"lab.js" in page
    config = json.loads(get(lab.control_url + "/lab/config.json")[2])
    assert config["api_url"] == lab.api_url


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_a_real_title_plays_from_a_box_cache(tmp_path: Any) -> None:
    config = LabConfig(workdir=str(tmp_path / "lab"), titles=1, boxes=2, duration=4, control_port=0, box_ports=0)
    started = time.monotonic()
    with Lab(config) as lab:
        assert lab.content is not None and not lab.content.synthetic
        variant = master(lab, "site-a").playlists[0].uri
        status, _, body = get(variant)
        playlist = m3u8.loads(body.decode())
        init = urllib.parse.urljoin(variant, playlist.segment_map[0].uri)
        status, headers, data = get(init)
        assert status == 200 and data[4:8] == b"ftyp" and headers["Cache-Status"].startswith("oca; hit")
        status, headers, data = get(urllib.parse.urljoin(variant, playlist.segments[0].uri))
        assert status == 200 and b"moof" in data[:512] and b"mdat" in data
        assert headers["Cache-Status"].startswith("oca; hit")
    print(f"real-ffmpeg lab up, played and down in {time.monotonic() - started:.1f}s")
