"""The nearest site to a point on the globe: a 3-d tree over the sites' unit vectors. Pure.

Why a tree: steering locates a client found only in the coverage table by the nearest site with boxes, and
scanning every site cost 0.37 ms at 2,000 sites (more at 4,000), behind a memo that a fleet with a million
coverage prefixes overflows. The tree answers in O(log n) distance computations.

Rules kept here:
- Distance is the straight-line (chord) distance between unit vectors, which grows with the great-circle
  angle, so the nearest by chord is the nearest by great circle, with no special case at the poles or the
  antimeridian.
- Ties (sites at the same place) go to the smallest site id, as a scan in id order would give.
- Built once per fleet, read-only afterwards; no sites gives None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Vector = tuple[float, float, float]
# A node: (site id, its vector, split axis, nearer subtree, farther subtree) with subtrees None when empty.
_Node = tuple[str, Vector, int, "_Node | None", "_Node | None"]


def unit_vector(latitude: float, longitude: float) -> Vector:
    lat, lon = math.radians(latitude), math.radians(longitude)
    return math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)


def chord2(a: Vector, b: Vector) -> float:
    """Squared chord length between two unit vectors (0 to 4)."""
    dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return dx * dx + dy * dy + dz * dz


class SiteTree:
    """`SiteTree.build([(site_id, latitude, longitude), ...]).nearest(lat, lon)` -> site id or None."""

    __slots__ = ("_root", "size")

    def __init__(self, root: _Node | None, size: int) -> None:
        self._root = root
        self.size = size

    @classmethod
    def build(cls, sites: Iterable[tuple[str, float, float]]) -> SiteTree:
        points = [(site_id, unit_vector(lat, lon)) for site_id, lat, lon in sites]
        return cls(_build(points), len(points))

    def nearest(self, latitude: float, longitude: float) -> str | None:
        if self._root is None:
            return None
        best = _Best()
        _search(self._root, unit_vector(latitude, longitude), best)
        return best.site


class _Best:
    __slots__ = ("d2", "site")

    def __init__(self) -> None:
        self.d2 = math.inf
        self.site = ""


def _build(points: list[tuple[str, Vector]]) -> _Node | None:
    if not points:
        return None
    # Split on the axis where the points spread most: sites cluster (one continent), so a fixed x, y, z
    # cycle would cut some axes that hardly vary.
    spans = [max(p[1][a] for p in points) - min(p[1][a] for p in points) for a in range(3)]
    axis = spans.index(max(spans))
    points.sort(key=lambda p: (p[1][axis], p[0]))
    middle = len(points) // 2
    site_id, vector = points[middle]
    return (site_id, vector, axis, _build(points[:middle]), _build(points[middle + 1:]))


def _search(node: _Node, query: Vector, best: _Best) -> None:
    site_id, vector, axis, low, high = node
    d2 = chord2(query, vector)
    if d2 < best.d2 or (d2 == best.d2 and site_id < best.site):
        best.d2, best.site = d2, site_id
    diff = query[axis] - vector[axis]
    near, far = (low, high) if diff < 0 else (high, low)
    if near is not None:
        _search(near, query, best)
    if far is not None and diff * diff <= best.d2:  # <=: a tie may lie across the split
        _search(far, query, best)
