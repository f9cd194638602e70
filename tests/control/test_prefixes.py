"""Longest-prefix match: most specific prefix wins, v4 and v6 apart, malformed input named."""

from __future__ import annotations

import ipaddress
import random

import pytest

from control.prefixes import Match, PrefixTable, fast_cidr, parse_address, parse_cidr

TABLE = PrefixTable.build([
    ("0.0.0.0/0", "v4-default"),
    ("10.0.0.0/8", "ten"),
    ("10.1.0.0/16", "ten-one"),
    ("10.1.2.0/24", "ten-one-two"),
    ("10.1.2.3/32", "host"),
    ("192.0.2.0/24", "doc"),
    ("2001:db8::/32", "v6-doc"),
    ("2001:db8:1::/48", "v6-doc-1"),
    ("2001:db8:1::1/128", "v6-host"),
])


@pytest.mark.parametrize(("address", "prefix", "value"), [
    ("10.1.2.3", "10.1.2.3/32", "host"),
    ("10.1.2.4", "10.1.2.0/24", "ten-one-two"),
    ("10.1.3.1", "10.1.0.0/16", "ten-one"),
    ("10.200.0.1", "10.0.0.0/8", "ten"),
    ("192.0.2.255", "192.0.2.0/24", "doc"),
    ("8.8.8.8", "0.0.0.0/0", "v4-default"),
    ("255.255.255.255", "0.0.0.0/0", "v4-default"),
    ("2001:db8:1::1", "2001:db8:1::1/128", "v6-host"),
    ("2001:db8:1::2", "2001:db8:1::/48", "v6-doc-1"),
    ("2001:db8:ffff::1", "2001:db8::/32", "v6-doc"),
    ("::ffff:10.1.2.3", "10.1.2.3/32", "host"),  # IPv4-mapped: looked up as IPv4
])
def test_the_most_specific_prefix_wins(address: str, prefix: str, value: str) -> None:
    found = TABLE.lookup(address)
    assert found is not None
    assert (found.prefix, found.value) == (prefix, value)


@pytest.mark.parametrize("address", ["2001:db9::1", "::1", "fe80::1"])
def test_ipv6_never_falls_back_to_the_ipv4_default(address: str) -> None:
    assert TABLE.lookup(address) is None


def test_an_ipv6_default_route_matches_every_ipv6_address() -> None:
    table = PrefixTable.build([("::/0", "all"), ("2001:db8::/32", "doc")])
    found = table.lookup("2a00::1")
    assert found is not None and found.value == "all"
    assert table.lookup("192.0.2.1") is None


def test_an_empty_table_matches_nothing() -> None:
    table: PrefixTable[str] = PrefixTable.build([])
    assert len(table) == 0
    assert table.lookup("10.0.0.1") is None
    assert table.lookup("2001:db8::1") is None


def test_a_bare_address_is_a_host_route() -> None:
    table = PrefixTable.build([("192.0.2.7", "h4"), ("2001:db8::7", "h6")])
    assert [m.prefix for m in (table.lookup("192.0.2.7"), table.lookup("2001:db8::7")) if m] == \
        ["192.0.2.7/32", "2001:db8::7/128"]
    assert table.lookup("192.0.2.8") is None


@pytest.mark.parametrize(("prefix", "words"), [
    ("10.0.0.1/8", "host bits"),
    ("10.0.0.0/33", "10.0.0.0/33"),
    ("2001:db8::/129", "2001:db8::/129"),
    ("300.0.0.0/8", "300.0.0.0/8"),
    ("10.0.0.0/-1", "10.0.0.0/-1"),
    ("banana", "banana"),
    ("", "''"),
    (" 10.0.0.0/8", "' 10.0.0.0/8'"),
    ("10.0.0.0/8/8", "10.0.0.0/8/8"),
])
def test_a_malformed_prefix_raises_naming_it(prefix: str, words: str) -> None:
    with pytest.raises(ValueError, match="prefix") as info:
        PrefixTable.build([("192.0.2.0/24", 1), (prefix, 2)])
    assert words in str(info.value)


def test_a_duplicate_network_is_refused_even_spelt_differently() -> None:
    with pytest.raises(ValueError, match="duplicate of 2001:db8::/32"):
        PrefixTable.build([("2001:db8::/32", 1), ("2001:0db8:0::/32", 2)])


@pytest.mark.parametrize("address", ["10.0.0", "10.0.0.256", "", "2001:db8::g", "example.com", "10.0.0.1/32"])
def test_a_malformed_client_address_raises(address: str) -> None:
    with pytest.raises(ValueError, match="client address"):
        TABLE.lookup(address)


def test_parse_address_unwraps_ipv4_mapped_only() -> None:
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(parse_address("2001:db8::1")) == "2001:db8::1"


def test_agrees_with_a_linear_scan_on_random_prefixes() -> None:
    rng = random.Random(7)
    networks: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    while len(networks) < 400:
        if rng.random() < 0.5:
            length = rng.randint(0, 32)
            net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.ip_network(
                (rng.getrandbits(32) >> (32 - length) << (32 - length) if length else 0, length))
        else:
            length = rng.randint(0, 64)
            base = (0x20010DB8 << 96) | rng.getrandbits(96)
            net = ipaddress.ip_network((base >> (128 - length) << (128 - length) if length else 0, length))
        networks.setdefault(net, len(networks))
    table = PrefixTable.build((str(n), v) for n, v in networks.items())
    for _ in range(2000):
        address = ipaddress.ip_address(rng.getrandbits(32)) if rng.random() < 0.5 else \
            ipaddress.ip_address((0x20010DB8 << 96) | rng.getrandbits(96))
        holding = [n for n in networks if n.version == address.version and address in n]
        expected = max(holding, key=lambda n: n.prefixlen, default=None)
        found = table.lookup(str(address))
        assert (found.prefix if found else None) == (str(expected) if expected else None)


def _reference(text: str) -> tuple[int, int, int, str] | None:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    return network.max_prefixlen, int(network.network_address), network.prefixlen, str(network)


ODD_PREFIXES = ["192.0.2.0/24", "192.0.2.1", "0.0.0.0/0", "::/0", "::", "2001:db8::/32", "2001:DB8::/32",
                "2001:db8:0:0::/64", "2001:db8:0::/48", "::ffff:1.2.3.0/120", "::1.2.3.4", "1.2.3.4/024", "1.2.3.0/33",
                "1.2.3.4/24", "01.2.3.0/24", "1.2.3.0/ 24", "1.2.3.0/24x", "fe80::1%eth0", "1:0:0:2::/64",
                "1::2:0:0:0:0:0/128", "1:2:3:4:5:6:7:8", "1.2.3", "256.1.1.1", "1.2.3.0/-1", "1.2.3.0/", "/24", "",
                "2001:db8::/٢٤", "1.2.3.0/24\x00", "1.2.3.0/255.255.255.0", "10.0.0.0/8/8", "2001:db8::1:0:0:0/96"]


@pytest.mark.parametrize("text", ODD_PREFIXES)
def test_parse_cidr_agrees_with_ipaddress(text: str) -> None:
    expected = _reference(text)
    fast = fast_cidr(text)
    assert fast is None or fast == expected  # the fast path only ever answers what ipaddress would
    if expected is None:
        with pytest.raises(ValueError, match="prefix"):
            parse_cidr(text)
    else:
        assert parse_cidr(text) == expected


def test_fast_path_takes_canonical_prefixes_and_agrees_on_random_ones() -> None:
    rng = random.Random(14)
    fast = 0
    for _ in range(3000):
        bits = rng.choice((32, 128))
        length = rng.randrange(bits + 1)
        number = rng.getrandbits(bits)
        if rng.random() < 0.8:
            number &= ~((1 << (bits - length)) - 1)  # most without host bits
        address = ipaddress.IPv4Address(number) if bits == 32 else ipaddress.IPv6Address(number)
        for text in (f"{address}/{length}", f"{address.exploded}/{length}"):
            expected = _reference(text)
            got = fast_cidr(text)
            assert got is None or got == expected, text
            fast += got is not None
            assert (parse_cidr(text) if expected is not None else None) == expected
    assert fast > 2000  # canonical text without host bits takes the fast path


def test_table_built_from_non_canonical_text_answers_canonical_prefixes() -> None:
    table = PrefixTable.build([("2001:DB8:0::/48", "a"), ("10.0.0.0/008", "b"), ("192.0.2.9", "c")])
    assert table.lookup("2001:db8::1") == Match("2001:db8::/48", "a")
    assert table.lookup("10.1.1.1") == Match("10.0.0.0/8", "b")
    assert table.lookup("192.0.2.9") == Match("192.0.2.9/32", "c")
    with pytest.raises(ValueError, match="duplicate of 2001:db8::/48"):
        PrefixTable.build([("2001:db8::/48", 1), ("2001:DB8::/48", 2)])
