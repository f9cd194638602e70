"""oca.http.cmsd: CTA-5006 headers from values, read back with an independent RFC 8941 parser (http-sfv)."""

from __future__ import annotations

import struct

import http_sfv
import pytest

from oca.http.cmsd import (
    TCP_INFO_BYTES,
    Signals,
    duress_params,
    dynamic_field,
    etp_from_tcp_info,
    in_duress,
    object_type,
    server_name,
    static_field,
)

# CTA-5006 §"Object type": the tokens a CMSD-Static `ot` may carry
OBJECT_TYPES = {"m", "a", "v", "av", "i", "c", "tt", "k", "o"}


def _value(line: bytes, name: bytes) -> bytes:
    assert line.startswith(name + b": ") and line.endswith(b"\r\n"), line
    return line[len(name) + 2:-2]


def parse_static(line: bytes) -> dict[str, object]:
    field = http_sfv.Dictionary()
    field.parse(_value(line, b"CMSD-Static"))
    return {key: item.value for key, item in field.items()}


def parse_dynamic(line: bytes) -> list[tuple[object, dict[str, object]]]:
    field = http_sfv.List()
    field.parse(_value(line, b"CMSD-Dynamic"))
    return [(item.value, dict(item.params)) for item in field]


@pytest.mark.parametrize("key, ot, sf", [
    ("titles/1/master.m3u8", "m", "h"),
    ("titles/1/720p/index.m3u8", "m", "h"),
    ("titles/1/manifest.mpd", "m", "d"),
    ("titles/1/720p/init.mp4", "i", None),
    ("titles/1/audio/init.m4s", "i", None),
    ("titles/1/720p/seg_00001.m4s", None, None),  # audio or video: unknown, so not said (CTA-5006)
    ("titles/1/720p/seg_00001.ts", None, None),
    ("titles/1/a/track.cmfa", "a", None),
    ("titles/1/v/track.cmfv", "v", None),
    ("titles/1/subs/en.vtt", "c", None),
    ("titles/1/subs/en.cmft", "tt", None),
    ("titles/1/poster.jpg", None, None),
])
def test_cmsd_static_says_the_object_type_and_format(key: str, ot: str | None, sf: str | None) -> None:
    assert object_type(key) == ot
    parsed = parse_static(static_field(key))
    assert parsed.get("ot") == ot and parsed.get("sf") == sf and parsed["st"] == "v"
    for token in ("ot", "sf", "st"):
        if token in parsed:
            assert isinstance(parsed[token], http_sfv.Token)  # Tokens, not Strings (CTA-5006)
    assert "v" not in parsed  # version 1 is not sent
    assert ot is None or ot in OBJECT_TYPES


def test_cmsd_dynamic_names_the_box_with_its_throughput() -> None:
    [(name, params)] = parse_dynamic(dynamic_field(server_name("a1"), 123_456, b""))
    assert name == "oca-a1" and isinstance(name, str) and not isinstance(name, http_sfv.Token)
    assert params == {"etp": 123_456}
    assert parse_dynamic(dynamic_field("oca-a1", None, b"")) == [("oca-a1", {})]


def test_a_box_in_duress_says_du_and_mb_in_kbps() -> None:
    [(_, params)] = parse_dynamic(dynamic_field("oca-a1", 900, duress_params(True, 1_500_000)))
    assert params == {"etp": 900, "du": True, "mb": 1500}
    [(_, params)] = parse_dynamic(dynamic_field("oca-a1", 900, duress_params(True, 0)))
    assert params == {"etp": 900, "du": True}  # no max bitrate configured: no `mb`
    assert duress_params(False, 1_500_000) == b""  # `du` is never sent false


@pytest.mark.parametrize("box_id", ['box "7"', "b\\1", "bö", "x" * 200, "a\r\nX-Evil: 1"])
def test_any_box_id_makes_a_valid_string(box_id: str) -> None:
    [(name, _)] = parse_dynamic(dynamic_field(server_name(box_id), 1, b""))
    assert isinstance(name, str) and name.startswith("oca-") and len(name) <= 68 and "\r" not in name


def _tcp_info(mss: int, rtt_us: int, cwnd: int) -> bytes:
    info = bytearray(TCP_INFO_BYTES + 100)  # a newer kernel's answer is longer: only the prefix is read
    struct.pack_into("=I", info, 16, mss)
    struct.pack_into("=I", info, 68, rtt_us)
    struct.pack_into("=I", info, 80, cwnd)
    return bytes(info)


def test_etp_is_eight_cwnd_mss_over_rtt() -> None:
    # 10 segments of 1448 bytes per 20 ms: 14480 bytes / 0.02 s = 5.792 Mbit/s
    assert etp_from_tcp_info(_tcp_info(1448, 20_000, 10)) == 5792
    assert etp_from_tcp_info(_tcp_info(1448, 0, 10)) is None  # no RTT sample yet
    assert etp_from_tcp_info(b"\0" * 20) is None  # too short to hold the fields


@pytest.mark.parametrize("draining, egress, target, duress", [
    (False, 10**9, 0, False),  # no egress target: load alone is never duress
    (False, 10**9, 2 * 10**9, False),
    (False, 3 * 10**9, 2 * 10**9, True),
    (True, 0, 0, True),  # draining: players should move on
])
def test_duress(draining: bool, egress: int, target: int, duress: bool) -> None:
    assert in_duress(draining, egress, target) is duress


def test_signals_move_their_generation_only_when_duress_changes() -> None:
    signals = Signals("a1", 1_500_000)
    first = signals.generation
    signals.set_duress(False)
    assert signals.generation == first
    signals.set_duress(True)
    assert signals.generation == first + 1
    end = signals.head_end(50)
    assert end.endswith(b"\r\n\r\n")
    assert parse_dynamic(end[:-2]) == [("oca-a1", {"etp": 50, "du": True, "mb": 1500})]
    signals.set_duress(True)
    assert signals.generation == first + 1
