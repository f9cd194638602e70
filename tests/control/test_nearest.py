"""control.nearest: the 3-d tree gives the site a scan of every site gives, ties to the smallest id."""

from __future__ import annotations

import random

import pytest

from control.nearest import SiteTree, chord2, unit_vector


def _scan(sites: list[tuple[str, float, float]], lat: float, lon: float) -> str:
    query = unit_vector(lat, lon)
    return min(sites, key=lambda s: (chord2(query, unit_vector(s[1], s[2])), s[0]))[0]


@pytest.mark.parametrize("count", [1, 2, 7, 200, 2000])
def test_the_tree_agrees_with_a_scan_of_every_site(count: int) -> None:
    rng = random.Random(count)
    sites = [(f"s{i:04d}", rng.uniform(-90, 90), rng.uniform(-180, 180)) for i in range(count)]
    tree = SiteTree.build(sites)
    for _ in range(300):
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        assert tree.nearest(lat, lon) == _scan(sites, lat, lon), (lat, lon)


def test_clustered_sites_across_the_antimeridian_and_the_poles() -> None:
    sites = [("fiji", -17.7, 178.0), ("samoa", -13.8, -172.1), ("north", 89.9, 10.0), ("also-north", 89.9, -170.0)]
    tree = SiteTree.build(sites)
    assert tree.nearest(-16.0, -179.5) == "fiji"  # 179.5 W is next to 178 E, not to the far side of the map
    assert tree.nearest(-14.0, -171.0) == "samoa"
    assert tree.nearest(90.0, 0.0) == _scan(sites, 90.0, 0.0)


def test_sites_at_the_same_place_go_to_the_smallest_id() -> None:
    sites = [("b", 52.37, 4.90), ("a", 52.37, 4.90), ("c", 52.37, 4.90), ("far", 40.7, -74.0)]
    assert SiteTree.build(sites).nearest(52.0, 5.0) == "a"
    assert SiteTree.build(list(reversed(sites))).nearest(52.0, 5.0) == "a"


def test_no_sites_is_none() -> None:
    assert SiteTree.build([]).nearest(0.0, 0.0) is None
