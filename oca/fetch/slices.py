"""Fixed-size slices of very large objects (a 4 GiB rendition file): pure arithmetic, no I/O.

Rules kept here:
- An object larger than `slice_size` is stored as slices `<key>@slice<n>` of exactly `slice_size` bytes
  (the last one shorter), each fetched with one upstream range request, so a player's range request pulls
  only the slices it covers.
- Slice keys are internal: `is_slice_key` tells the data port to refuse them from clients.
- Content-Range parsing follows RFC 9110 §14.4: `bytes first-last/complete-length`.
"""

from __future__ import annotations

import re

_SLICE = re.compile(r"@slice(\d{6})\Z")
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)\Z")


def slice_key(key: str, index: int) -> str:
    return f"{key}@slice{index:06d}"


def is_slice_key(key: str) -> bool:
    return _SLICE.search(key) is not None


def slice_bounds(index: int, slice_size: int, total: int) -> tuple[int, int]:
    """(first, last) byte offsets, inclusive, of slice `index` of an object of `total` bytes."""
    first = index * slice_size
    return first, min(total, first + slice_size) - 1


def slice_count(total: int, slice_size: int) -> int:
    return (total + slice_size - 1) // slice_size


def covering(first: int, last: int, slice_size: int) -> range:
    """The slice indexes that hold bytes first..last (inclusive)."""
    return range(first // slice_size, last // slice_size + 1)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """(first, last, complete length or None for `*`) of a 206's Content-Range; None if it is not one."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total
