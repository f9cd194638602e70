"""One simulated device playing one title: the playback loop, with the HTTP getter, clock and sleep injected.

master playlist from the control plane (with the lab client header) -> variants per pathway (`m3u8`) ->
content steering (the steering manifest reloaded every TTL with `_HLS_pathway`, the pathway switched on a
segment error) -> video segments through `Abr`, paced at real time against a buffer target, each with CMCD
in the query (`CMCD=br,bl,bs,d,ot,sid,su`). Audio renditions are not fetched (the ladder is the video's).
Stats land in `SessionStats` as they happen, so a run stopped mid-session still reports them.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urljoin

import m3u8  # type: ignore[import-untyped]  # no stubs; pyproject's mypy overrides are left alone

from loadtest.devices.abr import Abr, AbrConfig, Playback


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int  # 0 = no response (connection error)
    body: bytes
    seconds: float  # wall time of the request


# get(url, headers, name) -> HttpResult; `name` groups requests in the load tester's statistics
Getter = Callable[[str, dict[str, str], str], HttpResult]


@dataclass(slots=True)
class SessionStats:
    startup_time: float | None = None
    play_time: float = 0.0
    stall_time: float = 0.0
    stalls: list[float] = field(default_factory=list)  # durations of finished stalls
    bitrates: Counter[int] = field(default_factory=Counter)  # segments per selected bitrate
    pathway_switches: int = 0
    steering_reloads: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count
    segments: int = 0
    done: bool = False

    def rebuffer_ratio(self) -> float:
        total = self.play_time + self.stall_time
        return self.stall_time / total if total > 0 else 0.0


@dataclass(slots=True)
class Variant:
    bandwidth: int
    stable_id: str
    uri: str
    segments: list[tuple[str, float]] | None = None  # (absolute URL, duration), loaded on first use
    init: str | None = None


class PlaybackError(Exception):
    """The session cannot go on (no master playlist, no pathway left)."""


class Session:
    def __init__(self, master_url: str, get: Getter, clock: Callable[[], float], sleep: Callable[[float], None],
                 client_header: tuple[str, str] | None = None, buffer_target: float = 10.0,
                 abr: AbrConfig | None = None, on_event: Callable[[str, float], None] | None = None) -> None:
        self.master_url = master_url
        self.get = get
        self.clock = clock
        self.sleep = sleep
        self.headers = {client_header[0]: client_header[1]} if client_header else {}
        self.buffer_target = buffer_target
        self.abr_config = abr or AbrConfig()
        self.on_event = on_event or (lambda kind, value: None)  # ("startup", s), ("rebuffer", s)
        self.sid = uuid.uuid4().hex[:16]
        self.stats = SessionStats()
        self.pathways: dict[str, list[Variant]] = {}
        self.priority: list[str] = []
        self.pathway = ""
        self.bad: set[str] = set()  # pathways that failed since the last steering reload
        self.steering_uri: str | None = None
        self.next_reload = 0.0
        self.playback: Playback | None = None
        self._starved = False

    # --- requests

    def _cmcd(self, ot: str, br: int | None = None, d: float | None = None) -> str:
        pb = self.playback
        members: dict[str, str | None] = {}
        if br is not None:
            members["br"] = str(br // 1000)
        if pb is not None:
            members["bl"] = str(int(pb.buffer * 10) * 100)  # ms, rounded down to 100 ms
        if self._starved:
            members["bs"] = None
        if d is not None:
            members["d"] = str(round(d * 1000))
        members["ot"] = ot
        members["sid"] = f'"{self.sid}"'
        if pb is None or pb.first_play is None:
            members["su"] = None
        payload = ",".join(k if v is None else f"{k}={v}" for k, v in sorted(members.items()))
        return "CMCD=" + quote(payload, safe="")

    def _with_query(self, url: str, query: str) -> str:
        return url + ("&" if "?" in url else "?") + query

    def _error(self, kind: str) -> None:
        self.stats.errors[kind] += 1

    # --- manifests

    def load_master(self) -> None:
        res = self.get(self.master_url, dict(self.headers), "master")
        if res.status != 200:
            self._error(f"master {res.status}")
            raise PlaybackError(f"master playlist: HTTP {res.status}")
        pl = m3u8.loads(res.body.decode(), uri=self.master_url)
        for p in pl.playlists:
            info = p.stream_info
            pid = info.pathway_id or "."
            stable = info.stable_variant_id or str(info.bandwidth)
            uri = urljoin(self.master_url, p.uri)
            self.pathways.setdefault(pid, []).append(Variant(info.bandwidth or 0, stable, uri))
        for variants in self.pathways.values():
            variants.sort(key=lambda v: v.bandwidth)
        if not self.pathways:
            raise PlaybackError("master playlist: no variants")
        steering = pl.content_steering
        first = steering.pathway_id if steering and steering.pathway_id in self.pathways else next(iter(self.pathways))
        self.priority = [first, *[p for p in self.pathways if p != first]]
        self.pathway = first
        if steering and steering.uri:
            self.steering_uri = urljoin(self.master_url, steering.uri)
            self.reload_steering()

    def reload_steering(self) -> None:
        assert self.steering_uri is not None
        url = self._with_query(self.steering_uri, urlencode({"_HLS_pathway": f'"{self.pathway}"'}))
        res = self.get(url, dict(self.headers), "steering")
        self.stats.steering_reloads += 1
        ttl = 10.0
        if res.status == 200:
            try:
                doc = json.loads(res.body)
                ttl = float(doc.get("TTL", ttl))
                prio = [p for p in doc.get("PATHWAY-PRIORITY", []) if p in self.pathways]
                if prio:
                    self.priority = prio + [p for p in self.priority if p not in prio]
                if doc.get("RELOAD-URI"):
                    self.steering_uri = urljoin(self.steering_uri, doc["RELOAD-URI"])
            except (ValueError, TypeError, AttributeError):
                self._error("steering body")
        else:
            self._error(f"steering {res.status}")
        self.bad.clear()
        self.next_reload = self.clock() + max(ttl, 1.0)
        self._pick_pathway()

    def _pick_pathway(self) -> None:
        for p in self.priority:
            if p not in self.bad:
                if p != self.pathway:
                    self.pathway = p
                    self.stats.pathway_switches += 1
                return
        raise PlaybackError("no pathway left")

    def _media(self, v: Variant) -> list[tuple[str, float]]:
        if v.segments is None:
            res = self.get(self._with_query(v.uri, self._cmcd("m")), {}, "media playlist")
            if res.status != 200:
                self._error(f"media playlist {res.status}")
                raise _SegmentFailed
            pl = m3u8.loads(res.body.decode(), uri=v.uri)
            v.segments = [(urljoin(v.uri, s.uri), float(s.duration or 0)) for s in pl.segments]
            if pl.segment_map:
                v.init = urljoin(v.uri, pl.segment_map[0].uri)
        return v.segments

    # --- the loop

    def run(self) -> SessionStats:
        start = self.clock()
        try:
            self.load_master()
            ladder = self.pathways[self.pathway]
            abr = Abr([v.bandwidth for v in ladder], self.abr_config)
            index = 0
            init_loaded: tuple[str, int] | None = None
            try:
                first = self._media(ladder[0])
            except _SegmentFailed as e:
                raise PlaybackError("media playlist") from e
            self.playback = pb = Playback(start, sum(d for _, d in first))
            nsegments = len(first)
            while index < nsegments:
                self._wait_for_room(pb)
                now = self.clock()
                pb.advance(now)
                self._starved = self._starved or pb.stalled
                if self.steering_uri and now >= self.next_reload:
                    self.reload_steering()
                rung = abr.choose(now, pb.buffer, pb.first_play is not None)
                variant = self.pathways[self.pathway][min(rung, len(self.pathways[self.pathway]) - 1)]
                try:
                    segments = self._media(variant)
                    if init_loaded != (self.pathway, rung) and variant.init:
                        self._fetch(variant.init, "init", self._cmcd("i", variant.bandwidth))
                        init_loaded = (self.pathway, rung)
                    url, duration = segments[index]
                    res = self._fetch(url, f"segment {variant.stable_id}",
                                      self._cmcd("v", variant.bandwidth, duration))
                except _SegmentFailed:
                    self.bad.add(self.pathway)
                    self._pick_pathway()
                    init_loaded = None
                    continue
                abr.add_sample(len(res.body), res.seconds)
                stalled_before = pb.stalled
                self._starved = False
                had_first = pb.first_play is not None
                pb.add_media(duration, self.clock())
                self.stats.bitrates[variant.bandwidth] += 1
                self.stats.segments += 1
                if not had_first and pb.startup_time is not None:
                    self.stats.startup_time = pb.startup_time
                    self.on_event("startup", pb.startup_time)
                if stalled_before and not pb.stalled:
                    stall = pb.stalls[-1]
                    length = (stall.end or stall.start) - stall.start
                    self.stats.stalls.append(length)
                    self.on_event("rebuffer", length)
                self._sync(pb)
                index += 1
            # play out what is buffered
            while not pb.ended:
                self.sleep(min(pb.buffer, 1.0) or 0.05)
                pb.advance(self.clock())
                self._sync(pb)
            self.stats.done = True
        finally:
            if self.playback is not None:
                self.playback.advance(self.clock())
                self._sync(self.playback)
        return self.stats

    def _wait_for_room(self, pb: Playback) -> None:
        """Sleep while the buffer is at its target, waking for steering reloads (paced at real time)."""
        while True:
            now = self.clock()
            pb.advance(now)
            if pb.stalled:
                self._starved = True
            room = pb.buffer - self.buffer_target
            if room <= 0:
                return
            wait = room if not self.steering_uri else min(room, max(self.next_reload - now, 0.0))
            if wait <= 0:
                return
            self.sleep(wait)

    def _fetch(self, url: str, name: str, cmcd: str) -> HttpResult:
        res = self.get(self._with_query(url, cmcd), {}, name)
        if res.status not in (200, 206):
            self._error(f"{name.split()[0]} {res.status}")
            raise _SegmentFailed
        return res

    def _sync(self, pb: Playback) -> None:
        self.stats.play_time = pb.play_time
        self.stats.stall_time = pb.stall_time


class _SegmentFailed(Exception):
    pass
