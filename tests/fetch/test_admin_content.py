"""Admin content API on a running box: prefetch, purge, per-title inventory, invalidations; bad bodies."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Box
from tests.upstream.origin import Origin

MIB = 1 << 20


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        for i in range(6):
            server.add(f"titles/9/720p/seg_{i}.m4s", size=200_000 + i)
        server.add("titles/10/720p/seg_0.m4s", size=1000)
        yield server


@pytest.fixture
def box(box_factory: Callable[..., Box], origin: Origin) -> Box:
    return box_factory(fetch={"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}]})


def admin_error(box: Box, path: str, method: str, body: bytes | None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{box.admin_port}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        try:
            return exc.code, json.loads(text)["error"]
        except ValueError:  # not the admin API's JSON error: aiohttp's own 500 page
            return exc.code, text


def wait_job(box: Box, job: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        progress: dict[str, Any] = box.admin(f"/prefetch/{job}")
        if progress["state"] == "done" or time.monotonic() > deadline:
            return progress
        time.sleep(0.05)


def test_prefetch_fills_in_the_background_with_progress_and_pins(box: Box, origin: Origin) -> None:
    items = [{"key": f"titles/9/720p/seg_{i}.m4s", "size": 200_000 + i, "pin": i == 0} for i in range(6)]
    items.append({"key": "titles/9/720p/missing.m4s"})
    job = box.admin("/prefetch", "POST", {"items": items, "priority": 5, "rate": "50MB"})
    assert job["items"] == 7
    done = wait_job(box, job["id"])
    assert done["stored"] == 6 and done["failed"] == 1
    assert done["failures"] == {"titles/9/720p/missing.m4s": "absent"}
    assert done["bytes"] == sum(200_000 + i for i in range(6))
    stored = {o["key"]: o for o in box.admin("/inventory?prefix=titles/9/")["objects"]}
    assert len(stored) == 6 and stored["titles/9/720p/seg_0.m4s"]["pinned"]
    again = wait_job(box, box.admin("/prefetch", "POST", {"items": items[:2]})["id"])
    assert again["present"] == 2
    assert origin.count("titles/9/720p/seg_1.m4s") == 1
    status, headers, _ = box.get("/titles/9/720p/seg_3.m4s")
    assert status == 200 and headers["cache-status"].startswith("oca; hit")


def test_a_wrong_size_or_digest_in_a_prefetch_stores_nothing(box: Box) -> None:
    job = box.admin("/prefetch", "POST", {"items": [
        {"key": "titles/9/720p/seg_0.m4s", "size": 5},
        {"key": "titles/9/720p/seg_1.m4s", "digest": "0" * 32}]})
    done = wait_job(box, job["id"])
    assert done["failed"] == 2
    assert "catalog says 5" in done["failures"]["titles/9/720p/seg_0.m4s"]
    assert "digest" in done["failures"]["titles/9/720p/seg_1.m4s"]
    assert box.admin("/inventory?prefix=titles/9/")["objects"] == []


def test_inventory_by_title_is_incremental(box: Box) -> None:
    first = box.admin("/inventory?by=title&since=0")
    assert first["full"] and first["titles"] == {}
    wait_job(box, box.admin("/prefetch", "POST", {"items": ["titles/9/720p/seg_0.m4s",
                                                            "titles/10/720p/seg_0.m4s"]})["id"])
    second = box.admin(f"/inventory?by=title&since={first['sequence']}")
    assert not second["full"]
    assert second["titles"] == {"9": {"objects": 1, "bytes": 200_000}, "10": {"objects": 1, "bytes": 1000}}
    box.admin("/purge", "POST", {"scope": "title", "value": "10"})
    third = box.admin(f"/inventory?by=title&since={second['sequence']}")
    assert third["titles"] == {} and third["removed"] == ["10"]
    assert box.admin("/status")["inventory_sequence"] == third["sequence"]


def test_pushed_invalidations_apply_once_in_order(box: Box, origin: Origin) -> None:
    for i in range(3):
        assert box.get(f"/titles/9/720p/seg_{i}.m4s")[0] == 200
    time.sleep(0.3)
    entry = {"seq": 1, "scope": "key", "value": "titles/9/720p/seg_0.m4s", "soft": False, "reason": "test"}
    assert box.admin("/invalidations", "POST", {"invalidations": [entry]}) == {"applied_seq": 1}
    assert box.admin("/invalidations", "POST", {"invalidations": [entry]}) == {"applied_seq": 1}
    assert box.admin("/status")["invalidation_seq"] == 1
    keys = {o["key"] for o in box.admin("/inventory?prefix=titles/9/")["objects"]}
    assert keys == {"titles/9/720p/seg_1.m4s", "titles/9/720p/seg_2.m4s"}


def test_an_invalidation_seq_past_the_window_is_refused_and_later_ones_still_apply(box: Box) -> None:
    for i in range(2):
        assert box.get(f"/titles/9/720p/seg_{i}.m4s")[0] == 200
    time.sleep(0.3)
    huge = {"seq": 10**12, "scope": "prefix", "value": "titles/8/"}
    status, message = admin_error(box, "/invalidations", "POST", json.dumps({"invalidations": [huge]}).encode())
    assert status == 400 and "too far ahead" in message
    assert box.admin("/status")["invalidation_seq"] == 0
    entry = {"seq": 1, "scope": "key", "value": "titles/9/720p/seg_0.m4s"}
    assert box.admin("/invalidations", "POST", {"invalidations": [entry]}) == {"applied_seq": 1}
    keys = {o["key"] for o in box.admin("/inventory?prefix=titles/9/")["objects"]}
    assert keys == {"titles/9/720p/seg_1.m4s"}


def test_a_push_past_a_gap_does_not_move_the_applied_seq(box: Box) -> None:
    assert box.get("/titles/9/720p/seg_0.m4s")[0] == 200
    time.sleep(0.3)
    third = {"seq": 3, "scope": "key", "value": "titles/9/720p/seg_0.m4s"}
    assert box.admin("/invalidations", "POST", {"invalidations": [third]}) == {"applied_seq": 0}
    assert [o["key"] for o in box.admin("/inventory?prefix=titles/9/")["objects"]] == ["titles/9/720p/seg_0.m4s"]
    first_two = [{"seq": s, "scope": "prefix", "value": "titles/8/"} for s in (1, 2)]
    assert box.admin("/invalidations", "POST", {"invalidations": [*first_two, third]}) == {"applied_seq": 3}
    assert box.admin("/inventory?prefix=titles/9/")["objects"] == []


@pytest.mark.parametrize("path, body, words", [
    ("/purge", b"{", "not valid JSON"),
    ("/purge", b"[]", "JSON object"),
    ("/purge", json.dumps({"scope": "everything", "value": "x"}).encode(), "scope must be one of"),
    ("/purge", json.dumps({"scope": "key", "value": "../etc/passwd"}).encode(), "not a valid content key"),
    ("/purge", json.dumps({"scope": "title", "value": "a/b"}).encode(), "not a valid title id"),
    ("/purge", json.dumps({"scope": "key", "value": "titles/1/a", "soft": "yes"}).encode(), "soft must be"),
    ("/prefetch", json.dumps({"items": []}).encode(), "non-empty list"),
    ("/prefetch", json.dumps({"items": [{"key": "/abs"}]}).encode(), "items[0].key"),
    ("/prefetch", json.dumps({"items": ["titles/1/a"], "rate": "fast"}).encode(), "rate"),
    ("/prefetch", json.dumps({"items": ["titles/1/a"], "priority": "high"}).encode(), "priority"),
    ("/prefetch", json.dumps({"items": ["titles/1/a"], "priority": 10**30}).encode(), "priority must be"),
    ("/prefetch", json.dumps({"items": ["titles/1/a"], "rate": "9" * 400 + "TB"}).encode(), "too large"),
    ("/prefetch", json.dumps({"items": ["titles/1/a"], "rate": 10**15}).encode(), "at most"),
    ("/prefetch", json.dumps({"items": [{"key": "titles/1/a", "size": 2**64}]}).encode(), "items[0].size"),
    ("/invalidations", json.dumps({"invalidations": [{"seq": 0}]}).encode(), "seq must be"),
    ("/invalidations", json.dumps({"invalidations": [{"seq": 2**63}]}).encode(), "seq must be"),
    ("/invalidations", json.dumps({"invalidations": [{"seq": "1"}]}).encode(), "seq must be"),
    ("/invalidations", json.dumps({"invalidations": [{"seq": 1.0}]}).encode(), "seq must be"),
    ("/invalidations", json.dumps({"invalidations": "all"}).encode(), "must be a list"),
])
def test_bad_admin_bodies_are_400_with_a_message(box: Box, path: str, body: bytes, words: str) -> None:
    status, message = admin_error(box, path, "POST", body)
    assert status == 400 and words in message


@pytest.mark.parametrize("path", ["/purge", "/prefetch", "/invalidations", "/cache/pin"])
def test_deeply_nested_json_is_400_without_a_traceback(box: Box, path: str) -> None:
    status, message = admin_error(box, path, "POST", b"[" * 100_000)
    assert status == 400 and "nested too deeply" in message
    status, message = admin_error(box, path, "POST", b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    assert status == 400 and "nested too deeply" in message
    assert box.admin("/status")["box"] == "test-box"
    log = box.log()
    assert "Traceback" not in log and "RecursionError" not in log


def test_unknown_prefetch_job_is_404(box: Box) -> None:
    assert admin_error(box, "/prefetch/999", "GET", None)[0] == 404
    assert admin_error(box, "/prefetch/abc", "GET", None)[0] == 400


@pytest.mark.parametrize("path", ["/prefetch/%C2%B2", "/prefetch/" + "9" * 5000,
                                  "/inventory?by=title&since=%C2%B2", "/inventory?by=title&since=" + "9" * 5000,
                                  "/inventory/titles?since=" + "9" * 5000])
def test_numbers_in_admin_paths_and_queries_are_range_checked(box: Box, path: str) -> None:
    status, message = admin_error(box, path, "GET", None)
    assert status == 400 and "must be an integer" in message


def test_admin_token_is_required_when_configured(box_factory: Callable[..., Box], tmp_path: Any) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("s3cret\n")
    secured = box_factory(admin={"token_file": str(token_file)})
    body = json.dumps({"scope": "title", "value": "9"}).encode()
    assert admin_error(secured, "/purge", "POST", body)[0] == 401
    assert admin_error(secured, "/purge", "POST", body, {"Authorization": "Bearer nope"})[0] == 401
    status, _ = admin_error(secured, "/purge", "POST", body, {"Authorization": "Bearer s3cret"})
    assert status == 200
    for scheme in ("bearer", "BEARER"):  # RFC 9110 §11.1: the auth scheme is case-insensitive
        assert admin_error(secured, "/purge", "POST", body, {"Authorization": f"{scheme} s3cret"})[0] == 200
    assert admin_error(secured, "/purge", "POST", body, {"Authorization": "bearer nope"})[0] == 401


def test_a_prefetch_follows_its_own_source_order_and_retries_a_bad_digest_once(box: Box, origin: Origin) -> None:
    import xxhash

    key = "titles/9/720p/seg_0.m4s"
    good = origin.expected(key)
    with Origin() as liar:
        liar.add(key, b"x" * len(good))  # same size, wrong bytes
        sources = [{"name": "liar", "url": liar.url, "kind": "parent"},
                   {"name": "origin", "url": origin.url, "kind": "origin"}]
        item = {"key": key, "size": len(good), "digest": xxhash.xxh3_128(good).hexdigest(), "sources": sources}
        done = wait_job(box, box.admin("/prefetch", "POST", {"items": [item]})["id"])
        assert done["stored"] == 1, done
        assert liar.count(key) == 1 and origin.count(key) == 1
        assert done["bytes_by_source"] == {"liar": len(good), "origin": len(good)}
    stored = box.admin(f"/cache/objects/{key}")
    assert stored["digest"] == xxhash.xxh3_128(good).hexdigest()


def test_a_nightly_fills_prefetch_job_past_one_mib_is_taken_whole(box: Box, origin: Origin) -> None:
    # `oca fill run` sends every missing file of a plan in one POST /prefetch; at ~300 bytes per item (key,
    # size, digest, the plan's source order) the admin API's 1 MiB body limit refused any plan past ~3,500
    # files with a 413, so a real night's fill failed whole
    sources = [{"name": "origin", "url": origin.url, "kind": "origin"}]
    items = [{"key": f"titles/{i // 1000 + 100}/1080p/segment_{i:06d}.m4s", "size": 2_000_000,
              "digest": f"{i:032x}", "sources": sources} for i in range(6_000)]
    body = json.dumps({"items": items, "priority": -10}).encode()
    assert len(body) > 1 * MIB
    status, answer = admin_error(box, "/prefetch", "POST", body, {"Content-Type": "application/json"})
    assert status == 202, answer
    job = json.loads(answer)
    assert job["items"] == 6_000
    assert box.admin(f"/prefetch/{job['id']}", "DELETE")["state"] == "cancelled"


def test_prefetch_sources_are_checked(box: Box) -> None:
    body = json.dumps({"items": [{"key": "titles/1/a", "sources": [{"name": "x", "url": "ftp://x"}]}]}).encode()
    status, message = admin_error(box, "/prefetch", "POST", body)
    assert status == 400 and "items[0].sources[0].url" in message


def test_the_inventory_sequence_moves_by_itself_when_a_fill_lands(box: Box) -> None:
    before = box.admin("/status")["inventory_sequence"]
    assert box.get("/titles/9/720p/seg_2.m4s")[0] == 200  # a pull-through fill, not a prefetch
    deadline = time.monotonic() + 5
    while box.admin("/status")["inventory_sequence"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box.admin("/status")["inventory_sequence"] > before
