"""Stream popularity for the eviction policy: video objects come in streams, read in order by sessions.

A stream is a key's directory (`titles/<title>/<rendition>/`): one rendition of one title, whose segments
each session reads once, in order. An object's own read count says little about such an object (a session
reads it once, the next session of the title comes minutes later), but its stream's recent history says a
lot: when the objects of a stream are being read again (hits, or keys returning from the ghost), the next
session of that title will most likely read the objects the last one just fetched.

Rules kept here:
- Per stream, two small counts over the stream's own recent requests: how many there were, and how many were
  for an object the cache still remembered (held, or in the ghost). Both halve when the request count
  reaches `window`, so the counts follow the stream's recent requests without any clock or periodic walk.
- A stream is hot when, over at least `min_requests` of its recent requests, the share that returned is at
  least `hot_share`: its objects are read again while the cache still remembers them.
- Bounded: at most `limit` streams, least recently requested dropped first (a dropped stream is cold).
- Keys without a directory belong to no stream and are never hot.
- Pure: no I/O, no clock; the policy tells it about requests and asks about keys.
"""

from __future__ import annotations

from collections import OrderedDict

STREAM_LIMIT = 65536  # streams remembered; a few MB at most (a key's directory and one int each)
WINDOW = 64  # requests of one stream its counts cover, about: both halve when the count reaches it
MIN_REQUESTS = 8  # a stream needs this many recent requests before it can be hot
HOT_SHARE = 0.2  # of a stream's recent requests, returns needed for it to be hot (README: 0.1-0.3 measured alike)

_BITS = 16  # one int per stream: returns << _BITS | requests


def stream_of(key: str) -> str:
    """The key's directory ('' when it has none: no stream)."""
    return key[:key.rfind("/") + 1]


class Streams:
    def __init__(self, limit: int = STREAM_LIMIT, window: int = WINDOW, min_requests: int = MIN_REQUESTS,
                 hot_share: float = HOT_SHARE) -> None:
        if limit < 1 or not 1 < window < 1 << _BITS or min_requests < 1 or not 0 < hot_share <= 1:
            raise ValueError(f"bad stream settings: limit {limit}, window {window}, "
                             f"min_requests {min_requests}, hot_share {hot_share}")
        self.limit, self.window, self.min_requests, self.hot_share = limit, window, min_requests, hot_share
        self._counts: OrderedDict[str, int] = OrderedDict()  # stream -> returns << _BITS | requests

    def request(self, key: str, returning: bool) -> bool:
        """A request for `key` reached the cache: `returning` when the cache remembered the key (a hit, or a
        key coming back from the ghost). Returns `hot(key)` as it is after counting this request (a new key
        asks both: one look-up of its stream instead of two)."""
        stream = key[:key.rfind("/") + 1]  # stream_of, inline: a request per hit and per miss
        if not stream:
            return False
        counts = self._counts
        packed = counts.get(stream)
        if packed is None:
            if len(counts) >= self.limit:
                counts.popitem(last=False)
            packed = 0
        else:
            counts.move_to_end(stream)
        requests = (packed & ((1 << _BITS) - 1)) + 1
        returns = (packed >> _BITS) + returning
        if requests >= self.window:
            requests >>= 1
            returns >>= 1
        counts[stream] = returns << _BITS | requests
        return requests >= self.min_requests and returns >= self.hot_share * requests

    def hot(self, key: str) -> bool:
        packed = self._counts.get(stream_of(key))
        if packed is None:
            return False
        requests = packed & ((1 << _BITS) - 1)
        return requests >= self.min_requests and (packed >> _BITS) >= self.hot_share * requests

    def __len__(self) -> int:
        return len(self._counts)
