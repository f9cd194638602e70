"""The admin port and the cache CLI against a running box."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import OCA

OBJECTS = {f"titles/3/720p/seg_{i}.m4s": bytes([i]) * (1000 + i) for i in range(10)}


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _oca(box: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, *args, "--config", box.config_path], capture_output=True, text=True, timeout=60)


def test_status_reports_version_tiers_and_traffic(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    for key in OBJECTS:
        assert box.get("/" + key)[0] == 200
    box.get("/titles/3/720p/missing.m4s")
    time.sleep(0.5)
    status = box.admin("/status")
    assert status["version"] and status["box"] == "test-box" and status["workers"] == 2
    assert status["requests"] >= 11 and status["bytes_out"] >= sum(map(len, OBJECTS.values()))
    assert 0 < status["hit_ratio"] < 1
    tiers = {t["name"]: t for t in status["tiers"]}
    # new objects land on the fastest tier (one cache across the tiers)
    assert tiers["ssd"]["objects"] == 10 and tiers["ssd"]["used"] == sum(map(len, OBJECTS.values()))
    assert tiers["ssd"]["capacity"] == 64 * 1024 * 1024 and tiers["ssd"]["state"] == "up"


def test_metrics_add_up_across_worker_processes(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    assert len(box.worker_pids()) == 2
    for _ in range(20):
        for key in OBJECTS:
            box.get("/" + key)  # new connection each time: the kernel spreads them over both workers
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = box.admin("/metrics")
        if _metric(text, "oca_requests_total", status="200", cache="hit") >= 200:
            break
        time.sleep(0.1)
    assert _metric(text, "oca_requests_total", status="200", cache="hit") == 200
    assert _metric(text, "oca_request_duration_seconds_count") == _metric(text, "oca_requests_total")
    content_bytes = _metric(text, "oca_sent_bytes_total", tier="memory") + _metric(text, "oca_sent_bytes_total",
                                                                                 tier="hdd")
    assert content_bytes == 20 * sum(map(len, OBJECTS.values()))
    assert _metric(text, "oca_tier_used_bytes") == sum(map(len, OBJECTS.values()))  # hits promote some to ssd
    for name in ("oca_promotions_total", "oca_demotions_total", "oca_tier_capacity_bytes", "oca_connections"):
        assert re.search(rf"^{name}", text, re.M), name


def test_hits_promote_an_object_to_the_faster_tier(box_factory: Any, tmp_path: Any) -> None:
    workdir = tmp_path / "box0"  # an SSD that takes returning objects only: the import lands on the HDD
    tiers = [{"name": "ssd", "path": str(workdir / "ssd"), "capacity": "64MiB", "admission": "returning"},
             {"name": "hdd", "path": str(workdir / "hdd"), "capacity": "256MiB"}]
    box = box_factory(OBJECTS, storage={"promotion": {"hits": 3, "window": "1m"}, "tiers": tiers})
    assert box.admin("/cache/objects/titles/3/720p/seg_1.m4s")["tier"] == "hdd"
    key = "titles/3/720p/seg_1.m4s"
    for _ in range(4):
        box.get("/" + key)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if box.admin("/cache/objects/" + key)["tier"] == "ssd":
            break
        time.sleep(0.1)
    assert box.admin("/cache/objects/" + key)["tier"] == "ssd"
    status, _, body = box.get("/" + key)
    assert status == 200 and body == OBJECTS[key]
    assert _metric(box.admin("/metrics"), "oca_promotions_total") >= 1


def test_cli_ls_stat_and_evict_go_through_the_running_box(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    listed = json.loads(_oca(box, "cache", "ls", "--json").stdout)["objects"]
    assert sorted(o["key"] for o in listed) == sorted(OBJECTS)
    stat = json.loads(_oca(box, "cache", "stat", "titles/3/720p/seg_2.m4s").stdout)
    assert stat["size"] == 1002 and stat["tier"] == "ssd"
    result = _oca(box, "cache", "evict", "titles/3/720p/seg_2.m4s")
    assert result.returncode == 0, result.stderr
    assert box.get("/titles/3/720p/seg_2.m4s")[0] == 404
    result = _oca(box, "cache", "evict", "--prefix", "titles/3/")
    assert "evicted 9 objects" in result.stdout
    for key in OBJECTS:
        assert box.get("/" + key)[0] == 404
    missing = _oca(box, "cache", "stat", "titles/3/720p/seg_2.m4s")
    assert missing.returncode != 0 and "not in the cache" in missing.stderr


def test_admin_requires_the_bearer_token_when_configured(box_factory: Any, tmp_path: Any) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("s3cret-token\n")
    box = box_factory(OBJECTS, admin={"token_file": str(token_file)})
    url = f"http://127.0.0.1:{box.admin_port}"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url + "/status", timeout=10)
    assert info.value.code == 401
    req = urllib.request.Request(url + "/status", headers={"Authorization": "Bearer s3cret-token"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["box"] == "test-box"
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
        assert resp.status == 200
    assert _oca(box, "cache", "ls").returncode == 0  # the CLI reads the token file from the config


@pytest.mark.parametrize("body, problem", [
    (b"not json", "not valid JSON"),
    (b'{"src": "relative/path", "key": "titles/1/a.m4s"}', "absolute path"),
    (b'{"src": "/etc/hostname", "key": "../etc/passwd"}', "not a valid content key"),
    (b'{"src": "/nonexistent/file", "key": "titles/1/a.m4s"}', "not a regular file"),
])
def test_bad_admin_requests_are_400_with_a_reason(box_factory: Any, body: bytes, problem: str) -> None:
    box = box_factory(OBJECTS)
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}/cache/import", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    assert problem in json.loads(info.value.read())["error"]


@pytest.mark.parametrize("content", [None, ""])
def test_an_unusable_admin_token_file_stops_the_box_with_one_line(tmp_path: Any, content: str | None) -> None:
    from tests.conftest import write_box_config

    token_file = tmp_path / "admin.token"
    if content is not None:
        token_file.write_text(content)
    config = write_box_config(str(tmp_path), admin={"token_file": str(token_file)})
    result = subprocess.run([OCA, "serve", "--config", config], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "admin.token_file" in lines[0] and "Traceback" not in result.stderr


def test_cache_import_into_a_running_box_goes_in_batches_and_reports_each_file(box_factory: Any,
                                                                              tmp_path: Any) -> None:
    box = box_factory(OBJECTS)
    content = tmp_path / "more"
    for i in range(300):  # more than one batch
        path = content / "titles" / "8" / f"seg_{i}.m4s"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i % 256]) * (100 + i))
    result = _oca(box, "cache", "import", "--json", str(content))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["imported"] == 300
    assert len(box.admin("/inventory?prefix=titles/8/")["objects"]) == 300
    assert box.get("/titles/8/seg_299.m4s")[2] == bytes([299 % 256]) * 399
    assert box.admin("/status")["objects"] == 310


def test_inventory_lookup_and_the_pinned_listing(box_factory: Any) -> None:
    box = box_factory(OBJECTS)
    keys = sorted(OBJECTS)
    box.admin("/cache/pin", "POST", {"key": keys[3], "pinned": True})
    found = box.admin("/inventory/lookup", "POST", {"keys": [keys[5], "titles/none/x.m4s", keys[3]]})["objects"]
    assert [(o["key"], o["size"], o["pinned"]) for o in found] == [(keys[5], len(OBJECTS[keys[5]]), False),
                                                                   (keys[3], len(OBJECTS[keys[3]]), True)]
    assert [o["key"] for o in box.admin("/inventory?prefix=titles/&pinned=1")["objects"]] == [keys[3]]
    assert box.admin("/inventory?prefix=titles/9/&pinned=1")["objects"] == []
    for body in ({"keys": "titles/3/x"}, {"keys": ["../etc/passwd"]}, {"keys": ["k"] * 4097}, {}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            box.admin("/inventory/lookup", "POST", body)
        assert refused.value.code == 400, body
    with pytest.raises(urllib.error.HTTPError) as refused:
        box.admin("/inventory?pinned=yes")
    assert refused.value.code == 400


@pytest.mark.parametrize("body, problem", [
    (b'{"items": []}', "items must be a list of 1 to"),
    (b'{"items": [{"src": "relative", "key": "titles/1/a.m4s"}]}', "absolute path"),
    (b'{"items": [{"src": "/etc/hostname", "key": "../x"}]}', "not a valid content key"),
    (b'{"items": ["titles/1/a.m4s"]}', "each item must be an object"),
])
def test_bad_import_batches_are_400_with_a_reason(box_factory: Any, body: bytes, problem: str) -> None:
    box = box_factory(OBJECTS)
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}/cache/import-batch", data=body,
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    assert problem in json.loads(info.value.read())["error"]


def test_a_missing_file_in_an_import_batch_fails_alone(box_factory: Any, tmp_path: Any) -> None:
    box = box_factory(OBJECTS)
    good = tmp_path / "good.m4s"
    good.write_bytes(b"g" * 500)
    body = {"items": [{"src": "/nonexistent/file", "key": "titles/7/a.m4s"},
                      {"src": str(good), "key": "titles/7/b.m4s"}]}
    results = box.admin("/cache/import-batch", "POST", body)["results"]
    assert results[0]["status"] == 503 and "cannot read" in results[0]["error"]
    assert results[1]["key"] == "titles/7/b.m4s" and results[1]["size"] == 500
