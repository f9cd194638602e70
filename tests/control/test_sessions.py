"""A session's steering reloads, pure (SessionMemory.reload with steering.steer), against models of what hls.js
and dash.js report: a site-B player whose only box dies must fail over once and then stay put (issue 13,
defect 8: three of three dash.js sessions switched between a1 and a2 twelve times in 22 s).

The players' reports, as their sources build them:
- hls.js: `_HLS_pathway` is the pathway in use.
- dash.js 5 (ContentSteeringController): `_DASH_pathway` lists the service locations it fetched from since its
  previous steering request, in order of first use, the one it was on at that request carried over first;
  it fetches from the first pathway of the last priority that it has not blacklisted (a failed download
  blacklists one).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import msgspec
import pytest

from control.manifests import parse_steering_query
from control.model import ORIGIN_PATHWAY, Box, BoxHealth, CoverageArea, Fleet, Inventory, Rendition, Site, Title
from control.sessions import SessionMemory
from control.steering import SteeringIndex, steer

# The lab's layout (oca/lab/layout.py): site-a with a1 and a2, site-b with b1, whose parent is site-a.
SITES = {"site-a": Site("site-a", 52.37, 4.90, "NL"), "site-b": Site("site-b", 51.92, 4.48, "NL", parent="site-a")}
BOXES = {b: Box(b, f"site-{b[0]}", f"http://{b}.test:8080/", f"http://{b}.test:8081", 10**10)
         for b in ("a1", "a2", "b1")}
COVERAGE = (CoverageArea("127.0.1.0/24", 52.37, 4.90, "NL"), CoverageArea("127.0.2.0/24", 51.92, 4.48, "NL"))
INDEX = SteeringIndex.build(Fleet(SITES, BOXES, COVERAGE, "http://origin.test/"))
SITE_B_CLIENT = "127.0.2.10"
VIDEO = (Rendition("720p", "video", 3_000_000, "avc1.64001f", (1280, 720), playlist="titles/1001/720p/index.m3u8"),)
TITLE = Title("1001", VIDEO, ())
TTL = 2.0  # the lab's steering TTL
POLL = 0.5  # the lab's health interval; a box is down after 2 failed polls
DOWN_AFTER = 2 * POLL
WINDOW = 20.0  # the issue: at most one pathway change in the 20 s after failing over


def inventory(*holders: str) -> Inventory:
    return Inventory({b: frozenset({TITLE.id}) for b in holders}, {b: frozenset({TITLE.id}) for b in holders})


def health_at(t: float, dead: dict[str, float]) -> dict[str, BoxHealth]:
    """Every box polled healthy every POLL seconds, except a box killed at dead[box]: its last good poll is the
    one before, and it is down DOWN_AFTER seconds later."""
    out = {}
    for box in BOXES:
        killed = dead.get(box)
        if killed is None or t < killed:
            out[box] = BoxHealth(box, True, last_healthy_poll=t - POLL / 2)
        else:
            out[box] = BoxHealth(box, t < killed + DOWN_AFTER, last_healthy_poll=killed - POLL / 2)
    return out


@dataclass
class Player:
    """What a player fetches from and reports (module docstring)."""

    protocol: str  # "hls" or "dash"
    on: str  # the pathway in use
    used: list[str] = field(default_factory=list)  # dash.js: since the last steering request
    blacklisted: set[str] = field(default_factory=set)
    history: list[tuple[float, str]] = field(default_factory=list)  # (t, pathway) of every fragment fetched

    def apply(self, priority: tuple[str, ...]) -> None:
        self.on = next(p for p in priority if p not in self.blacklisted)

    def fetch(self, t: float, dead: dict[str, float], priority: tuple[str, ...]) -> None:
        """One fragment: from the pathway in use; a dead box fails it (dash.js has listed it already: it
        notes a location when the download starts) and the player moves down the priority."""
        while True:
            if self.on not in self.used:
                self.used.append(self.on)
            if self.on in dead and t >= dead[self.on]:
                self.blacklisted.add(self.on)
                self.apply(priority)
                continue
            self.history.append((t, self.on))
            return

    def query(self) -> dict[str, str]:
        if self.protocol == "hls":
            return {"_HLS_pathway": self.on}
        reported = {"_DASH_pathway": '"' + ",".join(self.used) + '"'}
        self.used = [self.on]  # dash.js keeps only the location in use for the next report
        return reported


def play(protocol: str, holders: tuple[str, ...], killed: float,
         fetch_at: float) -> tuple[Player, list[tuple[float, tuple[str, ...]]]]:
    """A site-B session started at t=0, reloading every TTL, fetching one fragment per period `fetch_at` s
    after each reload; b1 (site B's only box) is killed at `killed`. (player, [(t, priority sent)])."""
    stock = inventory(*holders)
    dead = {"b1": killed}

    def rank(t: float, health: dict[str, BoxHealth], avoid: dict[str, float]) -> tuple[str, ...]:
        return steer(INDEX, health, stock, TITLE, SITE_B_CLIENT, now=t, avoid=avoid).pathway_ids

    start = rank(0.0, health_at(0.0, dead), {})
    assert start[0] == "b1", start
    memory = SessionMemory(TITLE.id, SITE_B_CLIENT, start[0], start)
    player = Player(protocol, start[0])
    sent = [(0.0, start)]
    t = 0.0
    while t < killed + WINDOW + 4 * TTL:
        player.fetch(t + fetch_at, dead, sent[-1][1])
        t += TTL
        health = health_at(t, dead)
        report = parse_steering_query(player.query())
        priority = memory.reload(report, t, health, lambda avoid, t=t, health=health: rank(t, health, avoid))
        sent.append((t, priority))
        player.apply(priority)
    return player, sent


def changes(values: list[str]) -> int:
    return sum(a != b for a, b in itertools.pairwise(values))


# the player notices first (a fragment fails before the control plane sees b1 down), or the control plane
# does (b1 is gone from the priority before the player's next fragment), with the title on either site-A box
# or on none of them
TIMINGS = [pytest.param(4.2, 0.5, id="player-notices-first"), pytest.param(4.7, 0.5, id="control-notices-first"),
           pytest.param(4.1, 1.9, id="fragment-just-before-reload")]
HOLDERS = [pytest.param(("b1", "a2"), id="a2-holds"), pytest.param(("b1", "a1"), id="a1-holds"),
           pytest.param(("b1",), id="b1-only")]


@pytest.mark.parametrize("protocol", ["dash", "hls"])
@pytest.mark.parametrize("holders", HOLDERS)
@pytest.mark.parametrize(("killed", "fetch_at"), TIMINGS)
def test_a_site_b_session_whose_box_dies_fails_over_once_and_stays(protocol: str, holders: tuple[str, ...],
                                                                   killed: float, fetch_at: float) -> None:
    player, sent = play(protocol, holders, killed, fetch_at)
    firsts = [priority[0] for t, priority in sent if t >= killed]
    assert changes(firsts) <= 1, sent  # b1 -> a site-A box, once
    assert "b1" not in sent[-1][1] and sent[-1][1][0] != ORIGIN_PATHWAY, sent
    fetched = [p for t, p in player.history if t >= killed]
    failover = next(t for t, p in player.history if t >= killed and p != "b1")
    after = [p for t, p in player.history if failover <= t <= failover + WINDOW]
    assert fetched and fetched[-1] == sent[-1][1][0], (player.history, sent)
    assert changes(after) <= 1, (player.history, sent)  # the "Done when"
    assert changes([p for _, p in player.history]) == 1, (player.history, sent)  # in fact: b1 -> one box


def reload_with(memory: SessionMemory, t: float, dash_pathway: str, health: dict[str, BoxHealth],
                stock: Inventory) -> tuple[str, ...]:
    return memory.reload(parse_steering_query({"_DASH_pathway": dash_pathway}), t, health,
                         lambda avoid: steer(INDEX, health, stock, TITLE, SITE_B_CLIENT, now=t,
                                             avoid=avoid).pathway_ids)


def test_dash_lists_in_either_order_after_a_box_died_do_not_move_the_session() -> None:
    """The issue's reports: `_DASH_pathway` "a1,a2", then "a2,a1", and so on, after b1 died. Whatever the
    order, the player reports using the box we rank first: the first entry of PATHWAY-PRIORITY changes at most
    once (it does not change at all: b1 is already out)."""
    stock = inventory("b1")
    dead = {"b1": 0.0}
    t = 2 * DOWN_AFTER
    first = steer(INDEX, health_at(t, dead), stock, TITLE, SITE_B_CLIENT, now=t).pathway_ids
    memory = SessionMemory(TITLE.id, SITE_B_CLIENT, first[0], first)
    firsts = [first[0]]
    for n in range(11):  # 22 s of 2 s reloads, every box but b1 polled healthy since each report
        t += TTL
        order = "a1,a2" if n % 2 == 0 else "a2,a1"
        firsts.append(reload_with(memory, t, f'"{order}"', health_at(t, dead), stock)[0])
    assert changes(firsts) <= 1, firsts
    assert not memory.avoid, memory.avoid


def test_a_dash_player_that_fetched_only_from_other_pathways_left_the_first() -> None:
    """The avoid rule still holds for DASH: a whole steering period without a fragment from the box we ranked
    first (its list does not hold it) means the player left it; it comes back first after a fresh poll."""
    stock = inventory("b1", "a2")
    health = health_at(10.0, {})
    first = steer(INDEX, health, stock, TITLE, SITE_B_CLIENT, now=10.0).pathway_ids
    assert first[0] == "b1"
    memory = SessionMemory(TITLE.id, SITE_B_CLIENT, first[0], first)
    left = reload_with(memory, 12.0, '"a2"', {b: msgspec.structs.replace(h, last_healthy_poll=11.9)
                                               for b, h in health.items()}, stock)
    assert left[0] == "a2" and left.index("b1") == len(left) - 2 and memory.avoid == {"b1": 12.0}
    # the same report with b1 in it (the player came back to b1, or is leaving it): not a new leave
    assert reload_with(memory, 12.5, '"a2,b1"', health, stock)[0] == "a2"  # no fresh poll of b1 yet
    fresh = {b: msgspec.structs.replace(h, last_healthy_poll=12.6) for b, h in health.items()}
    assert reload_with(memory, 13.0, '"a2"', fresh, stock)[0] == "b1" and not memory.avoid


def test_a_dash_player_that_has_not_fetched_since_we_moved_it_has_not_left_yet() -> None:
    """b1 comes back while the session plays from a2: we move it to b1 once. A dash.js player that fetched
    nothing in the next period reports only the pathway it was on ("a2": its list carries that one over), which
    is no sign that it left b1; it moves at its next fragment. Reading it as leaving would move the session
    back to a2 and, after b1's next poll, to b1 again: three changes of the first pathway for one move."""
    stock = inventory("b1", "a2")
    down = health_at(10.0, {"b1": 0.0})
    start = steer(INDEX, down, stock, TITLE, SITE_B_CLIENT, now=10.0).pathway_ids
    assert start[0] == "a2"
    memory = SessionMemory(TITLE.id, SITE_B_CLIENT, start[0], start)
    firsts = [start[0]]
    # every box polled healthy again from t=11; reloads every TTL; the player's reports, period by period:
    # still on a2; no fragment since we moved it; moved to b1 (a2 carried over); on b1
    for n, reported in enumerate(['"a2"', '"a2"', '"a2,b1"', '"b1"', '"b1"']):
        t = 12.0 + n * TTL
        firsts.append(reload_with(memory, t, reported, health_at(t, {}), stock)[0])
    assert firsts == ["a2", "b1", "b1", "b1", "b1", "b1"], firsts


def test_a_dash_player_that_keeps_away_from_where_we_moved_it_left_it() -> None:
    """...but a second period without a fragment from b1 is leaving it (a failed download blacklists a
    location in dash.js): b1 is ranked after a2 until its next healthy poll."""
    stock = inventory("b1", "a2")
    start = steer(INDEX, health_at(10.0, {"b1": 0.0}), stock, TITLE, SITE_B_CLIENT, now=10.0).pathway_ids
    memory = SessionMemory(TITLE.id, SITE_B_CLIENT, start[0], start)
    stale_b1 = {**health_at(16.0, {}), "b1": BoxHealth("b1", True, last_healthy_poll=11.0)}
    firsts = [reload_with(memory, t, '"a2"', stale_b1, stock)[0] for t in (12.0, 14.0, 16.0)]
    assert firsts == ["b1", "b1", "a2"] and set(memory.avoid) == {"b1"}, (firsts, memory.avoid)
