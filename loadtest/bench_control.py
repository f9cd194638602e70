"""`python -m loadtest.bench_control`: the control plane at two fleet sizes, in process and as a real process.

For each size (`--sizes`: `1k` = 200 sites x 5 boxes under 20 regional parents with 100,000 announced and
coverage prefixes over IPv4 and IPv6; `10k` = 2,000 sites x 5 boxes under 200 parents with 1,000,000
prefixes; both with a few hundred titles, inventories and health) it measures, in process on one core,
the steering index build, steering decision latency and manifests per second; then it writes the fleet as
config files, starts a real `oca control serve` on them and measures its start-up time, its resident
memory once ready and master playlists per second over HTTP (loadtest.control_process says how). It
prints one Markdown table, a column per size (case, goal, figures); it is a measurement, never a
pass/fail test, so nothing here asserts a timing.

Rules it keeps:
- Everything is seeded: the same arguments build the same fleet, clients and titles.
- Latency is timed call by call (perf_counter_ns) after an uncounted warm-up; rates are calls completed in a
  fixed wall-clock budget, one thread, so "per second" means per core.
- Tokens come from `oca.tokens` when it exists (`mint` with an Ed25519 key, scoped to the title); otherwise
  the per-session case uses a stand-in Ed25519 JWT with the RFC 9246 claims (PyJWT), said so in the table,
  or is skipped when neither is importable. Rendering is also measured with one precomputed token string,
  to separate the two costs.
- A goal met or missed is said in the figure's cell ("meets" / "misses"); the JSON has every size's rows.
- Only this module prints or exits.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from control.manifests import DashTemplate, HlsTemplate, PathwayBase, parse_steering_query, steering_manifest
from control.model import Box, BoxHealth, CatalogFile, CoverageArea, Fleet, Inventory, Rendition, Site, Title
from control.steering import SteeringIndex, steer
from loadtest import fake_boxes
from loadtest.control_process import FORMATS, ProcessError, measure_process, round_summary, rounds_since_start
from loadtest.harness import Figure, cpu_name

DESCRIPTION = "control-plane steering and manifest rendering, in process on one core; prints a Markdown table."
COUNTRIES = ("NL", "DE", "FR", "GB", "BE", "PL", "ES", "IT", "SE", "AT")
RENDITIONS = ((240, 400_000), (360, 800_000), (480, 1_400_000), (720, 3_000_000), (1080, 6_000_000))
P99_GOAL_MS = 1.0
PLAYLISTS_GOAL = 2000.0
STARTUP_GOAL_S = 30.0
STARTUP_CASE = "start-up of `oca control serve`, exec to first answer"
RSS_CASE = "resident memory (VmRSS) once ready"
POLLED_CASE = "config + prefixes loaded and every box polled once, from exec"
ROUND_CASE = "health poll round of every box (fake boxes on loopback)"
POLL_RSS_CASE = "resident memory after the poll rounds"
HTTP_CASE = "HTTP master playlists (wrk)"
FAKE_TOKEN = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJpc3MiOiJvY2EiLCJjZG5pdiI6MX0." + "s" * 86
NOW = 1_750_000_000.0


# --- the synthetic world -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    name: str
    sites: int
    boxes_per_site: int
    announced: int
    coverage: int

    @property
    def boxes(self) -> int:
        return self.sites * self.boxes_per_site

    @property
    def label(self) -> str:
        return f"{self.boxes:,} boxes, {self.announced + self.coverage:,} prefixes"


SIZES = {size.name: size for size in (Size("1k", 200, 5, 50_000, 50_000), Size("10k", 2000, 5, 500_000, 500_000),
                                      Size("20k", 4000, 5, 1_000_000, 1_000_000))}


def custom_size(boxes: int, prefixes: int) -> Size:
    """A fleet of `boxes` (5 a site) and `prefixes` (half announced, half coverage), named like 20k/2M."""
    if boxes < 10 or boxes % 5:
        raise ValueError(f"--boxes {boxes}: expected a multiple of 5, at least 10")
    if prefixes < 10:
        raise ValueError(f"--prefixes {prefixes}: expected at least 10")
    return Size(f"{_short(boxes)}/{_short(prefixes)}", boxes // 5, 5, prefixes // 2, prefixes - prefixes // 2)


def _short(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


@dataclass(frozen=True)
class World:
    fleet: Fleet
    health: dict[str, BoxHealth]
    inventory: Inventory
    titles: list[Title]
    clients: list[str]
    mpd: str


def build_world(seed: int, *, sites: int = 200, boxes_per_site: int = 5, announced: int = 50_000,
                coverage: int = 50_000, titles: int = 300, clients: int = 20_000) -> World:
    rng = random.Random(seed)
    regional = max(1, sites // 10)
    site_map: dict[str, Site] = {}
    for i in range(sites):
        parent = None if i < regional else f"rx{rng.randrange(regional):02d}"
        sid = f"rx{i:02d}" if i < regional else f"isp{i:03d}"
        site_map[sid] = Site(sid, rng.uniform(36, 60), rng.uniform(-9, 28), rng.choice(COUNTRIES), parent)
    box_ids = [f"{sid}-b{j}" for sid in site_map for j in range(boxes_per_site)]
    isp_boxes = [b for b in box_ids if b.startswith("isp")]
    v4_ann = announced * 4 // 5
    prefixes: dict[str, list[str]] = {}
    for i in range(announced):
        prefixes.setdefault(isp_boxes[i % len(isp_boxes)], []).append(announced_prefix(i, v4_ann))
    boxes = {b: Box(b, b.rsplit("-", 1)[0], f"http://{b}.oca.test:8080", f"http://{b}.oca.test:8081",
                    10_000_000_000, tuple(prefixes.get(b, ()))) for b in box_ids}
    areas = []
    covering = (v4_ann + 255) >> 8  # the /16s over the announced IPv4 /24s: their clients get a coverage country
    for i in range(covering):
        areas.append(CoverageArea(f"{20 + (i >> 8)}.{i & 255}.0.0/16", rng.uniform(36, 60), rng.uniform(-9, 28),
                                  rng.choice(COUNTRIES)))
    rest = coverage - covering
    v4_cov = rest * 9 // 10
    for i in range(rest):  # IPv4 /24s from 60.0.0.0, IPv6 /44s under 2a00::/16
        prefix = (f"{60 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" if i < v4_cov
                  else f"2a00:{(i - v4_cov) >> 4:x}:{((i - v4_cov) & 15) << 4:x}::/44")
        areas.append(CoverageArea(prefix, rng.uniform(36, 60), rng.uniform(-9, 28), rng.choice(COUNTRIES)))
    fleet = Fleet(site_map, boxes, tuple(areas), "http://origin.oca.test")
    health = {}
    for b in box_ids:
        roll = rng.random()
        health[b] = BoxHealth(b, healthy=roll >= 0.03, draining=0.03 <= roll < 0.05,
                              load=0.95 if 0.05 <= roll < 0.08 else rng.uniform(0, 0.8),
                              last_healthy_poll=NOW - 1, error=None if roll >= 0.03 else "timeout")
    title_list = [_title(f"{80_000_000 + i}", rng) for i in range(titles)]
    holding: dict[str, set[str]] = {b: set() for b in box_ids}
    complete: dict[str, set[str]] = {b: set() for b in box_ids}
    by_site: dict[str, list[str]] = {}
    for b in box_ids:
        by_site.setdefault(boxes[b].site, []).append(b)
    for title in title_list[: titles // 3]:  # the popular third sits on two boxes of every site
        for site_boxes in by_site.values():
            for b in rng.sample(site_boxes, 2):
                holding[b].add(title.id)
                complete[b].add(title.id)
    for title in title_list[titles // 3:]:
        for b in rng.sample(box_ids, 50):
            holding[b].add(title.id)
    inventory = Inventory({b: frozenset(t) for b, t in holding.items()},
                          {b: frozenset(t) for b, t in complete.items()})
    client_ips = [_client(rng, v4_ann, announced - v4_ann, v4_cov, rest - v4_cov) for _ in range(clients)]
    return World(fleet, health, inventory, title_list, client_ips, _packaged_mpd())


def announced_prefix(i: int, v4_count: int) -> str:
    """The i-th announced prefix: IPv4 /24s from 20.0.0.0, then IPv6 /48s from 2001:db8::/48 (past 65,536
    of them into 2001:db9::/32 and on)."""
    if i < v4_count:
        return f"{20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24"
    j = i - v4_count
    return f"2001:{0xdb8 + (j >> 16):x}:{j & 0xffff:x}::/48"


def _title(title_id: str, rng: random.Random) -> Title:
    renditions = [Rendition(f"{h}p", "video", bw, "avc1.64001f", (h * 16 // 9, h), bw * 4 // 5, 25.0,
                            f"titles/{title_id}/{h}p/index.m3u8") for h, bw in RENDITIONS]
    renditions.append(Rendition("aac", "audio", 128_000, "mp4a.40.2", playlist=f"titles/{title_id}/aac/index.m3u8"))
    countries = frozenset(rng.sample(COUNTRIES, 3)) if rng.random() < 0.2 else frozenset()
    files = (CatalogFile(f"titles/{title_id}/manifest.mpd", 2048, "0" * 32),)
    return Title(title_id, tuple(renditions), files, countries, f"titles/{title_id}/master.m3u8",
                 f"titles/{title_id}/manifest.mpd")


def _client(rng: random.Random, v4_ann: int, v6_ann: int, v4_cov: int, v6_cov: int) -> str:
    roll = rng.random()
    if roll < 0.36:
        i = rng.randrange(v4_ann)
        return f"{20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.{rng.randrange(1, 255)}"
    if roll < 0.45:
        i = rng.randrange(v6_ann)
        return f"2001:{0xdb8 + (i >> 16):x}:{i & 0xffff:x}::{rng.randrange(1, 65535):x}"
    if roll < 0.81:
        i = rng.randrange(v4_cov)
        return f"{60 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.{rng.randrange(1, 255)}"
    if roll < 0.90:
        i = rng.randrange(v6_cov)
        return f"2a00:{i >> 4:x}:{((i & 15) << 4) | rng.randrange(16):x}::{rng.randrange(1, 65535):x}"
    return f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # RFC 2544 benchmarking space: no match


def _packaged_mpd() -> str:
    """An MPD shaped like ffmpeg's dash muxer output: 5 video representations, 1 audio, SegmentTemplate."""
    reps = "\n".join(f'      <Representation id="{h}p" mimeType="video/mp4" codecs="avc1.64001f" bandwidth="{bw}" '
                     f'width="{h * 16 // 9}" height="{h}" frameRate="25"/>' for h, bw in RENDITIONS)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:mpeg:dash:schema:mpd:2011"
  xmlns:xlink="http://www.w3.org/1999/xlink" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static"
  mediaPresentationDuration="PT1H30M0.0S" maxSegmentDuration="PT4.0S" minBufferTime="PT8.0S">
  <ProgramInformation><Title>synthetic</Title></ProgramInformation>
  <Period id="0" start="PT0.0S">
    <AdaptationSet id="0" contentType="video" segmentAlignment="true" maxWidth="1920" maxHeight="1080">
      <SegmentTemplate timescale="12800" initialization="$RepresentationID$/init.mp4"
        media="$RepresentationID$/seg_$Number%05d$.m4s" startNumber="1" duration="51200"/>
{reps}
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" segmentAlignment="true" lang="und">
      <SegmentTemplate timescale="48000" initialization="$RepresentationID$/init.mp4"
        media="$RepresentationID$/seg_$Number%05d$.m4s" startNumber="1" duration="192000"/>
      <Representation id="aac" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="48000"/>
    </AdaptationSet>
  </Period>
</MPD>
"""


# --- tokens ---------------------------------------------------------------------------------------------


def token_minter() -> tuple[str, Callable[[str], str]] | str:
    """(label, mint(title_id) -> token) for the per-session case, or why there is none."""
    try:
        tokens: Any = importlib.import_module("oca.tokens")
    except ImportError:
        tokens = None
    if tokens is not None and hasattr(tokens, "mint"):
        try:
            return _oca_minter(tokens)
        except Exception as exc:  # its API may differ from what this bench expects: say so, measure the rest
            return f"oca.tokens.mint not usable by this bench ({type(exc).__name__}: {exc})"
    try:
        jwt: Any = importlib.import_module("jwt")
        ed25519: Any = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
    except ImportError:
        return "no oca.tokens and no PyJWT/cryptography to stand in for it"
    key = ed25519.Ed25519PrivateKey.generate()

    def mint(title_id: str) -> str:
        claims = {"iss": "oca-control", "nbf": int(NOW) - 5, "exp": int(NOW) + 6 * 3600, "cdniv": 1,
                  "cdniuc": f"regex:^/t/[^/]+/titles/{title_id}/"}
        return str(jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"}))
    return "EdDSA JWT via PyJWT (stand-in: oca.tokens not importable)", mint


def _oca_minter(tokens: Any) -> tuple[str, Callable[[str], str]]:
    """oca.tokens as the control plane uses it: an Ed25519 key, a title-scoped token per session."""
    key = tokens.generate_private_key("EdDSA")

    def mint(title_id: str) -> str:
        return str(tokens.mint(key, "bench", issuer="oca-control", scope=tokens.title_scope(title_id),
                               lifetime=6 * 3600, now=NOW))
    mint("80000000")  # fail here, not in the timed loop
    return "oca.tokens.mint, EdDSA", mint


# --- measurements ---------------------------------------------------------------------------------------


def _rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls of fn(i) completed per second within about `seconds` of wall clock."""
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(50):
            fn(done)
            done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def measure(world: World, *, seconds: float, samples: int, progress: Callable[[str], None]) -> list[Figure]:
    rows: list[Figure] = []
    gc.disable()  # as `oca control serve` builds it (control/service.py)
    try:
        started = time.perf_counter()
        index = SteeringIndex.build(world.fleet)
        build_s = time.perf_counter() - started
    finally:
        gc.enable()
    prefixes = len(index.announced) + len(index.coverage)
    rows.append(Figure("index build", f"{build_s:.2f} s ({prefixes:,} prefixes, {len(world.fleet.boxes):,} boxes)",
                    "-", "-", build_s, "s"))
    progress(f"index built in {build_s:.2f}s")
    hls = {t.id: HlsTemplate.build(t) for t in world.titles}
    dash = {t.id: DashTemplate.for_title(t, world.mpd) for t in world.titles}
    clients, n_clients = world.clients, len(world.clients)
    # Decision latency is timed over every title, licence refusals (451) included; the rate cases use only
    # titles licensed everywhere, so every call counted renders a manifest.
    titles = world.titles
    n_titles = len(titles)

    def decide(i: int, among: Sequence[Title] = titles) -> Any:
        return steer(index, world.health, world.inventory, among[i % len(among)], clients[i % n_clients], now=NOW)

    for i in range(min(2000, samples)):  # warm-up: caches, branch paths
        decide(i)
    latencies, cpu_times = [], []
    refused = 0
    for i in range(samples):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        decision = decide(i * 7919)
        cpu_times.append(time.thread_time_ns() - c0)  # this thread's CPU only: not the time others had the core
        latencies.append(time.perf_counter_ns() - t0)
        refused += not decision.allowed
    latencies.sort()
    cpu_times.sort()
    p50, p99 = latencies[len(latencies) // 2] / 1e6, latencies[int(len(latencies) * 0.99)] / 1e6
    worst, cpu_p99 = latencies[-1] / 1e6, cpu_times[int(len(cpu_times) * 0.99)] / 1e6
    rows.append(Figure("steering decision", f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {worst:.3f} ms; CPU time p99 "
                    f"{cpu_p99:.3f} ms ({samples:,} clients, {refused:,} got 451)", f"p99 ≤ {P99_GOAL_MS:g} ms",
                    _verdict(p99 <= P99_GOAL_MS), p99, "ms"))
    progress("decisions timed")

    open_titles = [t for t in titles if not t.countries]
    n_open = len(open_titles)

    def playlist(i: int, token: Callable[[str], str] | None = None) -> str:
        decision = decide(i, open_titles)
        title = open_titles[i % n_open]
        minted = token(title.id) if token is not None else FAKE_TOKEN
        bases = [PathwayBase.of(p, minted) for p in decision.pathways]
        return hls[title.id].render(bases, f"http://control.oca.test/v1/steer/s{i}")

    widest = max((decide(i, open_titles).pathways for i in range(50)), key=len)  # the same shape at every size
    fixed = [PathwayBase.of(p, FAKE_TOKEN) for p in widest]
    render_rate = _rate(lambda i: hls[titles[i % n_titles].id].render(fixed, "http://control.oca.test/v1/steer/s"),
                        seconds)
    rows.append(Figure("HLS master playlist, render only", f"{render_rate:,.0f} /s ({len(fixed)} pathways)", "-", "-",
                       render_rate, "1/s"))
    master_rate = _rate(playlist, seconds)
    rows.append(Figure("HLS master playlist, decision + render (precomputed token)", f"{master_rate:,.0f} /s per core",
                    f"≥ {PLAYLISTS_GOAL:,.0f} /s", _verdict(master_rate >= PLAYLISTS_GOAL), master_rate, "1/s"))
    minter = token_minter()
    if isinstance(minter, str):
        rows.append(Figure("HLS master playlist, decision + per-session token", "n/a", "-", minter, None, "1/s"))
    else:
        label, mint = minter
        minted_rate = _rate(lambda i: playlist(i, mint), seconds)
        rows.append(Figure(f"HLS master playlist, decision + per-session token ({label})",
                        f"{minted_rate:,.0f} /s per core", f"≥ {PLAYLISTS_GOAL:,.0f} /s",
                        _verdict(minted_rate >= PLAYLISTS_GOAL), minted_rate, "1/s"))
    progress("playlists measured")

    def mpd(i: int) -> str:
        decision = decide(i, open_titles)
        title = open_titles[i % n_open]
        bases = [PathwayBase.of(p, FAKE_TOKEN) for p in decision.pathways]
        return dash[title.id].render(bases, f"http://control.oca.test/v1/steer/s{i}")

    mpd_rate = _rate(mpd, seconds)
    rows.append(Figure("DASH MPD, decision + render (precomputed token)", f"{mpd_rate:,.0f} /s per core", "-", "-",
                    mpd_rate, "1/s"))
    query = {"_HLS_pathway": '"isp100-b1"', "_HLS_throughput": "5140000"}

    def steering_json(i: int) -> str:
        parse_steering_query(query)
        decision = decide(i, open_titles)
        return steering_manifest(decision.pathway_ids, ttl=10, reload_uri=f"http://control.oca.test/v1/steer/s{i}")

    json_rate = _rate(steering_json, seconds)
    rows.append(Figure("steering manifest JSON, query + decision + render", f"{json_rate:,.0f} /s per core", "-", "-",
                    json_rate, "1/s"))
    progress("MPD and steering manifests measured")
    return rows


def _verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


# --- output and command line ----------------------------------------------------------------------------


def measure_serving(world: World, *, shape: str, http_seconds: float, poll_seconds: float,
                    progress: Callable[[str], None]) -> list[Figure]:
    """A real `oca control serve` on the world's fleet: start-up, RSS once ready, health polling of fake
    boxes (when `poll_seconds`), master playlists over HTTP."""
    with tempfile.TemporaryDirectory(prefix="oca-bench-control-") as workdir:
        try:
            got = measure_process(world.fleet, world.titles, world.mpd, world.clients, workdir, shape=shape,
                                  http_seconds=http_seconds, poll_seconds=poll_seconds)
        except ProcessError as exc:
            progress(f"oca control serve: {exc}")
            rows = [Figure(STARTUP_CASE, "n/a", f"≤ {STARTUP_GOAL_S:g} s", f"failed: {exc}", None, "s"),
                    Figure(RSS_CASE, "n/a", "-", "not started", None, "MiB")]
            if poll_seconds > 0:
                rows += [Figure(POLLED_CASE, "n/a", f"≤ {STARTUP_GOAL_S:g} s", "not measured", None, "s"),
                         Figure(ROUND_CASE, "n/a", "≤ health.interval", "not measured", None, "s"),
                         Figure(POLL_RSS_CASE, "n/a", "-", "not measured", None, "MiB")]
            return [*rows, Figure(HTTP_CASE, "n/a", "-", "not started", None, "1/s")]
    progress(f"oca control serve answered after {got.startup_s:.1f}s with {got.rss_bytes / 2**20:,.0f} MiB resident")
    rows = [
        Figure(STARTUP_CASE,
               f"{got.startup_s:.1f} s, {got.startup_cpu_s:.1f} s of CPU ({got.config_bytes / 2**20:,.0f} MiB of "
               f"fleet files, {shape})",
               f"≤ {STARTUP_GOAL_S:g} s", _verdict(got.startup_s <= STARTUP_GOAL_S), got.startup_s, "s"),
        Figure(RSS_CASE, f"{got.rss_bytes / 2**20:,.0f} MiB", "-", "-",
               got.rss_bytes / 2**20, "MiB"),
    ]
    polling = got.polling
    if polling is not None:
        progress(f"every box polled {polling.all_polled_s:.1f}s after exec; rounds: {round_summary(polling)}; "
                 f"every round since start: {rounds_since_start(polling)}")
        # the verdict counts every round since start: the first ones carry start-up work (first inventories)
        worst = max(polling.since_start) if polling.since_start else None
        first_worst = (f"; every round since start: max {worst:.2f} s over {polling.rounds_total}"
                       if worst is not None else "")
        rows += [
            Figure(POLLED_CASE, f"{polling.all_polled_s:.1f} s, {polling.all_polled_cpu_s:.1f} s of CPU",
                   f"≤ {STARTUP_GOAL_S:g} s",
                   _verdict(polling.all_polled_s <= STARTUP_GOAL_S), polling.all_polled_s, "s"),
            Figure(ROUND_CASE, f"{round_summary(polling)}{first_worst} ({polling.kept_connections}; "
                               f"{fake_boxes_where(world)})",
                   f"≤ {polling.interval:g} s (health.interval)",
                   _verdict(worst is not None and worst <= polling.interval), worst, "s"),
            Figure(POLL_RSS_CASE, f"{polling.rss_bytes / 2**20:,.0f} MiB", "-", "-", polling.rss_bytes / 2**20,
                   "MiB"),
        ]
    if got.http is None:
        rows.append(Figure(HTTP_CASE, "n/a", "-", got.http_note, None, "1/s"))
    else:
        w = got.http
        failed = w.errors.total
        rows.append(Figure(HTTP_CASE, f"{w.requests_per_sec:,.0f} /s, p99 {w.p99_ms or 0:.1f} ms, {failed:,} failed "
                           f"({got.http_note})", "-", "-", w.requests_per_sec, "1/s"))
    return rows


def fake_boxes_where(world: World) -> str:
    """Where the fake boxes run, beside the figures that depend on it: their CPU and open files are not the
    control process's, but they share the machine's cores with it."""
    processes = -(-len(world.fleet.boxes) // fake_boxes.PER_PROCESS)
    return (f"the fake boxes in {processes} process{'es' if processes > 1 else ''} of their own, at most "
            f"{fake_boxes.PER_PROCESS:,} boxes each, on the same {len(os.sched_getaffinity(0))} cores")


def machine_line(args: argparse.Namespace) -> str:
    cpu = cpu_name()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    at_start = getattr(args, "load_at_start", os.getloadavg()[0])
    load = f"load average {at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    return (f"machine: {cpu}, nproc {len(os.sched_getaffinity(0))}, python {platform.python_version()}, "
            f"one thread; {args.samples:,} decisions timed, {args.seconds:g}s per rate; seed {args.seed}; {load}; "
            f"{now}")


def render_sizes(results: Sequence[tuple[Size, list[Figure]]]) -> str:
    """One Markdown table: a row per case, a column per size; a goal's verdict follows its figure."""
    cases: dict[str, str] = {}
    cells: dict[tuple[str, str], str] = {}
    for size, rows in results:
        for row in rows:
            cases.setdefault(row.case, row.goal)
            if row.goal != "-" and row.verdict in ("meets", "misses"):
                cells[(size.name, row.case)] = f"{row.figure} — {row.verdict}"
            elif row.verdict != "-":
                cells[(size.name, row.case)] = f"{row.figure} ({row.verdict})"
            else:
                cells[(size.name, row.case)] = row.figure
    lines = ["| case | goal | " + " | ".join(size.label for size, _ in results) + " |",
             "|---|---|" + "---|" * len(results)]
    for case, goal in cases.items():
        lines.append(f"| {case} | {goal} | " + " | ".join(cells.get((size.name, case), "-") for size, _ in results)
                     + " |")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[Size]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown or not names:
        raise ValueError(f"--sizes {text}: expected a comma-separated list of {', '.join(SIZES)}")
    return [SIZES[n] for n in dict.fromkeys(names)]


def parse_counts(boxes: str, prefixes: str) -> list[Size]:
    """--boxes 1000,10000 --prefixes 100000,1000000 -> one size per pair."""
    def numbers(text: str, flag: str) -> list[int]:
        try:
            found = [int(n.replace("_", "")) for n in text.split(",") if n.strip()]
        except ValueError:
            raise ValueError(f"{flag} {text}: expected comma-separated whole numbers") from None
        if not found:
            raise ValueError(f"{flag} is needed with {'--prefixes' if flag == '--boxes' else '--boxes'}")
        return found
    box_counts, prefix_counts = numbers(boxes, "--boxes"), numbers(prefixes, "--prefixes")
    if len(box_counts) != len(prefix_counts):
        raise ValueError(f"--boxes {boxes} and --prefixes {prefixes}: as many counts in each")
    return [custom_size(b, p) for b, p in zip(box_counts, prefix_counts, strict=True)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_control", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="2,000 decisions, 0.3 s per rate, size 1k, no wrk (a few seconds plus the start-up)")
    parser.add_argument("--sizes", help=f"comma-separated fleet sizes: {', '.join(SIZES)} (default 1k,10k; quick 1k)")
    parser.add_argument("--boxes", help="comma-separated box counts, each with the --prefixes count at the same "
                                        "place (e.g. --boxes 1000,10000,20000 --prefixes 100000,1000000,2000000); "
                                        "instead of --sizes")
    parser.add_argument("--prefixes", help="comma-separated prefix counts (half announced, half coverage), one "
                                           "per --boxes count")
    parser.add_argument("--poll-seconds", type=float,
                        help="how long the real process's health rounds over fake boxes are watched, 0 for no "
                             "fake boxes (default 10; quick 3)")
    parser.add_argument("--samples", type=int, help="decisions timed one by one (default 20,000; quick 2,000)")
    parser.add_argument("--seconds", type=float, help="wall-clock budget per rate case (default 3; quick 0.3)")
    parser.add_argument("--http-seconds", type=float,
                        help="wrk run against the real process, 0 for none (default 5; quick 0)")
    parser.add_argument("--no-process", action="store_true", help="skip the real `oca control serve` cases")
    parser.add_argument("--config-shape", choices=FORMATS, default="files",
                        help="how the fleet's prefixes are written: files (fleet.prefixes_file, CSV) or inline "
                             "(every box's prefixes in the fleet YAML) (default files)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic fleet and clients")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)
    args.samples = args.samples if args.samples is not None else (2000 if args.quick else 20_000)
    args.seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 3.0)
    args.http_seconds = args.http_seconds if args.http_seconds is not None else (0.0 if args.quick else 5.0)
    args.poll_seconds = args.poll_seconds if args.poll_seconds is not None else (3.0 if args.quick else 10.0)
    try:
        if args.boxes is not None or args.prefixes is not None:
            if args.sizes is not None:
                raise ValueError("--sizes or --boxes/--prefixes, not both")
            args.sizes = parse_counts(args.boxes or "", args.prefixes or "")
        else:
            args.sizes = parse_sizes(args.sizes if args.sizes is not None else ("1k" if args.quick else "1k,10k"))
    except ValueError as exc:
        parser.error(str(exc))
    if not args.poll_seconds >= 0:
        parser.error(f"--poll-seconds {args.poll_seconds}: must be 0 or more")
    if args.samples < 1:
        parser.error(f"--samples {args.samples}: must be at least 1")
    if not args.seconds > 0:
        parser.error(f"--seconds {args.seconds}: must be more than 0")
    if not args.http_seconds >= 0:
        parser.error(f"--http-seconds {args.http_seconds}: must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_at_start = os.getloadavg()[0]  # other work on the machine: the figures depend on it
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    results: list[tuple[Size, list[Figure]]] = []
    for size in args.sizes:
        world = build_world(args.seed, sites=size.sites, boxes_per_site=size.boxes_per_site,
                            announced=size.announced, coverage=size.coverage, clients=max(args.samples, 2000))
        progress(f"size {size.name}: {len(world.fleet.sites):,} sites, {len(world.fleet.boxes):,} boxes, "
                 f"{size.announced + size.coverage:,} prefixes, {len(world.titles)} titles, "
                 f"{len(world.clients):,} clients")
        rows = measure(world, seconds=args.seconds, samples=args.samples, progress=progress)
        if not args.no_process:
            rows += measure_serving(world, shape=args.config_shape, http_seconds=args.http_seconds,
                                    poll_seconds=args.poll_seconds, progress=progress)
        results.append((size, rows))
        del world
    print(machine_line(args))
    print()
    print(render_sizes(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": machine_line(args), "p99_goal_ms": P99_GOAL_MS, "playlists_goal": PLAYLISTS_GOAL,
                       "startup_goal_s": STARTUP_GOAL_S,
                       "sizes": [{"size": size.name, "boxes": size.boxes, "prefixes": size.announced + size.coverage,
                                  "rows": [r.as_json() for r in rows]} for size, rows in results]}, fh, indent=2)
            fh.write("\n")
    progress(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
