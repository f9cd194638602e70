"""The fetch package's pure parts: slice arithmetic, Content-Range, the token bucket, title inventory."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oca.admin.inventory import TitleInventory, title_of
from oca.errors import BadRequest
from oca.fetch.invalidations import MAX_AHEAD, check_window, in_order
from oca.fetch.prefetch import TokenBucket
from oca.fetch.slices import covering, is_slice_key, parse_content_range, slice_bounds, slice_count, slice_key
from oca.serve.handler import _range_start
from oca.wire.invalidation import Invalidation
from oca.wire.prefetch import PrefetchRequest
from tests.clock import FakeClock

S = 4 << 20


@pytest.mark.parametrize("value, parsed", [
    ("bytes 0-99/1000", (0, 99, 1000)),
    ("bytes 5-5/*", (5, 5, None)),
    ("bytes 10-5/100", None),
    ("bytes 0-100/100", None),
    ("bytes */100", None),
    ("items 0-1/2", None),
    ("bytes 1-2/3/4", None),
    (None, None),
])
def test_content_range(value: str | None, parsed: tuple[int, int, int | None] | None) -> None:
    assert parse_content_range(value) == parsed


@given(st.text(max_size=40))
def test_content_range_never_raises(value: str) -> None:
    parse_content_range(value)


@given(st.integers(0, 5 << 30), st.integers(0, 64 << 20), st.integers(64 << 10, 64 << 20))
def test_covering_slices_hold_exactly_the_range(first: int, extra: int, slice_size: int) -> None:
    last = first + extra
    total = last + 1
    indexes = covering(first, last, slice_size)
    bounds = [slice_bounds(i, slice_size, total) for i in indexes]
    assert bounds[0][0] <= first and bounds[-1][1] >= last
    assert all(b[1] + 1 == n[0] for b, n in itertools.pairwise(bounds))
    assert len(indexes) <= extra // slice_size + 2
    assert indexes.stop <= slice_count(total, slice_size)


def test_a_range_in_a_4gib_object_is_one_slice() -> None:
    assert list(covering(3_000_000_000, 3_000_999_999, S)) == [715]


def test_slice_keys_are_recognised() -> None:
    assert slice_key("titles/1/a.mp4", 7) == "titles/1/a.mp4@slice000007"
    assert is_slice_key(slice_key("titles/1/a.mp4", 7))
    assert not is_slice_key("titles/1/a.mp4")


@pytest.mark.parametrize("header, start", [
    (None, 0), ("bytes=100-200", 100), ("bytes=-500", 0), ("bytes=7-", 7), ("items=5-6", 0),
    ("bytes=99999999999999999999999-", 0), ("bytes= 12-13, 20-30", 12),
])
def test_range_start_hint(header: str | None, start: int) -> None:
    assert _range_start(header) == start


def test_token_bucket_paces_to_its_rate() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(1000, clock=clock, sleep=clock.async_sleep)

    async def run() -> None:
        for _ in range(5):
            await bucket.take(500)

    asyncio.run(run())
    # one second of burst (1000 bytes), then 500 bytes per half second
    assert clock.slept == pytest.approx([0.5, 0.5, 0.5])


def test_prefetch_items_are_checked() -> None:
    items = PrefetchRequest.from_json({"items": ["titles/1/a", {"key": "titles/1/b", "size": 3, "tier": "hot",
                                                               "pin": True}]}).items
    assert items[1].hot and items[1].pin and items[1].size == 3
    for bad in ([], [{"key": 3}], [{"key": "titles/1/a", "size": -1}], [{"key": "titles/1/a", "pin": "y"}],
                [{"key": "titles/1/a", "tier": "warm"}], "titles/1/a"):
        with pytest.raises(BadRequest):
            PrefetchRequest.from_json({"items": bad})


def test_title_inventory_reports_changes_since_a_sequence() -> None:
    inventory = TitleInventory(base=1000)
    seq = inventory.refresh([("titles/1/a", 10), ("titles/1/b", 5), ("titles/2/a", 1), ("other/x", 9)])
    assert inventory.since(0).to_json() == {"sequence": seq, "full": True, "removed": [],
                                  "titles": {"1": {"objects": 2, "bytes": 15}, "2": {"objects": 1, "bytes": 1}}}
    assert inventory.refresh([("titles/1/a", 10), ("titles/1/b", 5), ("titles/2/a", 1)]) == seq
    after = inventory.refresh([("titles/1/a", 10), ("titles/3/x@slice000001", 4)])
    delta = inventory.since(seq).to_json()
    assert delta["titles"] == {"1": {"objects": 1, "bytes": 10}, "3": {"objects": 1, "bytes": 4}}
    assert delta["removed"] == ["2"] and delta["sequence"] == after and not delta["full"]
    assert inventory.since(after).titles == {}


def test_title_of() -> None:
    assert title_of("titles/81239481/720p/a.m4s") == "81239481"
    assert title_of("titles/x") is None and title_of("public/a") is None


def _seqs(*seqs: int) -> list[Invalidation]:
    return [Invalidation(s, "key", f"titles/1/{s}") for s in seqs]


@pytest.mark.parametrize("applied, pushed, run, missing", [
    (0, (1, 2, 3), (1, 2, 3), None),
    (0, (3, 1, 2), (1, 2, 3), None),
    (2, (1, 2, 3), (3,), None),
    (0, (1, 1, 2), (1, 2), None),
    (0, (2, 3), (), 1),
    (0, (1, 3), (1,), 2),
    (5, (), (), None),
])
def test_only_the_run_after_the_applied_seq_is_applied(applied: int, pushed: tuple[int, ...],
                                                      run: tuple[int, ...], missing: int | None) -> None:
    got, gap = in_order(_seqs(*pushed), applied)
    assert tuple(e.seq for e in got) == run and gap == missing


def test_a_seq_past_the_window_is_refused() -> None:
    check_window(_seqs(7 + MAX_AHEAD), 7)
    with pytest.raises(BadRequest, match="too far ahead"):
        check_window(_seqs(8, 8 + MAX_AHEAD), 7)
