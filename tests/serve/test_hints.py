"""oca.serve.hints: CMCD nor/nrr resolved per CTA-5004, checked against the request's token, passed on once."""

from __future__ import annotations

from typing import Any

import pytest

from oca.errors import BadRequest
from oca.fetch.remote import RemoteFills
from oca.keys import key_from_target
from oca.protocol.codec import Codec
from oca.protocol.messages import PrefetchHint
from oca.protocol.version import LEGACY, VERSION
from oca.serve.hints import Hint, HintSender, lookahead, next_objects, successor
from tests.clock import FakeClock

TARGET = "/t/JWT/titles/1/720p/seg_4.m4s?CMCD=ot%3Dv"


@pytest.mark.parametrize(("cmcd", "expected"), [
    # v1: a URL-encoded relative path
    ({"nor": "seg_5.m4s"}, [Hint("/t/JWT/titles/1/720p/seg_5.m4s", None)]),
    ({"nor": "..%2F1080p%2Fseg_5.m4s"}, [Hint("/t/JWT/titles/1/1080p/seg_5.m4s", None)]),
    ({"nor": "seg_5.m4s", "nrr": "100-199"}, [Hint("/t/JWT/titles/1/720p/seg_5.m4s", 100)]),
    # nrr alone: a range of the current object
    ({"nrr": "2000-"}, [Hint("/t/JWT/titles/1/720p/seg_4.m4s", 2000)]),
    ({"nrr": "-500"}, []),
    # v2 / hls.js 1.7: an inner list, each item with an optional r parameter
    ({"nor": ["seg_5.m4s"]}, [Hint("/t/JWT/titles/1/720p/seg_5.m4s", None)]),
    ({"nor": [{"value": "seg_5.m4s", "params": {"r": "0-99"}}, "seg_6.m4s", "seg_7.m4s"]},
     [Hint("/t/JWT/titles/1/720p/seg_5.m4s", 0), Hint("/t/JWT/titles/1/720p/seg_6.m4s", None)]),
    # leaving the box: another host, another scheme
    ({"nor": "http://elsewhere.example/titles/1/720p/seg_5.m4s"}, []),
    ({"nor": "//elsewhere.example/x"}, []),
    ({"nor": "https://box/titles/1/720p/seg_5.m4s"}, []),
    # climbing out of the token segment resolves, and is refused later (the token differs)
    ({"nor": "../../../../../x.m4s"}, [Hint("/x.m4s", None)]),
    ({"nor": 5}, []),
    ({"nor": ""}, []),
])
def test_next_objects(cmcd: dict[str, object], expected: list[Hint]) -> None:
    assert next_objects(cmcd, TARGET) == expected


class FakeLink:
    """A fill link's sending end, in the version agreed on (its codec); what was sent, as records."""

    closed = False

    def __init__(self, version: int = VERSION) -> None:
        self.codec = Codec(version)
        self.sent: list[PrefetchHint] = []

    def send(self, message: PrefetchHint) -> None:
        self.codec.encode(message)  # a kind the version does not carry raises here
        self.sent.append(message)


class FakeObjects:
    def __init__(self, held: set[str]) -> None:
        self.held = held

    def get(self, key: str) -> Any:
        return type("Entry", (), {"stale": False})() if key in self.held else None


class FakeGate:
    """Lets a token through for the keys under its title directory only (as a cdniuc scope does)."""

    def check(self, token: str | None, key: str, client: str, authorization: str | None) -> tuple[str | None, float]:
        return (None, 0.0) if token == "JWT" and key.startswith("titles/1/") else ("token out of scope", 0.0)


def parse(target: bytes) -> tuple[str, str, str | None, bytes]:
    token = None
    if target.startswith(b"/t/"):
        token, _, rest = target[3:].partition(b"/")
        target = b"/" + rest
    key, query = key_from_target(target)
    return key, query, token.decode() if token is not None else None, target


def sender(held: set[str] | None = None, version: int = VERSION) -> tuple[HintSender, FakeLink, FakeClock]:
    fills = RemoteFills()
    link = FakeLink(version)
    fills.link = link  # type: ignore[assignment]
    clock = FakeClock()
    return HintSender(fills, FakeObjects(held or set()), parse, clock), link, clock  # type: ignore[arg-type]


def send(hints: HintSender, cmcd: dict[str, object], target: str = TARGET, session: str = "s") -> None:
    current = parse(target.partition("?")[0].encode())[0]
    hints.send(cmcd, target.encode(), current, "JWT", "10.0.0.1", FakeGate(), session)  # type: ignore[arg-type]


def test_a_hint_is_passed_on_once_unless_held() -> None:
    hints, link, clock = sender(held={"titles/1/720p/seg_6.m4s"})
    send(hints, {"nor": "seg_5.m4s", "sid": "s"})
    send(hints, {"nor": "seg_5.m4s", "sid": "s"})  # again within RECENT: not passed on twice
    send(hints, {"nor": "seg_6.m4s"})  # held by this worker
    assert link.sent == [PrefetchHint("titles/1/720p/seg_5.m4s", None, "s")]  # its lookahead seg_6 is held
    assert hints.guessed == 0
    clock.advance(10)
    send(hints, {"nor": "seg_5.m4s"})
    assert len(link.sent) == 2


def test_never_for_a_token_the_request_could_not_use() -> None:
    hints, link, _ = sender()
    send(hints, {"nor": "../../../../../x.m4s"})  # out of the token's path segment
    send(hints, {"nor": "../../2/720p/seg_5.m4s"})  # inside the token segment, outside its scope
    assert link.sent == [] and hints.refused == 2
    with pytest.raises(BadRequest):
        parse(b"/titles/%2e%2e/x")  # what a bad hint would be: dropped, never an error to the request
    send(hints, {"nor": "%2e%2e%2f%2e%2e%2fetc"})
    assert link.sent == []


def test_hls_js_audio_hints_naming_a_video_rendition_are_rebased() -> None:
    """hls.js 1.7.4 names the next *video* segment (of level 0) in every audio request's nor."""
    hints, link, _ = sender()
    send(hints, {"ot": "v", "nor": "seg_2.m4s"}, "/t/JWT/titles/1/360p/seg_1.m4s")
    send(hints, {"ot": "a", "nor": "..%2F360p%2Fseg_2.m4s"}, "/t/JWT/titles/1/audio/seg_1.m4s")
    # a video request whose hint names another video rendition (a player's level switch) is left alone
    send(hints, {"ot": "v", "nor": "..%2F1080p%2Fseg_3.m4s"}, "/t/JWT/titles/1/360p/seg_2.m4s")
    assert [m.key for m in link.sent if not m.guess] == ["titles/1/360p/seg_2.m4s", "titles/1/audio/seg_2.m4s",
                                                         "titles/1/1080p/seg_3.m4s"]
    assert hints.rebased == 1
    # another session has not shown what 360p holds: its audio hint goes as named
    send(hints, {"ot": "a", "nor": "..%2F360p%2Fseg_9.m4s"}, "/t/JWT/titles/1/audio/seg_8.m4s", session="t")
    assert link.sent[-1].key == "titles/1/360p/seg_9.m4s"


def test_a_long_session_id_is_cut() -> None:
    hints, link, _ = sender()
    send(hints, {"nor": "seg_5.m4s"}, session="s" * 4000)
    assert link.sent[0].session == "s" * 64


def test_no_hint_goes_on_a_version_1_link() -> None:
    """A master of protocol version 1 has no PrefetchHint: a worker that agreed on version 1 never sends one
    (hints are only an optimisation; the request goes on as if it carried none)."""
    hints, link, _ = sender(version=LEGACY)
    send(hints, {"nor": "seg_5.m4s", "sid": "s"})
    assert link.sent == []


@pytest.mark.parametrize(("name", "expected"), [
    ("seg_00009.m4s", "seg_00010.m4s"),
    ("seg_4.m4s", "seg_5.m4s"),
    ("99.ts", "100.ts"),
    ("chunk-stream0-00042.m4s", "chunk-stream0-00043.m4s"),  # the last number counts (ffmpeg's DASH names)
    ("720p_12", "720p_13"),
    ("init.mp4", None),  # the number is in the extension: not a sequence
    ("index.m3u8", None),
    ("seg.m4s", None),
    ("1" * 19 + ".m4s", None),
])
def test_successor(name: str, expected: str | None) -> None:
    assert successor(name) == expected


@pytest.mark.parametrize(("current", "hinted", "expected"), [
    ("titles/1/720p/seg_4.m4s", "titles/1/720p/seg_5.m4s", "titles/1/720p/seg_6.m4s"),
    ("titles/1/720p/seg_00099.m4s", "titles/1/720p/seg_00100.m4s", "titles/1/720p/seg_00101.m4s"),
    # the player did not show it reads in order: no guess
    ("titles/1/720p/seg_4.m4s", "titles/1/720p/seg_7.m4s", None),  # a seek
    ("titles/1/720p/seg_4.m4s", "titles/1/1080p/seg_5.m4s", None),  # a switch named in nor
    ("titles/1/720p/seg_4.m4s", "titles/1/720p/seg_4.m4s", None),
    ("titles/1/720p/init.mp4", "titles/1/720p/seg_1.m4s", None),
])
def test_lookahead(current: str, hinted: str, expected: str | None) -> None:
    assert lookahead(current, hinted) == expected


def test_a_stream_read_in_order_gets_the_object_after_the_hinted_one_as_a_guess() -> None:
    """hls.js asks for segments back to back at start-up and after a switch up: the one after the hinted one is
    fetched too, marked as the box's guess (the master admits it only with a slot to spare)."""
    hints, link, _ = sender()
    send(hints, {"ot": "v", "nor": "seg_2.m4s"}, "/t/JWT/titles/1/360p/seg_1.m4s")
    # an audio request whose hint names the video's next segment: rebased, then looked ahead in audio
    send(hints, {"ot": "a", "nor": "..%2F360p%2Fseg_2.m4s"}, "/t/JWT/titles/1/audio/seg_1.m4s")
    # the switch up: the first request in 1080p names 1080p's next segment, so its next one comes too
    send(hints, {"ot": "v", "nor": "seg_3.m4s"}, "/t/JWT/titles/1/1080p/seg_2.m4s")
    assert [(m.key, m.guess) for m in link.sent] == [
        ("titles/1/360p/seg_2.m4s", False), ("titles/1/360p/seg_3.m4s", True),
        ("titles/1/audio/seg_2.m4s", False), ("titles/1/audio/seg_3.m4s", True),
        ("titles/1/1080p/seg_3.m4s", False), ("titles/1/1080p/seg_4.m4s", True)]
    assert hints.guessed == 3
    # no guess for a range hint, a seek, or out of the token's scope
    send(hints, {"nor": "seg_6.m4s", "nrr": "0-99"}, "/t/JWT/titles/1/720p/seg_5.m4s")
    send(hints, {"nor": "seg_9.m4s"}, "/t/JWT/titles/1/720p/seg_5.m4s")
    assert [(m.key, m.guess) for m in link.sent[6:]] == [("titles/1/720p/seg_6.m4s", False),
                                                         ("titles/1/720p/seg_9.m4s", False)]
    assert hints.guessed == 3


def test_a_guess_does_not_hold_back_the_players_own_hint_for_the_same_object() -> None:
    """The master may have dropped the guess (no slot to spare): when the next request's hint names it, it
    goes again, as a hint (the master starts nothing for a key it is already filling)."""
    hints, link, _ = sender()
    send(hints, {"nor": "seg_5.m4s"}, "/t/JWT/titles/1/720p/seg_4.m4s")
    send(hints, {"nor": "seg_6.m4s"}, "/t/JWT/titles/1/720p/seg_5.m4s")
    send(hints, {"nor": "seg_6.m4s"}, "/t/JWT/titles/1/720p/seg_5.m4s")  # again: neither goes twice
    assert [(m.key, m.guess) for m in link.sent] == [
        ("titles/1/720p/seg_5.m4s", False), ("titles/1/720p/seg_6.m4s", True),
        ("titles/1/720p/seg_6.m4s", False), ("titles/1/720p/seg_7.m4s", True)]
