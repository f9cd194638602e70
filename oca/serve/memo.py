"""The response-plan memo: request bytes a worker answered as a plain hit from memory -> the object it sent.

A player asks for the same few targets again and again (playlist reloads, segments every client of a title
fetches) with byte-identical request heads. Whatever the handler decided for those bytes it decides again
while nothing it read has changed, so a head seen before skips the parser, the handler and the head
building: the connection writes the object's current head (Date of now, its CMSD line) and body, and
records the hit exactly as the normal path does.

Rules kept here:
- Only a plain keep-alive GET answered 200 from the memory cache with the object's own log fields is
  remembered (oca.serve.handler._fast_hit), and only when the bytes were one whole request head, nothing
  before or after it in the same read (oca.serve.connection). Anything else (Range, a precondition, CMCD,
  HEAD, a body, Connection: close, pipelined or partial heads) never gets here: its bytes differ, or its
  answer was not a plain hit.
- An answer stays remembered only while every input of the decision is unchanged: the object cache's
  generation (it moves when the store's generation moves: a purge, an eviction, a replace, a tier's state;
  the memo is then dropped whole), the object's entry still the key's current one and holding its body
  (a forgotten or evicted entry drops its body: oca.serve.objects), and the token grant (a request-target
  is let through only until its token expires: an expired grant takes the normal path, which verifies the
  token again and refuses it).
  Config does not change inside a worker (a reload starts new workers).
- Bounded (issue 20: every per-key table of a worker): at most MAX_PLANS requests of at most MAX_REQUEST
  bytes each; a new one pushes out the oldest. A plan holds no body of its own, only the cache's entry,
  so the memory is the keys' (at most MAX_PLANS x MAX_REQUEST) and the entries', never a body the cache
  has let go.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from oca.serve.objects import CachedObject, ObjectCache

MAX_PLANS = 4096
MAX_REQUEST = 2048  # bytes of a request head worth remembering (a token-carrying GET is ~600)
FOREVER = float("inf")  # the grant of a request no token gates


class ResponseMemo:
    """Request bytes -> (the cached object answered, until when the token grant lets it through)."""

    __slots__ = ("_clock", "_generation", "_objects", "_plans", "_word", "_word_seen", "max_plans")

    def __init__(self, objects: ObjectCache, clock: Callable[[], float] = time.time,
                 max_plans: int = MAX_PLANS) -> None:
        self._objects = objects
        self._clock = clock  # epoch seconds, as token expiries are
        self._plans: dict[bytes, tuple[CachedObject, float]] = {}  # oldest first
        self._generation = objects.generation
        # the store's generation word, read on every look-up without a call; only a value other than the one
        # last seen asks the object cache to sync (which drops it whole when the store moved)
        self._word = objects.generation_word
        self._word_seen = self._word[0]
        self.max_plans = max_plans

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, raw: bytes) -> CachedObject | None:
        """The object to answer `raw` with, if the same bytes were answered as a plain hit and nothing the
        answer depended on has changed since; its body is in memory. It counts as a use of the object."""
        plan = self._plans.get(raw)
        if plan is None:
            return None
        if self._word[0] != self._word_seen or self._objects.generation != self._generation:
            return self._store_moved(raw)
        entry, until = plan
        # a body still held means the entry is still its key's current one (oca.serve.objects)
        if entry.body is None or until <= self._clock():
            del self._plans[raw]  # the normal path decides afresh (and remembers again if it may)
            return None
        entry.used = True  # ObjectCache.touch, inline: the hit path's most common use of an entry
        return entry

    def _store_moved(self, raw: bytes) -> CachedObject | None:
        """The generation word moved: let the object cache sync, and drop every plan if it dropped itself."""
        self._word_seen = self._word[0]
        if self._objects.sync() != self._generation:  # the store moved: nothing remembered stands
            self._plans.clear()
            self._generation = self._objects.generation
            return None
        return self.get(raw)

    def put(self, raw: bytes, entry: CachedObject, until: float) -> None:
        """Remember that `raw` was answered with `entry`'s plain hit, let through until `until` (epoch s)."""
        if len(raw) > MAX_REQUEST or entry.body is None:
            return
        plans = self._plans
        generation = self._objects.generation
        if generation != self._generation:
            plans.clear()
            self._generation = generation
        if raw not in plans and len(plans) >= self.max_plans:
            del plans[next(iter(plans))]
        plans[raw] = (entry, until)
