"""dash.js reads the boxes' CMSD (CTA-5006) and acts on it (issue 18, "CMSD").

dash.js with the settings README recommends (/lab/players.js: `cmsd.enabled`, `abr.applyMb`), a site-A
client on a lab box:
- a healthy box costs nothing: every segment answer carries CMSD-Dynamic (the box's String, `etp`) without
  `du`/`mb`, and dash.js climbs above the rate a box in duress would suggest;
- the box goes over its egress target (`http.duress_egress` lowered to 1 bit/s by a config reload): its
  answers now say `du` and `mb` (1.5 Mbit/s, the default `http.duress_max_bitrate`), and dash.js steps its
  video down to a rendition at or under `mb` (or leaves the box) within a few segments.
The control plane keeps steering to the box (its load is far under capacity): what moved the player is CMSD.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import http_sfv
import pytest
import yaml
from playwright.sync_api import BrowserContext

from oca.lab import Lab
from tests.players.browser import Record
from tests.players.test_players import _play, _wait

MB_KBPS = 1500  # http.duress_max_bitrate's default, in CMSD's kbps


def _dynamic(value: str) -> tuple[object, dict[str, Any]]:
    field = http_sfv.List()
    field.parse(value.encode())
    return field[-1].value, dict(field[-1].params)  # the last hop: the edge, the box


def _reload_with(lab: Lab, box_id: str, duress_egress: int | None) -> None:
    """Set (or remove) the box's http.duress_egress and reload it (SIGHUP: the master checks the file)."""
    box = lab.box(box_id)
    with open(box.config_path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    http = config.setdefault("http", {})
    if duress_egress is None:
        http.pop("duress_egress", None)
    else:
        http["duress_egress"] = duress_egress
    with open(box.config_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)
    assert box.child.process is not None
    os.kill(box.child.process.pid, signal.SIGHUP)


@pytest.fixture
def duress(healed_lab: Lab) -> Iterator[Callable[[str], None]]:
    """Puts a box over its egress target; afterwards it has none again."""
    changed: list[str] = []

    def put(box_id: str) -> None:
        changed.append(box_id)
        _reload_with(healed_lab, box_id, 1)

    yield put
    for box_id in changed:
        _reload_with(healed_lab, box_id, None)


def _video_kbps(url: str) -> int | None:
    """The ladder rung of a video fragment, from its rendition directory (oca.content.ladder)."""
    for rung, kbps in (("/360p/", 800), ("/720p/", 2400), ("/1080p/", 4500)):
        if rung in url:
            return kbps
    return None


def test_dash_js_steps_down_when_its_box_is_in_duress(healed_lab: Lab, browser: BrowserContext,
                                                      duress: Callable[[str], None],
                                                      record_property: Callable[[str, object], None]) -> None:
    lab = healed_lab
    page, _ = _play(lab, browser, "dash", settings="recommended")
    rec = _wait(page, "rec.samples.length && rec.samples.at(-1)[1] >= 4 && "
                      "rec.fragments.some(f => f.kind === 'video' && !/\\/360p\\//.test(f.url))", 30)
    box = lab.box_serving(rec.fragments()[-1][1])
    assert box is not None, rec.summary()
    healthy = [r for r in rec.raw["responses"] if r["status"] == 200]
    assert healthy and all(r["cmsdDynamic"] for r in healthy), healthy[:3]
    for r in healthy:
        name, params = _dynamic(r["cmsdDynamic"])
        assert name == f"oca-{lab.box_serving(r['url'])}" and isinstance(params.get("etp"), int), r
        assert "du" not in params and "mb" not in params, r  # a healthy box suggests nothing
    top = max(_video_kbps(url) or 0 for _, url in rec.fragments())
    assert top > MB_KBPS, rec.summary()  # CMSD on, box healthy: dash.js plays above what duress would allow

    duress(box)
    rec = _wait(page, "rec.responses.some(r => r.cmsdDynamic && /;du/.test(r.cmsdDynamic))", 20)
    first = min(r["t"] for r in rec.raw["responses"] if r["cmsdDynamic"] and ";du" in r["cmsdDynamic"])
    said = next(r for r in rec.raw["responses"] if r["t"] == first)
    assert _dynamic(said["cmsdDynamic"])[1] == {"etp": _dynamic(said["cmsdDynamic"])[1]["etp"], "du": True,
                                                "mb": MB_KBPS}, said
    # the video fragments dash.js asks for after the box said so: at or under mb, or from another box
    rec = _wait(page, f"rec.fragments.filter(f => f.kind === 'video' && f.start > {first}).length >= 3", 30)
    after = [(url, lab.box_serving(url)) for start, url in rec.fragments(since=first)
             if _video_kbps(url) is not None]
    record_property("video_after_duress", [f"{b}:{_video_kbps(u)}" for u, b in after])
    print(f"dash.js: healthy box up to {top} kbps; {box} in duress at +{first:.0f} ms; video since: "
          f"{', '.join(f'{b} {_video_kbps(u)} kbps' for u, b in after)}")
    stepped = [(u, b) for u, b in after[1:] if b != box or (_video_kbps(u) or 0) <= MB_KBPS]
    assert stepped and stepped[-1] == after[-1], f"{after}\n{Record.of(page).summary()}"
    assert not [e for e in rec.errors() if e["fatal"]], rec.summary()
