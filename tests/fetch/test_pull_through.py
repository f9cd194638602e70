"""Pull-through against a real box (master + 2 workers) and a misbehaving origin on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from oca.tokens import generate_private_key, public_jwk
from tests.conftest import Box
from tests.upstream.origin import Fault, Origin, closed_port

KEY = "titles/7/720p/seg_00001.m4s"
MIB = 1 << 20


def fetching_box(box_factory: Callable[..., Box], sources: list[dict[str, str]], **fetch: Any) -> Box:
    return box_factory(fetch={"sources": sources, "connect_timeout": "1s", "first_byte_timeout": "1s",
                              "between_bytes_timeout": "1s", **fetch})


def origin_source(origin: Origin) -> dict[str, str]:
    return {"name": "origin", "url": origin.url, "kind": "origin"}


def raw_get(port: int, path: str, headers: str = "", timeout: float = 20) -> tuple[bytes, bytes, bool]:
    """(head, body, closed_early): read until Content-Length or the connection closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data, b"", True
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length:"))
        while len(body) < length:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                return head, body, True
            if not chunk:
                return head, body, True
            body += chunk
        return head, body, False


def wait_for_objects(box: Box, prefix: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        objects: list[dict[str, Any]] = box.admin(f"/inventory?prefix={prefix}")["objects"]
        if len(objects) == count or time.monotonic() > deadline:
            return objects
        time.sleep(0.02)


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode()
    return None


def test_a_miss_is_filled_once_then_served_from_storage(box_factory: Callable[..., Box], origin: Origin) -> None:
    data = os.urandom(300_000)
    origin.add(KEY, data)
    box = fetching_box(box_factory, [origin_source(origin)])
    status, headers, body = box.get(f"/{KEY}")
    assert (status, body) == (200, data)
    assert headers["x-oca-source"] == "origin"
    assert "fwd=uri-miss" in headers["cache-status"]
    deadline = time.monotonic() + 5
    while box.admin("/status")["fetch"]["fills"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    for _ in range(5):
        status, headers, body = box.get(f"/{KEY}")
        assert (status, body) == (200, data)
        assert headers["cache-status"].startswith("oca; hit")
    assert origin.count(KEY) == 1
    stored = box.admin(f"/cache/objects/{KEY}")
    assert stored["size"] == len(data)


def test_100_clients_one_origin_request_first_bytes_before_the_origin_finished(
        box_factory: Callable[..., Box], origin: Origin) -> None:
    size = 8 * MIB
    origin.add(KEY, size=size, fault=Fault(dribble=(256 * 1024, 0.1)))  # ~3.2 s for the whole object
    box = fetching_box(box_factory, [origin_source(origin)], slice_size="16MiB", between_bytes_timeout="5s")
    origin.pause(KEY)

    async def client() -> tuple[float, bytes, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", box.port)
        writer.write(f"GET /{KEY} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(header(head, "content-length") or 0)
        first = await reader.read(1)
        first_at = time.monotonic()
        rest = await reader.readexactly(length - 1)
        writer.close()
        return first_at, first + rest, head.startswith(b"HTTP/1.1 200")

    async def run() -> list[tuple[float, bytes, bool]]:
        tasks = [asyncio.ensure_future(client()) for _ in range(100)]
        await asyncio.sleep(1.0)  # every client has asked; the origin holds the one request it got
        origin.resume(KEY)
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    results = asyncio.run(run())
    assert origin.count(KEY) == 1
    assert origin.wait_until(lambda o: o.in_flight() == 0)
    finished = origin.records(KEY)[0].finished
    assert finished is not None
    expected = origin.expected(KEY)
    assert all(ok and body == expected for _, body, ok in results)
    assert max(first_at for first_at, _, _ in results) < finished


def test_a_range_in_a_4gib_object_fetches_only_its_slices(box_factory: Callable[..., Box], origin: Origin) -> None:
    size = 4 << 30
    big = "titles/7/1080p/movie.mp4"
    origin.add(big, size=size)
    box = fetching_box(box_factory, [origin_source(origin)], slice_size="4MiB")
    first, last = 3_000_000_000, 3_000_999_999
    status, headers, body = box.get(f"/{big}", {"Range": f"bytes={first}-{last}"})
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert body == origin.expected(big, first, last + 1)
    slices = {first // (4 * MIB), last // (4 * MIB)}
    assert origin.bytes_sent(big) <= len(slices) * 4 * MIB
    # again: now from the stored slices, nothing more from the origin
    wait_for_objects(box, big, len(slices))
    sent = origin.bytes_sent(big)
    status, headers, body = box.get(f"/{big}", {"Range": f"bytes={first}-{last}"})
    assert status == 206 and body == origin.expected(big, first, last + 1)
    assert origin.bytes_sent(big) == sent
    assert headers["cache-status"] == "oca; hit; detail=slices"


def test_a_changed_etag_drops_every_slice(box_factory: Callable[..., Box], origin: Origin) -> None:
    big = "titles/7/1080p/movie.mp4"
    origin.add(big, size=20 * MIB, etag='"v1"')
    box = fetching_box(box_factory, [origin_source(origin)], slice_size="4MiB")
    assert box.get(f"/{big}", {"Range": "bytes=0-99"})[0] == 206
    deadline = time.monotonic() + 5
    while not box.admin(f"/inventory?prefix={big}")["objects"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [o["key"] for o in box.admin(f"/inventory?prefix={big}")["objects"]] == [f"{big}@slice000000"]
    origin.set_etag(big, '"v2"')
    status, _headers, _body = box.get(f"/{big}", {"Range": f"bytes={9 * MIB}-{9 * MIB + 99}"})
    assert status == 206
    deadline = time.monotonic() + 5
    keys: list[str] = []
    while time.monotonic() < deadline:
        keys = [o["key"] for o in box.admin(f"/inventory?prefix={big}")["objects"]]
        if keys == [f"{big}@slice000002"]:
            break
        time.sleep(0.05)
    assert keys == [f"{big}@slice000002"]


def test_an_origin_that_truncates_closes_the_client_short_and_caches_nothing(
        box_factory: Callable[..., Box], origin: Origin) -> None:
    origin.add(KEY, size=2 * MIB, fault=Fault(truncate_at=MIB, dribble=(256 * 1024, 0.05)))  # head before the cut
    box = fetching_box(box_factory, [origin_source(origin)])
    head, body, closed_early = raw_get(box.port, f"/{KEY}")
    assert head.startswith(b"HTTP/1.1 200")
    assert closed_early and len(body) < 2 * MIB
    time.sleep(0.3)
    assert box.admin(f"/inventory?prefix={KEY}")["objects"] == []
    origin.set_fault(KEY, None)
    status, _, body = box.get(f"/{KEY}")
    assert status == 200 and body == origin.expected(KEY)
    assert origin.count(KEY) == 2


@pytest.mark.parametrize("fault, status, words", [
    (Fault(status=503), 502, "answered 503"),
    (Fault(hang_before_headers=5), 504, "no response within"),
])
def test_upstream_errors_answer_quickly_with_a_reason(box_factory: Callable[..., Box], origin: Origin,
                                                      fault: Fault, status: int, words: str) -> None:
    origin.add(KEY, size=1000, fault=fault)
    box = fetching_box(box_factory, [origin_source(origin)])
    started = time.monotonic()
    got, headers, _ = box.get(f"/{KEY}")
    assert got == status
    assert words in headers["x-oca-reason"]
    assert headers["cache-control"] == "no-store"
    assert time.monotonic() - started < 4
    assert box.admin(f"/inventory?prefix={KEY}")["objects"] == []


def test_a_refused_source_fails_over_to_the_next(box_factory: Callable[..., Box], origin: Origin) -> None:
    origin.add(KEY, b"x" * 5000)
    dead = {"name": "peer-dead", "url": f"http://127.0.0.1:{closed_port()}", "kind": "peer"}
    box = fetching_box(box_factory, [dead, origin_source(origin)])
    status, headers, body = box.get(f"/{KEY}")
    assert (status, body) == (200, b"x" * 5000)
    assert headers["x-oca-source"] == "origin"


def test_only_refused_sources_give_502_naming_them(box_factory: Callable[..., Box]) -> None:
    dead = {"name": "origin", "url": f"http://127.0.0.1:{closed_port()}", "kind": "origin"}
    box = fetching_box(box_factory, [dead])
    status, headers, _ = box.get(f"/{KEY}")
    assert status == 502
    assert "origin: cannot connect" in headers["x-oca-reason"]


def test_an_origin_404_is_remembered_for_negative_ttl(box_factory: Callable[..., Box], origin: Origin) -> None:
    box = fetching_box(box_factory, [origin_source(origin)], negative_ttl="30s")
    for _ in range(4):
        assert box.get(f"/{KEY}")[0] == 404
    assert origin.count(KEY) <= 2  # once per worker at most... and the master coalesces it to one
    assert origin.count(KEY) == 1


def test_a_stalled_body_cuts_clients_and_caches_nothing(box_factory: Callable[..., Box], origin: Origin) -> None:
    origin.add(KEY, size=2 * MIB, fault=Fault(stall_at=(MIB // 2, 5)))
    box = fetching_box(box_factory, [origin_source(origin)])
    head, _body, closed_early = raw_get(box.port, f"/{KEY}")
    assert head.startswith(b"HTTP/1.1 200") and closed_early
    assert box.admin(f"/inventory?prefix={KEY}")["objects"] == []


def test_more_bytes_than_content_length_stores_exactly_the_object(box_factory: Callable[..., Box],
                                                                  origin: Origin) -> None:
    origin.add(KEY, size=100_000, fault=Fault(extra_bytes=5000))
    box = fetching_box(box_factory, [origin_source(origin)])
    # the excess breaks the upstream connection's framing: aiohttp either notices it only after the declared
    # length (the object is good: served and kept) or while reading it (the fill fails: 502, nothing kept)
    status, _, body = box.get(f"/{KEY}")
    assert status in (200, 502)
    if status == 200:
        assert body == origin.expected(KEY)
    time.sleep(0.3)
    stored = box.admin(f"/inventory?prefix={KEY}")["objects"]
    assert [o["size"] for o in stored] in ([100_000], [])


def test_soft_purge_revalidates_and_hard_purge_misses(box_factory: Callable[..., Box], origin: Origin) -> None:
    origin.add(KEY, b"v" * 10_000, etag='"one"')
    box = fetching_box(box_factory, [origin_source(origin)])
    assert box.get(f"/{KEY}")[0] == 200
    time.sleep(0.3)
    assert box.admin("/purge", "POST", {"scope": "title", "value": "7", "soft": True})["objects"] == 1
    status, headers, body = box.get(f"/{KEY}")
    assert (status, body) == (200, b"v" * 10_000)
    last = origin.records(KEY)[-1]
    assert last.headers.get("if-none-match") == '"one"' and last.status == 304
    assert box.admin("/status")["fetch"]["revalidated_304"] == 1
    assert 'oca_revalidations_total{result="304"} 1.0' in box.admin("/metrics")
    assert box.get(f"/{KEY}")[1]["cache-status"].startswith("oca; hit")
    assert origin.count(KEY) == 2
    assert box.admin("/purge", "POST", {"scope": "key", "value": KEY})["objects"] == 1
    status, headers, _ = box.get(f"/{KEY}")
    assert status == 200 and "fwd=uri-miss" in headers["cache-status"]
    assert origin.count(KEY) == 3


def test_a_source_that_hangs_fails_over_to_the_next(box_factory: Callable[..., Box], origin: Origin) -> None:
    with Origin() as slow:
        slow.add(KEY, b"s" * 100, fault=Fault(hang_before_headers=10))
        origin.add(KEY, b"o" * 100)
        parent = {"name": "parent", "url": slow.url, "kind": "parent"}
        box = fetching_box(box_factory, [parent, origin_source(origin)])
        started = time.monotonic()
        status, headers, body = box.get(f"/{KEY}")
        assert (status, body, headers["x-oca-source"]) == (200, b"o" * 100, "origin")
        assert time.monotonic() - started < 5


def test_peers_fill_from_each_other_with_the_fleet_credential(box_factory: Callable[..., Box], origin: Origin,
                                                             tmp_path: Any) -> None:
    secret = tmp_path / "peer.secret"
    secret.write_text("fleet-secret\n")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(generate_private_key("EdDSA"), "k1")]}))
    holder = box_factory({KEY: b"h" * 4000}, fetch={"peer_credential_file": str(secret)},
                         tokens={"required": True, "jwks_file": str(jwks)})
    assert holder.get(f"/{KEY}")[0] == 403  # players need a token there
    peer = {"name": "box-a", "url": holder.url, "kind": "peer"}
    other = "titles/7/720p/seg_00002.m4s"
    origin.add(other, b"o" * 3000)
    box = fetching_box(box_factory, [peer, origin_source(origin)], peer_credential_file=str(secret))
    status, headers, body = box.get(f"/{KEY}")
    assert (status, body, headers["x-oca-source"]) == (200, b"h" * 4000, "box-a")
    assert origin.count(KEY) == 0
    # a peer that does not hold the object says so (only-if-cached) and does not fetch it itself
    status, headers, body = box.get(f"/{other}")
    assert (status, body, headers["x-oca-source"]) == (200, b"o" * 3000, "origin")
    assert origin.count(other) == 1
    assert holder.admin(f"/inventory?prefix={other}")["objects"] == []
    # the peer's miss is routine: DEBUG (not shown at the default level) on the asking and the answering box
    logs = box.log() + holder.log()
    assert not [line for line in logs.splitlines() if other in line or "only-if-cached" in line], logs


def test_a_range_past_the_end_of_a_cold_small_object_is_416(box_factory: Callable[..., Box],
                                                             origin: Origin) -> None:
    origin.add(KEY, size=1000)
    box = fetching_box(box_factory, [origin_source(origin)], slice_size="4MiB")
    status, headers, _ = box.get(f"/{KEY}", {"Range": "bytes=5000000-"})
    assert status == 416 and headers["content-range"] == "bytes */1000"
    status, _, body = box.get(f"/{KEY}")
    assert status == 200 and body == origin.expected(KEY)


def test_a_peers_only_if_cached_miss_is_neither_a_miss_nor_an_error(box_factory: Callable[..., Box],
                                                                     origin: Origin) -> None:
    origin.add(KEY, size=1000)
    box = fetching_box(box_factory, [origin_source(origin)])
    status, _, _ = box.get(f"/{KEY}", {"Cache-Control": "only-if-cached"})
    assert status == 504 and origin.count(KEY) == 0  # RFC 9111 §5.2.1.7: not fetched for the asker
    deadline = time.monotonic() + 10
    while "oca_peer_misses_total 1.0" not in (metrics := box.admin("/metrics")):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.05)
    requests = [line for line in metrics.splitlines() if line.startswith("oca_requests_total")]
    assert not [line for line in requests if "504" in line or "peer-miss" in line], requests  # not in 5xx panels
    assert not [line for line in box.log().splitlines() if "WARNING" in line and KEY in line], box.log()
    status_now = box.admin("/status")
    assert status_now["release_stats"]["errors"] == 0 and status_now["release_stats"]["requests"] >= 1
    assert status_now["hit_ratio"] is None  # no client lookup yet


def test_a_sliced_object_with_no_slice_stored_and_the_origin_down_is_a_502_before_any_header(
        box_factory: Callable[..., Box], origin: Origin) -> None:
    """Issue 13 (7): the head of a sliced object waits for the first slice it sends: a source failure is
    answered as an error, never as a 200 whose body cannot follow."""
    big = "titles/7/1080p/six.mp4"
    origin.add(big, size=6 * MIB)
    box = fetching_box(box_factory, [origin_source(origin)], slice_size="4MiB")
    assert box.get(f"/{big}", {"Range": "bytes=0-99"})[0] == 206
    assert [o["key"] for o in wait_for_objects(box, big, 1)] == [f"{big}@slice000000"]
    box.admin("/purge", "POST", {"scope": "key", "value": f"{big}@slice000000"})  # the meta stays, no slice
    assert wait_for_objects(box, big, 0) == []
    origin.stop()
    # the first slice sent is the one holding the first range, in the client's order, multipart too
    for headers in ({}, {"Range": f"bytes={5 * MIB}-{5 * MIB + 9}"}, {"Range": f"bytes={5 * MIB}-{5 * MIB + 9},0-9"}):
        head, _body, _ = raw_get(box.port, f"/{big}", "".join(f"{k}: {v}\r\n" for k, v in headers.items()))
        status = int(head.split(b" ")[1])
        assert status in (502, 504), (headers, head)
        assert header(head, "cache-control") == "no-store"
    assert box.admin("/status")["tiers"] and "Traceback" not in box.log()


def test_sigterm_after_a_reload_closes_every_upstream_session(box_factory: Callable[..., Box],
                                                              origin: Origin) -> None:
    origin.add(KEY, os.urandom(10_000))
    origin.add("titles/1/720p/other.m4s", os.urandom(10_000))
    box = fetching_box(box_factory, [origin_source(origin)])
    assert box.get(f"/{KEY}")[0] == 200  # opens the upstream's client session
    box.process.send_signal(signal.SIGHUP)  # a new Upstream; the old one waits to close when idle
    deadline = time.monotonic() + 20
    while "reloaded" not in box.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reloaded" in box.log(), box.log()
    assert box.get("/titles/1/720p/other.m4s")[0] == 200  # and the new one opens its own
    assert box.stop(signal.SIGTERM) == 0
    log = box.log()
    assert "Unclosed" not in log and "Traceback" not in log, log


@pytest.mark.parametrize("fault", [Fault(no_content_length=True), Fault(chunked=True, dribble=(300, 0.01))],
                         ids=["close-delimited", "chunked"])
def test_a_miss_from_an_upstream_that_sends_no_length_is_answered_whole(
        box_factory: Callable[..., Box], origin: Origin, fault: Fault) -> None:
    """The fill is followed only once it has ended (no length to promise): its length is what arrived, ranges
    are cut from it and its validators are upstream's."""
    data = os.urandom(3000)
    origin.add(KEY, data, fault=fault)
    box = fetching_box(box_factory, [origin_source(origin)], slice_size=0)
    status, headers, body = box.get(f"/{KEY}", {"Range": "bytes=-10"})
    assert (status, body, headers["content-range"]) == (206, data[-10:], "bytes 2990-2999/3000")
    assert headers["etag"] == origin.etag(KEY) and "fwd=uri-miss" in headers["cache-status"]


def test_a_multipart_answer_streams_from_the_growing_fill(box_factory: Callable[..., Box], origin: Origin) -> None:
    """Several ranges of a miss are cut from the fill file as it grows: the head and the first part go out
    while the origin still holds the rest back, the second part once its bytes arrive."""
    data = os.urandom(1000)
    origin.add(KEY, data, fault=Fault(stall_at=(500, 3.0)))
    box = fetching_box(box_factory, [origin_source(origin)], between_bytes_timeout="10s")
    with socket.create_connection(("127.0.0.1", box.port), timeout=20) as sock:
        asked = time.monotonic()
        sock.sendall(f"GET /{KEY} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9,900-999\r\n\r\n".encode())
        received = b""
        while data[:10] not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        first_part_at = time.monotonic() - asked
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(header(head, "content-length") or 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, body
            body += chunk
    assert head.startswith(b"HTTP/1.1 206") and "fwd=uri-miss" in (header(head, "cache-status") or "")
    assert (header(head, "content-type") or "").startswith("multipart/byteranges; boundary=")
    assert first_part_at < 2.0, first_part_at  # the origin sends byte 500 on only after 3 s
    assert b"Content-Range: bytes 900-999/1000\r\n\r\n" + data[900:] + b"\r\n--" in body
    assert len(body) == length
