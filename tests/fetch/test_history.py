"""oca.fetch.history: why a miss was a miss, from a bounded history of each key (pure; clock injected)."""

from __future__ import annotations

import tracemalloc

import pytest

from oca.fetch import history as hist
from oca.fetch.history import KeyHistory
from tests.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def test_a_key_never_seen_is_first(clock: FakeClock) -> None:
    assert KeyHistory(clock).miss("titles/1/720p/seg_1.m4s") == hist.FIRST


@pytest.mark.parametrize(("events", "expected"), [
    ([(hist.FILLED, "from origin"), (hist.EVICT, "capacity: tier ssd full")], hist.EVICTED),
    ([(hist.FILLED, "from origin"), (hist.PURGED, "purge of title 1")], hist.INVALIDATED),
    # stored again since its eviction, then purged: the last removal counts
    ([(hist.EVICT, "capacity"), (hist.FILLED, "from origin"), (hist.PURGED, "purge")], hist.INVALIDATED),
    ([(hist.PURGED, "purge"), (hist.FILLED, "from origin"), (hist.EVICT, "capacity")], hist.EVICTED),
    # removed, then filled again: a miss now is not explained by the old removal
    ([(hist.EVICT, "capacity"), (hist.FILLED, "from origin")], hist.FIRST),
    ([(hist.FAILED, "origin 503")], hist.FIRST),
])
def test_the_last_removal_explains_the_miss(clock: FakeClock, events: list[tuple[str, str]], expected: str) -> None:
    history = KeyHistory(clock)
    for kind, detail in events:
        history.record("titles/1/720p/seg_1.m4s", kind, detail)
    assert history.classify("titles/1/720p/seg_1.m4s") == expected


def test_stale_is_revalidated_and_a_missing_slice_is_slice(clock: FakeClock) -> None:
    history = KeyHistory(clock)
    history.record("titles/1/a.mp4", hist.FILLED)
    assert history.classify("titles/1/a.mp4", stale=True) == hist.REVALIDATED
    assert history.classify("titles/1/a.mp4@slice/3", slice_of="titles/1/a.mp4") == hist.SLICE
    history.record("titles/1/a.mp4@slice/3", hist.EVICT, "capacity")
    assert history.classify("titles/1/a.mp4@slice/3", slice_of="titles/1/a.mp4") == hist.EVICTED


def test_a_title_missing_repeatedly_is_popular_until_the_window_passes(clock: FakeClock) -> None:
    history = KeyHistory(clock)
    reasons = [history.miss(f"titles/7/720p/seg_{i}.m4s") for i in range(hist.POPULAR_MISSES + 2)]
    assert reasons == [hist.FIRST] * hist.POPULAR_MISSES + [hist.POPULAR] * 2
    assert history.miss("titles/8/720p/seg_0.m4s") == hist.FIRST  # another title
    assert history.miss("other/thing.bin") == hist.FIRST  # outside the titles tree
    clock.advance(hist.POPULAR_WINDOW + 1)
    assert history.miss("titles/7/720p/seg_99.m4s") == hist.FIRST


def test_every_miss_and_its_reason_is_an_event(clock: FakeClock) -> None:
    history = KeyHistory(clock)
    history.record("k/1", hist.FILLED, "from origin (miss), 10 bytes, tier ssd")
    clock.advance(5)
    history.record("k/1", hist.EVICT, "capacity: tier ssd full")
    clock.advance(5)
    assert history.miss("k/1") == hist.EVICTED
    assert [(e.at, e.kind, e.detail) for e in history.events("k/1")] == [
        (1000.0, hist.FILLED, "from origin (miss), 10 bytes, tier ssd"),
        (1005.0, hist.EVICT, "capacity: tier ssd full"),
        (1010.0, hist.MISS, hist.EVICTED)]


def test_memory_is_bounded_in_keys_events_and_bytes(clock: FakeClock) -> None:
    history = KeyHistory(clock, max_keys=50, max_events=3)
    for i in range(200):
        for kind in (hist.MISS, hist.FILLED, hist.EVICT, hist.MISS):
            history.record(f"titles/1/720p/seg_{i}.m4s", kind, "x" * 500)
    assert len(history) == 50
    assert history.events("titles/1/720p/seg_0.m4s") == []  # the least recently touched went first
    kept = history.events("titles/1/720p/seg_199.m4s")
    assert [e.kind for e in kept] == [hist.FILLED, hist.EVICT, hist.MISS]
    assert all(len(e.detail) == 120 for e in kept)

    # the module's bound: MAX_KEYS keys of MAX_EVENTS long events each, and MAX_TITLES titles' miss times,
    # stay under 32 MB (measured on a sample of each, as the cost grows linearly)
    sample_keys, sample_titles = 2000, 1000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    full = KeyHistory(clock)
    for i in range(sample_keys):
        key = f"titles/{i % 5000:06d}/1080p/seg_{i:08d}.m4s"
        for _ in range(hist.MAX_EVENTS + 2):
            full.record(key, hist.FILLED, f"from peer-{i} (miss), 123456789 bytes, tier ssd " + "d" * 80)
    per_key = (tracemalloc.get_traced_memory()[0] - before) / sample_keys
    before = tracemalloc.get_traced_memory()[0]
    for i in range(sample_titles):
        for n in range(hist.POPULAR_MISSES):
            full.miss(f"titles/t{i}/1080p/seg_{n}.m4s")
    per_title = (tracemalloc.get_traced_memory()[0] - before) / sample_titles - per_key * hist.POPULAR_MISSES
    tracemalloc.stop()
    total = per_key * hist.MAX_KEYS + per_title * hist.MAX_TITLES
    assert total < 32 << 20, (per_key, per_title, total)
