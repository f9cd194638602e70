"""Player-aware prefetch with the real hls.js (issue 18, "Done when"): CMCD on, a title cold on its box.

Two sessions of the lab's title as a site-A viewer, the title purged from every box before each: one where
hls.js sends its default CMCD keys (with `nor`, the next object), one where it sends every key but `nor`
(the boxes get no hint: prefetch off). From the box's access log, by the session's CMCD `sid`: the share
of the session's media segment requests after the first two that were misses at the box. With hints it
must be at most 10% (≥ 90% hits); the figure without hints is printed beside it, with startup (page load
to the first `playing`) and the mean segment time (request to loaded, as hls.js saw it).

`pytest -s tests/players/test_prefetch.py` prints the README table's row for each run.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from playwright.sync_api import BrowserContext

from oca.lab import Lab
from tests.players.browser import Record, open_player

# hls.js 1.7's CMCD v1 keys (CMCD_V1_KEYS) without `nor`: the same requests, minus the hint
KEYS_WITHOUT_NOR = ["bl", "br", "bs", "cid", "d", "dl", "mtp", "nrr", "ot", "pr", "rtp", "sf", "sid", "st", "su",
                    "tb", "v"]
SEGMENTS = 24  # media segment requests per session (video and audio): 24 s of the 30 s title at 2 s segments
HIT_SHARE = 0.9  # the bound, for the requests after the first two


def _purge_title(lab: Lab, title: str) -> None:
    for box in lab.boxes:
        body = json.dumps({"scope": "title", "value": title}).encode()
        request = urllib.request.Request(f"{box.admin_url}/purge", data=body, method="POST", headers={
            "Authorization": f"Bearer {lab.box_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def _session_segments(lab: Lab, sid: str) -> list[dict[str, Any]]:
    """The session's media segment requests, from every box's access log, in the order they were answered."""
    entries = []
    for box in lab.boxes:
        path = os.path.join(lab.paths.box_dir(box.id), "access.log")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                cmcd = entry.get("cmcd")
                if (isinstance(cmcd, dict) and cmcd.get("sid") == sid and entry["key"].endswith(".m4s")
                        and "init" not in entry["key"].rsplit("/", 1)[-1]):
                    entries.append({**entry, "box": box.id})
    return sorted(entries, key=lambda e: float(e["ts"]) - float(e["ms"]) / 1000)


def _prefetch_metrics(lab: Lab) -> str:
    lines = []
    for box in lab.boxes:
        request = urllib.request.Request(f"{box.admin_url}/metrics",
                                         headers={"Authorization": f"Bearer {lab.box_token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            lines += [f"{box.id} {line}" for line in response.read().decode().splitlines()
                      if line.startswith(("oca_player_prefetch", "oca_misses"))]
    return "\n".join(lines)


def _why(lab: Lab, box_id: str, key: str) -> str:
    """The box's history of one key (`oca cache why`): when its hint fill began, when it was filled, each miss."""
    box = next(b for b in lab.boxes if b.id == box_id)
    request = urllib.request.Request(f"{box.admin_url}/cache/why/{urllib.parse.quote(key)}",
                                     headers={"Authorization": f"Bearer {lab.box_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        report = json.loads(response.read())
    events = report.get("events", [])
    return "; ".join(f"{e['at']:.3f} {e['event']} {e['detail']}" for e in events[-4:])


def _session(lab: Lab, browser: BrowserContext, keys: list[str] | None) -> dict[str, Any]:
    title = lab.titles[0]
    _purge_title(lab, title)
    sid = f"oca-prefetch-{uuid.uuid4().hex[:12]}"
    page = open_player(browser, lab.control_url, "hls", lab.master_url(title),
                       (lab.client_header, lab.site_clients["site-a"]), sid, cmcd_keys=keys)
    try:
        page.wait_for_function(f"() => window.rec && rec.firstPlaying !== null && rec.fragments.filter("
                               f"f => !f.url.includes('init')).length >= {SEGMENTS}", timeout=40_000, polling=100)
    except Exception as exc:
        raise AssertionError(f"{exc}\n{Record.of(page).summary()}") from None
    rec = Record.of(page)
    page.close()
    entries: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5  # the boxes write their access logs in batches
    while time.monotonic() < deadline and len(entries) < SEGMENTS:
        time.sleep(0.2)
        entries = _session_segments(lab, sid)
    assert len(entries) >= SEGMENTS, (len(entries), rec.summary())
    later = entries[2:SEGMENTS]
    misses = [e for e in later if e["cache"] == "miss"]
    fragments = [f for f in rec.raw["fragments"] if "init" not in f["url"]][:SEGMENTS]
    return {"miss_share": len(misses) / len(later), "misses": len(misses), "counted": len(later),
            "startup_ms": rec.first_playing, "segment_ms": statistics.mean(f["t"] - f["start"] for f in fragments),
            "reasons": sorted({str(e.get("miss")) for e in misses}), "first_two": [e["cache"] for e in entries[:2]],
            "missed": [e["key"].split("/", 2)[-1] for e in misses],
            "why": [f"{e['key'].split('/', 2)[-1]} asked at {float(e['ts']) - float(e['ms']) / 1000:.3f} for "
                    f"{e['ms']:.0f} ms: {_why(lab, e['box'], e['key'])}" for e in misses],
            "metrics": ", ".join(line.replace(" oca_player_prefetch_", ": ").replace("_total", "").replace(".0", "")
                                for line in _prefetch_metrics(lab).splitlines()
                                if "oca_player_prefetch_" in line and not line.endswith(" 0.0")),
            "summary": rec.summary() + "\n" + "\n".join(
                f"  {e['key'].rsplit('/', 2)[-2:]} {e['cache']} {e.get('miss')} {e['ms']:.0f}ms "
                f"nor={e['cmcd'].get('nor')}" for e in entries) + "\n" + _prefetch_metrics(lab)}


def test_hls_js_hints_make_a_cold_title_hit_at_its_box(lab: Lab, browser: BrowserContext,
                                                        record_property: Callable[[str, object], None]) -> None:
    off = _session(lab, browser, KEYS_WITHOUT_NOR)
    on = _session(lab, browser, None)
    for name, run in (("prefetch off (no nor)", off), ("prefetch on (nor)", on)):
        print(f"| {name} | {run['counted'] - run['misses']}/{run['counted']} hits "
              f"({1 - run['miss_share']:.0%}) | {run['startup_ms']:.0f} ms | {run['segment_ms']:.0f} ms | "
              f"first two: {', '.join(run['first_two'])}; miss reasons: {', '.join(run['reasons']) or '-'} |")
        if run is on:
            print(f"  misses after the first two: {', '.join(run['missed']) or '-'}")
            print("".join(f"    {line}\n" for line in run["why"]), end="")
            print(f"  the boxes' player prefetch counters: {run['metrics']}")
        for key in ("miss_share", "startup_ms", "segment_ms"):
            record_property(f"{name.split(' (')[0].replace(' ', '_')}_{key}", round(run[key], 3))
    # without hints a cold title misses on every segment: what the hints are measured against
    assert off["miss_share"] >= 0.5, off
    assert 1 - on["miss_share"] >= HIT_SHARE, (on["summary"] + f"\n{on['misses']}/{on['counted']} misses:\n"
                                               + "\n".join(on["why"]))
    # and the misses are explained: a purged title's objects miss as `invalidated`
    assert set(off["reasons"]) <= {"invalidated", "first", "popular"}, off["reasons"]
