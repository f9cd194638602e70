"""CMSD (CTA-5006, Common Media Server Data): what a box tells players about an object and about itself.

Pure: header field lines from values; the caller reads the socket and the clock.

Rules kept here (CTA-5006; both fields are RFC 8941 Structured Fields):
- `CMSD-Static` is a Dictionary of keys that hold for every response of the object: `ot` (object type, a
  Token; omitted when the key does not say it: "if the object type is unknown, this key MUST NOT be used"),
  `sf` (streaming format, a Token: h for .m3u8, d for .mpd; omitted for segments, which both formats
  share), `st=v` (every object of a title is available: VOD, the only kind OCA serves). Version 1 is not
  sent (`v` SHOULD be omitted for 1). It is computed once per object, with its other fixed headers.
- `CMSD-Dynamic` is a List with one Item per hop, the hop nearest the client last: the box is the edge,
  so it sends one Item whose value is a String naming it (`"oca-<box id>"`: CTA-5006 has no separate
  "at the edge" key; the edge is the last intermediary of the list), with `etp` (estimated throughput to
  this client, integer kbps, informative formula: 8 * cwnd * mss / rtt from the connection's TCP_INFO),
  and while the box is in duress (over its egress target, or draining) `du` (a Boolean true parameter, sent
  bare; never sent false) and `mb` (max suggested bitrate, integer kbps).
- Values stay inside RFC 8941's Integer range (15 digits) and String alphabet (printable ASCII).
"""

from __future__ import annotations

import struct

_MAX_INTEGER = 999_999_999_999_999  # RFC 8941 §3.3.1
_BY_EXTENSION = {
    "m3u8": "m", "mpd": "m",
    "m4a": "a", "cmfa": "a", "aac": "a",
    "m4v": "v", "cmfv": "v",
    "vtt": "c", "ttml": "c", "srt": "c",
    "cmft": "tt",
    "key": "k",
}
_FORMAT = {"m3u8": "h", "mpd": "d"}
# struct tcp_info (linux/tcp.h): tcpi_snd_mss at 16, tcpi_rtt (µs) at 68, tcpi_snd_cwnd (segments) at 80
_TCP_INFO = struct.Struct("=16xI48xI8xI")
TCP_INFO_BYTES = _TCP_INFO.size


def _name_and_extension(key: str) -> tuple[str, str]:
    name = key.rpartition("/")[2].lower()
    stem, dot, extension = name.rpartition(".")
    return (stem, extension) if dot and stem else (name, "")


def object_type(key: str) -> str | None:
    """CTA-5006 `ot` of a content key, or None when its name does not say (a .m4s may be audio or video)."""
    stem, extension = _name_and_extension(key)
    if stem == "init" or stem.startswith("init_") or stem.endswith("_init") or stem.endswith("-init"):
        return "i"
    return _BY_EXTENSION.get(extension)


def static_field(key: str) -> bytes:
    """The `CMSD-Static` header line of an object (CRLF included)."""
    _, extension = _name_and_extension(key)
    members = []
    kind = object_type(key)
    if kind is not None:
        members.append(f"ot={kind}")
    if extension in _FORMAT:
        members.append(f"sf={_FORMAT[extension]}")
    members.append("st=v")
    return ("CMSD-Static: " + ", ".join(members) + "\r\n").encode("ascii")


def server_name(box_id: str) -> str:
    """The String naming the box in CMSD-Dynamic: printable ASCII without `"` or `\\` (RFC 8941 §3.3.3)."""
    return "oca-" + "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in box_id)[:64]


def duress_params(duress: bool, max_bitrate_bps: int) -> bytes:
    """The parameters a box in duress adds to its CMSD-Dynamic item: `du` and `mb` (kbps; none if 0)."""
    if not duress:
        return b""
    mb = b";mb=%d" % min(_MAX_INTEGER, max(1, round(max_bitrate_bps / 1000))) if max_bitrate_bps > 0 else b""
    return b";du" + mb


def dynamic_field(name: str, etp_kbps: int | None, duress: bytes) -> bytes:
    """The `CMSD-Dynamic` header line (CRLF included): one Item naming the box, `etp` when known, then the
    duress parameters (duress_params)."""
    etp = b"" if etp_kbps is None else b";etp=%d" % min(_MAX_INTEGER, etp_kbps)
    return b'CMSD-Dynamic: "' + name.encode("ascii") + b'"' + etp + duress + b"\r\n"


def etp_from_tcp_info(info: bytes) -> int | None:
    """Estimated throughput in kbps from a TCP_INFO answer: 8 * cwnd * mss / rtt (CTA-5006's informative
    formula, without the receive window, which tcp_info of older kernels lacks); None when not measurable."""
    if len(info) < TCP_INFO_BYTES:
        return None
    mss, rtt_us, cwnd = _TCP_INFO.unpack_from(info)
    if not rtt_us or not mss or not cwnd:
        return None
    return int(cwnd * mss * 8000 // rtt_us)  # bytes/µs * 8000 = kbit/s


def in_duress(draining: bool, egress_bps: int, egress_target_bps: int) -> bool:
    """A box is in duress while draining, or while it sends more than its egress target (0: no target)."""
    return draining or (egress_target_bps > 0 and egress_bps > egress_target_bps)


class Signals:
    """One worker's CMSD-Dynamic state: the box's name and whether it is in duress (the master says so).
    `generation` moves whenever duress changes, so a connection knows its cached field is out of date."""

    __slots__ = ("duress", "generation", "max_bitrate", "name", "params")

    def __init__(self, box_id: str, max_bitrate_bps: int) -> None:
        self.name = server_name(box_id)
        self.max_bitrate = max_bitrate_bps
        self.duress = False
        self.params = b""
        self.generation = 0

    def set_duress(self, duress: bool) -> None:
        if duress != self.duress:
            self.duress = duress
            self.params = duress_params(duress, self.max_bitrate)
            self.generation += 1

    def head_end(self, etp_kbps: int | None) -> bytes:
        """The CMSD-Dynamic line and the blank line that ends a head: what replaces a head's final CRLF."""
        return dynamic_field(self.name, etp_kbps, self.params) + b"\r\n"
