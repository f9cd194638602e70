"""A worker's half of player-aware prefetch: read CMCD `nor`/`nrr`, check it, pass it to the master.

CTA-5004 §3.3: `nor` is the path of the next object the player will request, relative to the current
request's URL (v1: a URL-encoded string; CTA-5004-A and hls.js ≥ 1.6: an inner list of strings, each with
an optional `r` parameter, "start-end", for a range); `nrr` (v1) is the byte range, "start-end", of the next
request, of the `nor` object or, without `nor`, of the current one. Hints are only hints: nothing here
ever fails or delays the request that carried them.

Rules kept here:
- The next object is resolved against the request-target as the player sent it, token segment included
  (RFC 3986 §5.2, as the player will resolve it). A hint that leaves the box (another scheme or host),
  leaves the request's token (`/t/<jwt>/` is not its prefix) or is not a valid key is dropped.
- Never for a token the request could not use: the token that let this request in must also let the
  next object in (its `cdniuc` scope, its address binding), checked by the same Gate as any request.
- A hint for another stream is re-based: hls.js (1.7.4, cmcd-controller getNextFrag) looks an alternate
  audio fragment's next object up in the *video* levels, so every audio request names the next segment of a
  video rendition. A hint is taken as the same stream's next object in the request's own directory (its
  file name kept) when it names a directory this session has requested a different media object type
  (CMCD `ot`: a, v, av, c, tt) from than the request's.
- Lookahead, the one guess besides: when a request's hint names the object that follows the request's own
  in its directory by the file name's number (seg_00007 after seg_00006: `successor`), the player has shown
  that it reads that stream in order, so the object after the hinted one is passed on too, marked as the
  box's guess. Why: a player that asks for segments back to back (start-up, the buffer refilling after a
  switch up) asks for the hinted one some tens of ms after the hint, while a fill under load takes longer
  than that to be stored (upstream, fsync, adopt): one object ahead gives the fill a whole request's lead.
  The master starts a guess once the session's hint fill in its directory is stored, in the slot that
  fill leaves, or else only with a slot to spare (oca.fetch.hints): it never shares the upstream with, nor
  takes the place of, a player's own hint. A switch needs no rule of its own: the first request in the new
  rendition names its next segment, so the two after it are fetched at once. Not for a range hint (a byte
  range of one file is not a numbered sequence).
- At most MAX_HINTS next objects per request; a key hinted in the last RECENT seconds by this worker, held
  by it, or being filled for it is not passed on again (the master checks the rest, oca.fetch.hints). A
  key only guessed is still passed on when a player's hint names it: the master may have dropped the guess
  (no slot to spare), and starts nothing for a key it is already filling.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import NamedTuple

from oca.errors import BadRequest
from oca.fetch.remote import RemoteFills
from oca.fetch.slices import slice_key
from oca.serve.gate import Gate
from oca.serve.objects import ObjectCache

MAX_HINTS = 2
RECENT = 5.0  # seconds
MAX_RECENT = 4096
MAX_TYPES = 20_000  # (session, directory) -> CMCD ot remembered, per worker
MAX_SESSION_CHARS = 64  # CTA-5004 suggests a UUID (36) for sid; a longer one is cut, not refused
_STREAM_TYPES = frozenset(("a", "v", "av", "c", "tt"))  # media object types; not m (manifest), i (init), k, o
_BASE = "http://box"  # any absolute base: only the path of the result is used


class Hint(NamedTuple):
    target: str  # the next object's request-target (path only)
    start: int | None  # first byte of the hinted range, None for the whole object


def _range_start(value: object) -> int | None:
    """"start-end" or "start-" -> start; None when absent or unreadable (a suffix range "-n" too)."""
    if not isinstance(value, str):
        return None
    first = value.partition("-")[0].strip()
    return int(first) if first.isdigit() and len(first) < 20 else None


def next_objects(cmcd: Mapping[str, object], target: str) -> list[Hint]:
    """The next objects a request's CMCD names, resolved against its request-target (pure)."""
    nor = cmcd.get("nor")
    entries: list[tuple[str, int | None]] = []
    if nor is None:
        start = _range_start(cmcd.get("nrr"))
        if start is not None:  # nrr alone: a range of the current object
            entries.append(("", start))
    else:
        items = nor if isinstance(nor, list) else nor.get("value") if isinstance(nor, dict) else [nor]
        if isinstance(items, str):
            items = [items]
        for item in items[:MAX_HINTS] if isinstance(items, list) else []:
            range_value: object = None
            if isinstance(item, dict):
                params = item.get("params")
                item, range_value = item.get("value"), params.get("r") if isinstance(params, dict) else None
            if not isinstance(item, str) or not item:
                continue
            start = _range_start(range_value if range_value is not None else cmcd.get("nrr"))
            entries.append((urllib.parse.unquote(item), start))
    base = _BASE + target.partition("?")[0]
    hints = []
    for relative, start in entries:
        resolved = urllib.parse.urlsplit(urllib.parse.urljoin(base, relative) if relative else base)
        if f"{resolved.scheme}://{resolved.netloc}" != _BASE:
            continue
        hints.append(Hint(urllib.parse.quote(resolved.path, safe="/:@!$&'()*+,;=-._~%"), start))
    return hints


def successor(name: str) -> str | None:
    """The file name after `name` in a numbered sequence: its last number plus one, zero padding kept
    (seg_00009.m4s -> seg_00010.m4s, 99.ts -> 100.ts); None for a name with no number (pure)."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    end = len(stem)
    while end and not stem[end - 1].isdigit():
        end -= 1
    begin = end
    while begin and stem[begin - 1].isdigit():
        begin -= 1
    if begin == end or end - begin > 18:
        return None
    number = str(int(stem[begin:end]) + 1).zfill(end - begin)
    return f"{stem[:begin]}{number}{stem[end:]}{dot}{extension}"


def lookahead(current: str, hinted: str) -> str | None:
    """The key after `hinted` when the hint names the object after `current` in its directory (module
    rules); None otherwise (pure)."""
    directory, _, name = current.rpartition("/")
    hinted_dir, _, hinted_name = hinted.rpartition("/")
    if hinted_dir != directory or successor(name) != hinted_name:
        return None
    after = successor(hinted_name)
    return None if after is None else f"{directory}/{after}"


class HintSender:
    """Checks a request's hints and passes the good ones to the master over the fill link."""

    def __init__(self, fills: RemoteFills, objects: ObjectCache, parse: Callable[[bytes], tuple[str, str, str | None,
                 bytes]], clock: Callable[[], float] = time.monotonic) -> None:
        self._fills, self._objects, self._parse, self._clock = fills, objects, parse, clock
        self._recent: dict[str, float] = {}
        self._types: dict[tuple[str, str], str] = {}  # (session, directory) -> the media type it served it
        self.refused = 0  # hints dropped here because the request's token does not cover the next object
        self.rebased = 0  # hints for another stream taken as this stream's next object (module rules)
        self.guessed = 0  # lookaheads sent: the object after a hinted one in a stream read in order (module rules)

    def send(self, cmcd: Mapping[str, object], target: bytes, current: str, token: str | None, client: str,
             gate: Gate | None, session: str) -> None:
        """Pass on the next objects named by the CMCD of a request for `current` (its key)."""
        session = session[:MAX_SESSION_CHARS]  # what is remembered of a sid, here and upstream
        directory = current.rpartition("/")[0]
        kind = cmcd.get("ot")
        if kind not in _STREAM_TYPES or not isinstance(kind, str):
            kind = None
        elif self._types.get((session, directory)) != kind:
            if len(self._types) >= MAX_TYPES:
                self._types.clear()
            self._types[(session, directory)] = kind
        for hint in next_objects(cmcd, target.decode("latin-1")):
            try:
                key, _, next_token, _ = self._parse(hint.target.encode("latin-1"))
            except BadRequest:
                continue
            hinted_dir, _, name = key.rpartition("/")
            if kind is not None and hinted_dir != directory and self._types.get((session, hinted_dir), kind) != kind:
                key = f"{directory}/{name}"
                self.rebased += 1
            if next_token != token:
                self.refused += 1
                continue
            if gate is not None and gate.check(token, key, client, None)[0] is not None:
                self.refused += 1
                continue
            self._pass_on(key, hint.start, session)
            after = lookahead(current, key) if hint.start is None else None
            if after is not None and (gate is None or gate.check(token, after, client, None)[0] is None):
                self.guessed += self._pass_on(after, None, session, guess=True)

    def _pass_on(self, key: str, start: int | None, session: str, guess: bool = False) -> bool:
        """Send the hint unless it is held, being filled for this worker, or sent a moment ago; whether sent."""
        sliced = self._fills.sliced.get(key)
        held = key
        if sliced is not None and start is not None:
            held = slice_key(key, start // sliced.slice_size)
        entry = self._objects.get(held)
        if (entry is not None and not entry.stale) or held in self._fills.fills:
            return False
        now = self._clock()
        recent = self._recent
        memo = f"{held}\x00{start}"
        guessed = f"{memo}\x00guess"  # a guess the master may have dropped must not hold back the hint itself
        if recent.get(memo, 0.0) > now or (guess and recent.get(guessed, 0.0) > now):
            return False
        if guess:
            memo = guessed
        if len(recent) >= MAX_RECENT:
            self._recent = recent = {k: t for k, t in recent.items() if t > now}
            if len(recent) >= MAX_RECENT:
                recent.clear()
        recent[memo] = now + RECENT
        self._fills.hint(key, start, session, guess)
        return True
