"""Stream popularity (oca/storage/streams.py) and the S3-FIFO rule that uses it: an object leaving the small
queue unread moves to main when its stream is hot. Pure: no store, no event loop."""

from __future__ import annotations

import pytest

from oca.storage.policy import policy_factory
from oca.storage.s3fifo import Ghost, S3FIFOPolicy
from oca.storage.streams import Streams, stream_of


@pytest.mark.parametrize(("key", "stream"), [
    ("titles/t1/r0/seg00001.m4s", "titles/t1/r0/"),
    ("titles/t1/r0/", "titles/t1/r0/"),
    ("a/b", "a/"),
    ("plain", ""),
    ("", ""),
])
def test_a_stream_is_the_keys_directory(key: str, stream: str) -> None:
    assert stream_of(key) == stream


# (requests in order, True = returning; hot?) with min_requests 4 and hot_share 0.5
@pytest.mark.parametrize(("returns", "hot"), [
    ([], False),
    ([True, True, True], False),  # too few requests to judge
    ([True, True, True, True], True),
    ([False, False, True, True], True),  # half returned
    ([False, False, False, True], False),
    ([False] * 20 + [True] * 4, False),  # a long cold history outweighs a few returns
])
def test_a_stream_is_hot_when_enough_of_its_recent_requests_returned(returns: list[bool], hot: bool) -> None:
    streams = Streams(min_requests=4, hot_share=0.5)
    for i, returning in enumerate(returns):
        streams.request(f"titles/t1/r0/seg{i}", returning)
    assert streams.hot("titles/t1/r0/seg99") is hot
    assert not streams.hot("titles/t2/r0/seg0")  # another stream knows nothing of it


def test_counts_follow_the_recent_requests() -> None:
    """Both counts halve at the window: a stream that stops being read again turns cold after a few windows."""
    streams = Streams(window=8, min_requests=4, hot_share=0.5)
    for i in range(8):
        streams.request(f"s/{i}", True)
    assert streams.hot("s/x")
    for i in range(12):
        streams.request(f"s/{i + 8}", False)
    assert not streams.hot("s/x")


def test_keys_without_a_directory_are_never_hot() -> None:
    streams = Streams(min_requests=1)
    for _ in range(5):
        streams.request("plain", True)
    assert not streams.hot("plain") and len(streams) == 0


def test_at_most_limit_streams_least_recently_requested_dropped_first() -> None:
    streams = Streams(limit=2, min_requests=1)
    streams.request("a/1", True)
    streams.request("b/1", True)
    streams.request("a/2", True)  # a is now the most recent
    streams.request("c/1", True)  # drops b
    assert len(streams) == 2
    assert streams.hot("a/x") and streams.hot("c/x") and not streams.hot("b/x")


@pytest.mark.parametrize("settings", [
    {"limit": 0}, {"window": 1}, {"window": 1 << 16}, {"min_requests": 0}, {"hot_share": 0}, {"hot_share": 1.5}])
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Streams(**settings)  # type: ignore[arg-type]


def cache(capacity: int, streams: Streams | None) -> tuple[S3FIFOPolicy, dict[str, int]]:
    return S3FIFOPolicy(Ghost(10 * capacity), small_bytes=capacity // 10, streams=streams), {}


def request(policy: S3FIFOPolicy, held: dict[str, int], capacity: int, key: str) -> None:
    """One request of a 1-byte object through a single-tier cache of `capacity` bytes, as a store does it."""
    if key in held:
        policy.touch(key)
        return
    if len(held) + 1 > capacity:
        for victim in policy.victims(len(held) + 1 - capacity, lambda k: False):
            policy.remove(victim)
            del held[victim]
    policy.add(key, 1)
    held[key] = 1


@pytest.mark.parametrize("aware", [True, False])
def test_a_read_once_object_of_a_hot_stream_survives_a_scan_that_evicts_one_of_a_cold_stream(aware: bool) -> None:
    capacity = 100
    policy, held = cache(capacity, Streams(min_requests=4, hot_share=0.5) if aware else None)
    for _ in range(3):  # a popular title: three sessions read its first segments, the later ones from the cache
        for i in range(4):
            request(policy, held, capacity, f"titles/hot/r0/seg{i}")
    request(policy, held, capacity, "titles/hot/r0/seg4")  # the third session reads on: read once so far
    request(policy, held, capacity, "titles/cold/r0/seg4")  # a title one session reads
    for i in range(3 * capacity):  # one-time keys, three times the cache
        request(policy, held, capacity, f"scan/{i}")
    assert "titles/cold/r0/seg4" not in held
    # the next session of the hot title will ask for seg4: only the stream-aware policy kept it
    assert ("titles/hot/r0/seg4" in held) is aware


def test_the_tiers_of_one_box_share_what_they_learn_of_streams() -> None:
    """Reads of a stream's objects on the HDD make the stream hot for the SSD, where its new objects land."""
    make = policy_factory("s3fifo", [1000, 9000])
    ssd, hdd = make(), make()
    for i in range(8):
        hdd.add(f"titles/t1/r0/seg{i}", 1)
        hdd.touch(f"titles/t1/r0/seg{i}")
    ssd.add("titles/t1/r0/seg8", 1)  # new, never read: in main at once, so worth keeping when it leaves
    ssd.add("titles/t2/r0/seg8", 1)  # new, of a stream the box knows nothing of: small queue
    assert ssd.worth_keeping("titles/t1/r0/seg8")
    assert not ssd.worth_keeping("titles/t2/r0/seg8")
