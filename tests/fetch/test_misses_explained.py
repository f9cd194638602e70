"""Misses explained on a running box (issue 18): every miss classified in the access log and in
`oca_misses_total{reason}`, and `oca cache why KEY` telling an operator one key's history."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtest.boxes import OCA
from tests.conftest import Box
from tests.upstream.origin import Origin

SIZE = 400_000  # 5 fill 2 MiB of tiers: the sixth evicts the first


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        for i in range(8):
            server.add(f"titles/9/720p/seg_{i}.m4s", size=SIZE + i)
        yield server


@pytest.fixture
def box(box_factory: Callable[..., Box], origin: Origin, tmp_path: Any) -> Box:
    tiers = [{"name": "ssd", "path": str(tmp_path / "ssd"), "capacity": "1MiB"},
             {"name": "hdd", "path": str(tmp_path / "hdd"), "capacity": "1MiB"}]
    return box_factory(fetch={"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}]},
                       storage={"tiers": tiers})


def _log(box: Box, key: str, count: int = 1) -> list[dict[str, Any]]:
    """The access log's lines for `key`, once there are `count` (the workers write in batches)."""
    path = os.path.join(box.workdir, "access.log")
    deadline = time.monotonic() + 5
    while True:
        with open(path, encoding="utf-8") as fh:
            entries = [e for e in map(json.loads, fh) if e["key"] == key]
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def _held(box: Box, key: str) -> bool:
    try:
        box.admin(f"/cache/objects/{key}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc
        return False
    return True


def _until_held(box: Box, key: str) -> None:
    """A fill is installed once its tier file is written and fsynced, which may trail its client's last byte."""
    deadline = time.monotonic() + 10
    while not _held(box, key):
        assert time.monotonic() < deadline, f"{key} never installed"
        time.sleep(0.02)


def _misses(box: Box) -> dict[str, float]:
    text = box.admin("/metrics")
    return {m[0]: float(m[1]) for m in re.findall(r'^oca_misses_total\{reason="(\w+)"\} (\S+)$', text, re.M)}


def _get(box: Box, i: int) -> str:
    status, headers, _ = box.get(f"/titles/9/720p/seg_{i}.m4s")
    assert status == 200
    return headers["cache-status"]


def test_misses_are_classified_in_the_log_the_metrics_and_cache_why(box: Box, origin: Origin) -> None:
    for i in range(6):  # seg_0..2: first; the title now misses here repeatedly: seg_3.. are popular
        _get(box, i)
        _until_held(box, f"titles/9/720p/seg_{i}.m4s")  # installed in request order: eviction order is fixed
    assert [_log(box, f"titles/9/720p/seg_{i}.m4s")[0].get("miss") for i in range(4)] == \
        ["first", "first", "first", "popular"]
    box.admin("/purge", "POST", {"scope": "key", "value": "titles/9/720p/seg_5.m4s"})
    _get(box, 5)
    key0 = "titles/9/720p/seg_0.m4s"
    deadline = time.monotonic() + 20
    # filling more evicts seg_0 (read once, long ago); asked through the admin API, which reads no object:
    # a client's read of seg_0 each round would count as a hit and keep it (S3-FIFO, or LRU's recency). Each
    # fill is waited for until installed (its evictions done) before seg_0 is looked at: a round more than
    # needed, started while the last install still trailed its client, evicted seg_5 too (once, in CI)
    while _held(box, key0):
        assert time.monotonic() < deadline
        for i in (6, 7):
            _get(box, i)
            _until_held(box, f"titles/9/720p/seg_{i}.m4s")
        box.admin("/purge", "POST", {"scope": "key", "value": "titles/9/720p/seg_7.m4s"})
    assert not _get(box, 0).startswith("oca; hit")
    reasons = [e.get("miss") for e in _log(box, key0, 2)]
    assert reasons == ["first", "evicted"], reasons
    assert [e.get("miss") for e in _log(box, "titles/9/720p/seg_5.m4s", 2) if e["cache"] == "miss"] == \
        ["popular", "invalidated"]

    deadline = time.monotonic() + 5
    while (counted := _misses(box)).get("evicted", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted["first"] == 3 and counted["invalidated"] >= 1 and counted["evicted"] >= 1, counted
    assert counted["popular"] >= 3 and set(counted) >= {"revalidated", "slice", "absent", "no_source"}

    # the operator's view of one key: filled from where, evicted when and why, what a miss now would be
    result = subprocess.run([OCA, "cache", "why", "--config", box.config_path, key0], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    print(text)
    assert re.search(r"miss +first", text) and re.search(r"filled +from origin \(miss\), 400000 bytes", text), text
    assert re.search(r"evicted +capacity: tier \w+ full", text) and re.search(r"miss +evicted", text), text
    report = json.loads(subprocess.run([OCA, "cache", "why", "--config", box.config_path, "--json",
                                        "titles/9/720p/seg_5.m4s"], capture_output=True, text=True,
                                       timeout=60, check=True).stdout)
    assert report["held"] is not None
    assert [e["event"] for e in report["events"]] == ["miss", "filled", "purged", "miss", "filled"]
    assert report["events"][2]["detail"] == "purge of key titles/9/720p/seg_5.m4s"
    bad = subprocess.run([OCA, "cache", "why", "--config", box.config_path, "../etc"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "not a valid content key" in bad.stderr and "Traceback" not in bad.stderr
