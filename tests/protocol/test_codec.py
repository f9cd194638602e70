"""The master-worker protocol, pure: every message kind round-trips, the previous version's messages decode
in the current code, the handshake picks the version or refuses, and a release's version is read from its slot."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from oca.protocol import codec as protocol
from oca.protocol.codec import SPEAKS, Codec, Dispatch, Lines, ProtocolError
from oca.protocol.messages import (
    ALL_MESSAGES,
    Absent,
    Done,
    Duress,
    Failed,
    FillRequest,
    FillState,
    Fresh,
    Have,
    Hello,
    Moved,
    Opened,
    PlayerReport,
    PrefetchHint,
    Purged,
    Ready,
    Refused,
    Report,
    Sliced,
    SliceMeta,
    SliceRequest,
    Stale,
    Stored,
    Welcome,
)
from oca.protocol.releases import check_release, protocol_of
from oca.protocol.version import LEGACY, VERSION, negotiate, speaks

PLAYER = PlayerReport({"v": 3}, {"v": 1}, {}, 0.25, {"v": 12.0}, [0, 1, 2], 3.5, [1, 0], 250000.0,
                      {"s1": (100.0, None, 101.5), "s2": (None, 99.0, 99.0)})
SAMPLES: list[msgspec.Struct] = [
    Hello((3, 2)),
    Welcome(2, {"server": {"listen": "127.0.0.1:0"}, "storage": {"tiers": [{"name": "ssd"}]}}),
    Refused("no version in common", (2, 1)),
    Ready(),
    Duress(True),
    Duress(False),
    Report(),
    Report([(200, "hit", 5), (404, "miss", 1)], [("ssd", "hit", 1000)], [1, 2, 0], 0.75, {"titles/1/a.m4s": 2},
           [("hdd", "Input/output error")], [("titles/1/b.m4s", "short file")], 7, PLAYER,
           {"first": 3, "evicted": 1, "unknown": 2}, 4),
    FillRequest("titles/1/720p/seg_00001.m4s", 2_000_000, True),
    SliceRequest("titles/1/big.mp4", 3),
    PrefetchHint("titles/1/720p/seg_00002.m4s", None, "6e2fb550-c457-11e9-bb97-0800200c9a66"),
    PrefetchHint("titles/1/big.mp4", 4_194_304),
    PrefetchHint("titles/1/720p/seg_00003.m4s", None, "6e2fb550-c457-11e9-bb97-0800200c9a66", True),
    Stale(("titles/1/a.m4s", "titles/1/b.m4s")),
    Fresh(("titles/1/a.m4s",)),
    Purged(()),
    Opened("titles/1/a.m4s", "/ssd/.tmp/fill-1", 1000, '"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", "video/mp4", "origin"),
    Opened("titles/1/a.m4s@slice3", "/proc/123/fd/9"),
    Opened("titles/1/b.m4s", "/ssd/.tmp/fill-2", 10, None, None, None, "peer:b1", "evicted"),
    Have("titles/1/a.m4s", 65536),
    Moved("titles/1/a.m4s", "/proc/123/fd/12"),
    Done("titles/1/a.m4s", 1000, "/ssd/ab/cd/abcd"),
    Stored("titles/1/a.m4s"),
    Sliced("titles/1/big.mp4", SliceMeta(10_000_000, 4_194_304, '"e"', None, "video/mp4")),
    Sliced("titles/1/big.mp4", SliceMeta(10_000_000, 4_194_304), "first"),
    Absent("titles/9/none.m4s", 30.0),
    Absent("titles/9/none.m4s", 30.0, "first"),
    Failed("titles/1/a.m4s", 504, "origin: first byte timeout"),
    Failed("titles/1/a.m4s", 504, "origin: first byte timeout", "invalidated"),
]


def _decode(codec: Codec, message: msgspec.Struct, line: bytes) -> msgspec.Struct:
    if isinstance(message, Hello):
        return protocol.read_hello(line)
    if isinstance(message, Welcome | Refused):
        return msgspec.json.decode(line, type=Welcome | Refused)
    if isinstance(message, Ready | Report):
        return codec.worker_message(line)
    if isinstance(message, Duress):
        return codec.control_message(line)
    if isinstance(message, FillRequest | SliceRequest | PrefetchHint):
        return codec.ask(line)
    return codec.event(line)


def test_the_samples_cover_every_message_kind() -> None:
    assert {type(m) for m in SAMPLES} == set(ALL_MESSAGES)


# version 1 workers sent their own shapes of Ready and Report (test_version_1_lines_decode); version 1 has no
# Duress (its workers read nothing after the config) and no PrefetchHint (test_version_1_carries_no_prefetch_hint)
ROUND_TRIPS = [pytest.param(m, v, id=f"{type(m).__name__}-v{v}") for m in SAMPLES for v in SPEAKS
               if not (v == LEGACY and isinstance(m, Ready | Report | Duress | PrefetchHint))]


@pytest.mark.parametrize(("message", "version"), ROUND_TRIPS)
def test_every_message_round_trips_in_every_version_spoken(message: msgspec.Struct, version: int) -> None:
    codec = Codec(version)
    line = codec.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert _decode(codec, message, line[:-1]) == message


# What releases before the handshake (protocol version 1) send and expect, byte for byte as their code wrote it.
LEGACY_WORKER_LINES = [
    (b'{"ready":true}', Ready()),
    (b'{"requests":[[200,"hit",3]],"bytes":[["ssd","hit",300]],"duration_buckets":[3,0],"duration_sum":0.01,'
     b'"hits":{"titles/1/a.m4s":3},"io_errors":[],"damaged":[["titles/1/b.m4s","short"]],"connections":2}',
     Report([(200, "hit", 3)], [("ssd", "hit", 300)], [3, 0], 0.01, {"titles/1/a.m4s": 3}, [],
            [("titles/1/b.m4s", "short")], 2)),
    (b'{"requests":[],"bytes":[],"duration_buckets":[],"duration_sum":0.0,"hits":{},"io_errors":[],"damaged":[],'
     b'"connections":0,"player":{"requests":{"v":1},"startup":{},"rebuffers":{},"rebuffer_seconds":0.0,'
     b'"media_seconds":{},"buffer":[1],"buffer_sum":0.5,"bitrate":[1],"bitrate_sum":10.0,'
     b'"sessions":{"s":[1.0,null,1.0]}}}',
     Report(player=PlayerReport({"v": 1}, {}, {}, 0.0, {}, [1], 0.5, [1], 10.0, {"s": (1.0, None, 1.0)}))),
]
LEGACY_ASKS = [
    (b'{"op":"fill","k":"titles/1/a.m4s","start":0,"revalidate":false}', FillRequest("titles/1/a.m4s")),
    (b'{"op":"slice","k":"titles/1/big.mp4","i":2}', SliceRequest("titles/1/big.mp4", 2)),
]


@pytest.mark.parametrize(("line", "message"), LEGACY_WORKER_LINES + LEGACY_ASKS)
def test_version_1_lines_decode(line: bytes, message: msgspec.Struct) -> None:
    codec = Codec(LEGACY)
    decoded = codec.ask(line) if line.startswith(b'{"op"') else codec.worker_message(line)
    assert decoded == message


def test_version_1_workers_read_the_events_the_master_sends() -> None:
    """A version-1 worker read events as dicts by these names (with dict.get, so a key it does not know, such
    as version 2's `why`, is passed over): the encoding keeps them."""
    as_read = msgspec.json.decode(Codec(LEGACY).encode(Opened("k", "/p", 5, None, "lm", "video/mp4", "peer")))
    assert as_read == {"ev": "open", "k": "k", "path": "/p", "size": 5, "etag": None, "lm": "lm",
                       "type": "video/mp4", "src": "peer", "why": ""}
    sliced = msgspec.json.decode(Codec(LEGACY).encode(Sliced("k", SliceMeta(10, 4))))
    assert sliced == {"ev": "sliced", "k": "k", "meta": {"total": 10, "slice_size": 4, "etag": None,
                                                         "last_modified": None, "content_type": None}, "why": ""}
    absent = msgspec.json.decode(Codec(LEGACY).encode(Absent("k", 5.0, "first")))
    assert absent == {"ev": "absent", "k": "k", "ttl": 5.0, "why": "first"}
    failed = msgspec.json.decode(Codec(LEGACY).encode(Failed("k", 504, "timeout")))
    assert failed == {"ev": "fail", "k": "k", "status": 504, "reason": "timeout", "why": ""}
    assert Codec(LEGACY).encode_config({"a": 1}) == b'{"a":1}\n'


def test_version_2_events_without_why_decode() -> None:
    """`why` was added to version 2 before any release sent it: an event without it reads as no reason."""
    codec = Codec(VERSION)
    assert codec.event(b'{"ev":"fail","k":"k","status":502,"reason":"r"}') == Failed("k", 502, "r", "")
    assert codec.worker_message(b'{"t":"report","connections":1}') == Report(connections=1)


def test_version_1_carries_no_prefetch_hint() -> None:
    """A master of version 1 has no PrefetchHint: a codec of that version neither writes nor reads one, and
    says so (the worker checks `carries` first and sends nothing, oca.fetch.remote.RemoteFills.hint)."""
    legacy = Codec(LEGACY)
    assert not legacy.carries(PrefetchHint) and legacy.carries(FillRequest) and Codec(VERSION).carries(PrefetchHint)
    with pytest.raises(ProtocolError, match="PrefetchHint is not a message of protocol version 1"):
        legacy.encode(PrefetchHint("k"))
    with pytest.raises(ProtocolError, match="PrefetchHint is not a message of protocol version 1"):
        legacy.ask(Codec(VERSION).encode(PrefetchHint("k"))[:-1])


@pytest.mark.parametrize("line", [
    b"not json", b'{"ev":"have","k":"a"}', b'{"ev":"have","k":3,"n":1}', b'{"ev":"nope","k":"a"}', b"[]",
    b'{"op":"slice","k":"a","i":-1}', b'{"op":"prefetch","k":"a","start":-1}', b'{"op":"prefetch","start":0}',
])
def test_a_line_that_is_not_a_message_is_a_protocol_error(line: bytes) -> None:
    codec = Codec(VERSION)
    with pytest.raises(ProtocolError, match="unreadable"):
        codec.event(line) if b'"ev"' in line or not line.startswith(b'{"op"') else codec.ask(line)


def test_the_handshake_frames_never_change() -> None:
    """Hello and its answers are how two releases find a version: their bytes are fixed for all versions."""
    assert protocol.encode_answer(Welcome(7, {"x": 1})) == b'{"t":"welcome","v":7,"config":{"x":1}}\n'
    assert protocol.encode_answer(Refused("r", (2, 1))) == b'{"t":"refused","reason":"r","speaks":[2,1]}\n'
    assert protocol.hello() == b'{"t":"hello","speaks":[%d,%d]}\n' % SPEAKS
    assert protocol.read_hello(b'{"t":"hello","speaks":[9]}') == Hello((9,))


@pytest.mark.parametrize(("ours", "theirs", "chosen"), [
    ((2, 1), (2, 1), 2),
    ((2, 1), (3, 2), 2),  # a release one version ahead talks the master's version
    ((3, 2), (2, 1), 2),  # ... and one behind (a revert) its own
    ((2, 1), (1,), 1),  # a release from before the handshake
    ((2, 1), (4, 3), None),  # two ahead: nothing in common
    ((4, 3), (2, 1), None),
])
def test_negotiate_picks_the_highest_common_version(ours: tuple[int, ...], theirs: tuple[int, ...],
                                                   chosen: int | None) -> None:
    assert negotiate(ours, theirs) == chosen


def test_speaks_the_version_and_the_one_before() -> None:
    assert speaks(3) == (3, 2) and speaks(1) == (1,)
    assert speaks(VERSION) == SPEAKS


def test_the_master_answers_a_hello_with_the_version_and_the_config_or_refuses_it() -> None:
    config = {"server": {"workers": 2}}
    assert protocol.answer(Hello((VERSION + 1, VERSION)), config) == Welcome(VERSION, config)
    refused = protocol.answer(Hello((VERSION + 2, VERSION + 1)), config)
    assert isinstance(refused, Refused) and refused.speaks == SPEAKS
    assert refused.reason == (f"the worker speaks protocol versions [{VERSION + 2}, {VERSION + 1}], this master "
                              f"speaks {list(SPEAKS)}: no version in common")


def test_a_worker_reads_its_welcome_or_the_reason_it_was_refused() -> None:
    assert protocol.read_answer(protocol.encode_answer(Welcome(VERSION, {"a": 1}))[:-1]) == Welcome(VERSION, {"a": 1})
    with pytest.raises(ProtocolError, match="the master refused this worker: too new"):
        protocol.read_answer(protocol.encode_answer(Refused("too new"))[:-1])
    with pytest.raises(ProtocolError, match="chose protocol version 9"):
        protocol.read_answer(protocol.encode_answer(Welcome(9, {}))[:-1])
    with pytest.raises(ProtocolError, match="unreadable answer to hello"):
        protocol.read_answer(b'{"ready":true}')


def test_lines_keep_a_partial_line_for_later() -> None:
    lines = Lines()
    assert lines.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert lines.feed(b":2}\n\n") == [b'{"b":2}', b""]
    assert lines.feed(b"") == []


def test_dispatch_runs_the_handler_of_the_message_type() -> None:
    seen: list[tuple[str, object, object]] = []
    dispatch = Dispatch[object]({Have: lambda m, ctx: seen.append(("have", m, ctx)),
                                 Done: lambda m, ctx: seen.append(("done", m, ctx))})
    dispatch(Have("k", 1), "link")
    dispatch(Done("k", 2), "link")
    assert seen == [("have", Have("k", 1), "link"), ("done", Done("k", 2), "link")]
    with pytest.raises(ProtocolError, match="no handler for Stored"):
        dispatch(Stored("k"), "link")


def test_fill_states() -> None:
    assert not FillState.RUNNING and not FillState.RUNNING.ended
    assert [s for s in FillState if s.failed] == [FillState.ABSENT, FillState.FAIL]


# -- a release's version, from its slot -------------------------------------------------------------------


def _slot(tmp_path: Path, version_file: str | None, worker: bool = True) -> str:
    slot = tmp_path / "slot"
    (slot / "oca" / "serve").mkdir(parents=True)
    if worker:
        (slot / "oca" / "serve" / "worker.py").write_text("")
    if version_file is not None:
        (slot / "oca" / "protocol").mkdir()
        (slot / "oca" / "protocol" / "version.py").write_text(version_file)
    return str(slot)


def test_the_version_is_read_from_the_slot_without_running_it(tmp_path: Path) -> None:
    slot = _slot(tmp_path, '"""doc"""\nimport sys\nsys.exit(3)\nLEGACY = 1\nVERSION = 7\n')
    assert protocol_of(slot) == 7


def test_this_checkout_reads_as_its_own_version() -> None:
    import oca

    assert protocol_of(str(Path(oca.__file__).parent.parent)) == VERSION


def test_a_slot_from_before_the_protocol_is_version_1(tmp_path: Path) -> None:
    assert protocol_of(_slot(tmp_path, None)) == LEGACY


@pytest.mark.parametrize(("text", "worker", "problem"), [
    (None, False, "holds neither oca/protocol/version.py nor a worker: not a release"),
    ("VERSION = '2'\n", True, "has no `VERSION = <integer>` line"),
    ("VERSION = True\n", True, "has no `VERSION = <integer>` line"),
    ("VERSION = (\n", True, "is not Python"),
])
def test_a_slot_without_a_readable_version_is_named(tmp_path: Path, text: str | None, worker: bool,
                                                    problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        protocol_of(_slot(tmp_path, text, worker))


@pytest.mark.parametrize(("their_version", "chosen"), [
    (VERSION, VERSION), (VERSION + 1, VERSION), (VERSION - 1, VERSION - 1), (VERSION + 2, None),
])
def test_check_release_refuses_a_release_two_versions_away(tmp_path: Path, their_version: int,
                                                           chosen: int | None) -> None:
    slot = _slot(tmp_path, f"VERSION = {their_version}\n")
    if chosen is not None:
        assert check_release(slot, "9.0") == chosen
        return
    with pytest.raises(ProtocolError) as refused:
        check_release(slot, "9.0")
    assert str(refused.value) == (
        f"release 9.0 speaks master-worker protocol versions [{VERSION + 2}, {VERSION + 1}]; this master speaks "
        f"{list(SPEAKS)}: switch through a release in between, or upgrade the installed oca first")


def test_the_masters_own_code_needs_no_slot() -> None:
    assert check_release(None, "builtin") == VERSION
