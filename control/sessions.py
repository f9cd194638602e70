"""Playback sessions: ids that carry their title, and a bounded memory of what each session was told.

Rules kept here:
- A session id is `<title_id>.<created, base 36 seconds>.<16 random hex>`: any replica, or this one after a
  restart, can answer the session's steering URI from the id alone, so a live session's steering URI never
  gets 404 or 410 (hls.js and dash.js stop steering for good on those). Title ids never hold `.`.
- The memory (the first pathway we last ranked, the boxes the player left and when, the last priority sent)
  only refines answers; losing it (restart, eviction, another replica) costs nothing but that refinement.
- The memory is an LRU of at most `max_sessions` entries: a flood of sessions cannot grow it without bound.
- Avoid rule (issue 4): when the player's report leaves out the pathway we ranked first last time
  (`manifests.query.reports_leaving`: HLS `_HLS_pathway` names another pathway in use; DASH, ETSI TS 103 998
  `_DASH_pathway`, it fetched nothing from it since its last reload), that box is remembered with the time;
  steering ranks it after the others until the box passes a fresh healthy poll. Entries older than the
  box's last healthy poll are dropped when seen.
- No feedback (issue 13, defect 8): a report that names the box we ranked first never marks it left, even
  when it also names the box the player came from (dash.js lists that one first). So a player that follows
  our ranking never makes us demote where it went, the avoid rule cannot feed back on itself, and a session
  whose player follows its ranking is ranked the same reload after reload while the fleet does not change
  (`reload` is that one step, pure). Right after we move a DASH session from G to F, a report of just G is
  a player that has not fetched since (dash.js carries G over) as much as one that kept away from F: F is
  taken as left only if the next period's report lacks it too, so one move is never undone and redone.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from control.catalog.codec import TITLE_ID_RE
from control.manifests.query import SteeringQuery, reports_leaving
from control.model import ORIGIN_PATHWAY, BoxHealth

_SESSION_RE = re.compile(rf"({TITLE_ID_RE.pattern})\.([0-9a-z]{{1,12}})\.([0-9a-f]{{16}})")


def new_session_id(title_id: str, now: float, token: Callable[[int], str] = secrets.token_hex) -> str:
    return f"{title_id}.{_base36(int(now))}.{token(8)}"


def parse_session_id(session_id: str) -> tuple[str, float] | None:
    """(title id, created) of a well-formed session id, else None."""
    match = _SESSION_RE.fullmatch(session_id)
    if match is None:
        return None
    return match.group(1), float(int(match.group(2), 36))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@dataclass
class SessionMemory:
    title_id: str
    client_ip: str
    first: str | None = None  # the pathway we ranked first in our last answer
    priority: tuple[str, ...] = ()  # the last PATHWAY-PRIORITY sent
    avoid: dict[str, float] = field(default_factory=dict)  # box id -> when the player reported leaving it
    moved_from: str | None = None  # when our last answer changed the first pathway: the one first before

    def note_report(self, report: SteeringQuery, now: float) -> None:
        """The player left our first choice when its report leaves that pathway out (module rules)."""
        if self.first is None or self.first == ORIGIN_PATHWAY or not reports_leaving(report, self.first):
            return
        if report.protocol == "dash" and report.pathways == (self.moved_from,):
            # dash.js carries the location in use at its last steering request over into the next report:
            # a list of just the one we moved the session from is also a player that has fetched nothing
            # since. Not yet a leave; a second such period is (module rules, "No feedback").
            return
        self.avoid[self.first] = now

    def prune(self, health: Mapping[str, BoxHealth]) -> None:
        for box, left in list(self.avoid.items()):
            h = health.get(box)
            if h is not None and h.healthy and h.last_healthy_poll is not None and h.last_healthy_poll > left:
                del self.avoid[box]

    def reload(self, report: SteeringQuery, now: float, health: Mapping[str, BoxHealth],
               rank: Callable[[dict[str, float]], tuple[str, ...] | None]) -> tuple[str, ...]:
        """One steering reload: learn from the player's report, forget the avoids a fresh healthy poll has
        cleared, rank (`rank(avoid)`, None when no decision can be made: the last priority sent, else the
        origin alone), and remember what was sent."""
        self.note_report(report, now)
        self.prune(health)
        priority = rank(self.avoid) or self.priority or (ORIGIN_PATHWAY,)
        self.moved_from = self.first if self.first is not None and self.first != priority[0] else None
        self.priority, self.first = priority, priority[0]
        return priority


class SessionTable:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._entries: OrderedDict[str, SessionMemory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: str) -> SessionMemory | None:
        memory = self._entries.get(session_id)
        if memory is not None:
            self._entries.move_to_end(session_id)
        return memory

    def put(self, session_id: str, memory: SessionMemory) -> None:
        self._entries[session_id] = memory
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.max_sessions:
            self._entries.popitem(last=False)
