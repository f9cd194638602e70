"""oca.fetch.hints.HintBook: the bounds and counters of player-hinted prefetches (pure; clock injected)."""

from __future__ import annotations

from oca.fetch.hints import MAX_SESSION, UNUSED_AFTER, HintBook
from tests.clock import FakeClock


def test_the_box_bound_is_a_quarter_of_the_fill_slots_at_most_16() -> None:
    assert HintBook(8).box_limit == 2
    assert HintBook(1000).box_limit == 16
    assert HintBook(1).box_limit == 1
    book = HintBook(8)
    assert book.admit("a", "s1") and book.admit("b", "s2")
    assert not book.admit("c", "s3")
    assert book.counters.dropped["box"] == 1
    book.ended("a", stored=True)
    assert book.admit("c", "s3")


def test_a_session_has_at_most_max_session_in_flight() -> None:
    book = HintBook(1000)
    assert all(book.admit(f"k{i}", "s") for i in range(MAX_SESSION))
    assert not book.admit("more", "s")
    assert book.admit("other", "t")  # another session is not held back
    assert book.counters.dropped["session"] == 1
    book.ended("k0", stored=False)
    assert book.counters.dropped["failed"] == 1
    assert book.admit("more", "s")
    assert book.counters.started == MAX_SESSION + 2


def test_used_late_and_unused() -> None:
    clock = FakeClock()
    book = HintBook(100, clock)
    for key in ("a", "b", "c"):
        book.admit(key, "s")
    book.joined("c", 100, 1000)  # the client came while it was still being fetched, a tenth of it in
    book.joined("b", 600, 1000)  # and another once most of it was in
    book.joined("unrelated", 1000, 1000)  # not a hint fill: not counted
    for key in ("a", "b", "c"):
        book.ended(key, stored=True)
    book.hits({"a": 1, "unrelated": 2})
    book.hits({"a": 1})  # counted once
    assert (book.counters.used, book.counters.late, book.counters.late_most) == (1, 2, 1)
    clock.advance(UNUSED_AFTER + 1)
    book.hits({"x": 1})
    assert book.counters.dropped["unused"] == 2  # b and c: nobody got them as hits in time
    assert book.counters.as_json() == {"started": 3, "guessed": 0, "used": 1, "late": 2, "late_most": 1,
                                       "dropped": {"box": 0, "session": 0, "failed": 0, "unused": 2}}


def test_a_guess_needs_a_slot_to_spare_in_its_session_and_in_the_box() -> None:
    """The lookahead never takes the place of a player's own hint, which names what it will ask for next."""
    book = HintBook(1000)
    assert book.admit("360p/2", "s") and book.admit("360p/3", "s", guess=True)  # one hint and its guess
    assert not book.admit("audio/3", "s", guess=True)  # the last slot is kept for a hint
    assert book.admit("audio/2", "s")  # which the player's own hint may take
    assert book.counters.dropped["session"] == 1 and (book.counters.started, book.counters.guessed) == (3, 1)
    box = HintBook(8)  # a box bound of 2
    assert box.admit("a", "s1")
    assert not box.admit("b", "s2", guess=True)
    assert box.admit("b", "s2")
    assert box.counters.dropped["box"] == 1


def test_a_guess_waits_for_its_sessions_hint_fill_in_its_directory_and_takes_its_slot() -> None:
    """At a switch up the player asks for the hinted segment a few tens of ms after the hint: the lookahead must
    not share the upstream with it. It starts when that fill is stored, in the slot it leaves."""
    book = HintBook(1000)
    assert book.admit("t/1080p/seg_3", "s")  # the hint of the switch's first request
    assert book.admit("t/audio/seg_3", "s") and book.admit("t/audio/seg_4", "s")
    assert book.park("t/1080p/seg_4", "s")  # its guess waits
    assert not book.park("t/1080p/seg_4", "other")  # another session's guess has nothing of its own to wait for
    assert not book.park("t/720p/seg_4", "s")  # nor one in another directory
    assert book.park("t/1080p/seg_5", "s")  # a newer guess replaces the waiting one
    assert book.ended("t/1080p/seg_3", stored=True) == ("t/1080p/seg_5", "s")
    # the session is at 2 of 3: a guess that waited takes the freed slot, one that did not needs a spare
    assert not book.admit("t/720p/seg_9", "s", guess=True)
    assert book.admit("t/1080p/seg_5", "s", guess=True, waited=True)
    assert book.counters.guessed == 1
    assert book.ended("t/1080p/seg_5", stored=True) is None  # nothing waited for it
    assert book.park("t/audio/seg_5", "s")
    assert book.ended("t/audio/seg_3", stored=False) is None  # a failed fill: its successor would fail too
    assert book.ended("t/audio/seg_4", stored=True) is None  # the guess had waited for seg_3 only
