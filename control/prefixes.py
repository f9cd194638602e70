"""Longest-prefix match over IPv4 and IPv6 networks: client address -> the value of its most specific prefix.

Built once from (CIDR, value) pairs, then read-only. Shape: per address family, one dict per prefix length
present, keyed by the network number shifted right past the host bits; a lookup probes the lengths present
from the longest to the shortest, so it costs at most one dict probe per distinct length (33 for IPv4, 129
for IPv6, in practice a dozen) whatever the number of prefixes.

Rules kept here:
- A prefix is `address/length` or a bare address (a host route, /32 or /128). Host bits set, a length out
  of range, or anything `ipaddress` will not parse raises ValueError naming the prefix: a table that quietly
  dropped or widened a prefix would steer clients to the wrong site.
- The same network twice raises ValueError too (the caller merges values first if it means to).
- IPv4 and IPv6 never match each other, except that an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a
  dual-stack socket reports for an IPv4 client) is looked up as the IPv4 address it carries (RFC 4291 §2.5.5.2).
- An invalid client address raises ValueError (the API answers 400); no match returns None.
- Parsing is the start-up cost of a large table (a million prefixes), so a prefix already written in its
  canonical form is read with `socket.inet_pton` (`fast_cidr`); anything else goes through `ipaddress`,
  which decides what is valid and how it is written. Both paths give the same network and the same text.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Match(Generic[V]):
    prefix: str  # the matching network in canonical form, e.g. 192.0.2.0/24
    value: V


class _Family(Generic[V]):
    """The prefixes of one address family."""

    __slots__ = ("bits", "lengths", "tables")

    def __init__(self, bits: int, by_length: dict[int, dict[int, Match[V]]]) -> None:
        self.bits = bits
        self.lengths = tuple(sorted(by_length, reverse=True))  # longest first: the first hit is the answer
        self.tables = tuple((self.bits - length, by_length[length]) for length in self.lengths)

    def lookup(self, number: int) -> Match[V] | None:
        for shift, table in self.tables:
            found = table.get(number >> shift)
            if found is not None:
                return found
        return None


class PrefixTable(Generic[V]):
    """An immutable longest-prefix-match table. `PrefixTable.build([("10.0.0.0/8", x), ...])`."""

    __slots__ = ("_v4", "_v6", "size")

    def __init__(self, v4: _Family[V], v6: _Family[V], size: int) -> None:
        self._v4 = v4
        self._v6 = v6
        self.size = size

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, V]]) -> PrefixTable[V]:
        by_family: dict[int, dict[int, dict[int, Match[V]]]] = {32: {}, 128: {}}
        size = 0
        for text, value in pairs:
            bits, number, length, canonical = parse_cidr(text)
            table = by_family[bits].get(length)
            if table is None:
                table = by_family[bits][length] = {}
            key = number >> (bits - length)
            if key in table:
                raise ValueError(f"prefix {text!r}: duplicate of {table[key].prefix}")
            table[key] = Match(canonical, value)
            size += 1
        return cls(_Family(32, by_family[32]), _Family(128, by_family[128]), size)

    def __len__(self) -> int:
        return self.size

    def lookup(self, address: str | IPAddress) -> Match[V] | None:
        """The most specific prefix holding `address`, or None. A malformed address raises ValueError."""
        ip = parse_address(address) if isinstance(address, str) else address
        if ip.version == 4:
            return self._v4.lookup(int(ip))
        return self._v6.lookup(int(ip))


def fast_cidr(text: str) -> tuple[int, int, int, str] | None:
    """(address bits 32 or 128, network number, prefix length, text) of a prefix written canonically, e.g.
    `192.0.2.0/24` or `2001:db8::/48` (a bare address is a host route); None for anything else (not
    canonical, host bits set, or not a prefix at all), which the caller hands to `ipaddress`."""
    address, slash, length_text = text.partition("/")
    if ":" in address:
        family, bits = socket.AF_INET6, 128
    else:
        family, bits = socket.AF_INET, 32
    if slash:
        if not (length_text.isascii() and length_text.isdigit()) or (length_text[0] == "0" and length_text != "0"):
            return None
        length = int(length_text)
        if length > bits:
            return None
    else:
        length = bits
    try:
        packed = socket.inet_pton(family, address)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    if socket.inet_ntop(family, packed) != address or (bits == 128 and "." in address):
        return None  # not canonical (upper case, zeros, IPv4 embedded in IPv6): ipaddress writes it
    number = int.from_bytes(packed, "big")
    if number & ((1 << (bits - length)) - 1):
        return None  # host bits set: ipaddress says so
    return bits, number, length, text if slash else f"{address}/{bits}"


def parse_cidr(text: str) -> tuple[int, int, int, str]:
    """(address bits 32 or 128, network number, prefix length, canonical text); ValueError as parse_prefix."""
    found = fast_cidr(text) if isinstance(text, str) else None
    if found is not None:
        return found
    network = parse_prefix(text)
    return network.max_prefixlen, int(network.network_address), network.prefixlen, str(network)


def parse_prefix(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """`192.0.2.0/24` -> network; ValueError naming the prefix when it is malformed or has host bits set."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ValueError(f"prefix {text!r}: expected CIDR text such as 192.0.2.0/24 or 2001:db8::/32")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"prefix {text!r}: {exc}") from None


def parse_address(text: str) -> IPAddress:
    """A client address; IPv4-mapped IPv6 becomes the IPv4 address. ValueError names a malformed one."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"client address {text!r}: not an IPv4 or IPv6 address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
