"""Real players in Debian's headless Chromium, driven with playwright, and what their pages recorded.

Rules kept here:
- The browser is /usr/bin/chromium (Debian builds it with the proprietary codecs, so H.264/AAC play);
  playwright never downloads one. Each test gets a fresh user-data directory.
- The test pages (pages/*.html, pages/record.js) are handed to the browser by playwright under the
  control plane's own origin (`<control_url>/__players/...`): the pages must send `X-OCA-Lab-Client` to
  the control plane, a custom header that a cross-origin page could send only after a CORS preflight,
  which the control plane does not answer. Everything else goes over the network untouched: the players
  from the lab's `/lab/vendor/` (node_modules/, pinned by package.json), manifests and steering from the
  control plane, segments from boxes (which never see the header).
- The pages record; this module only reads `window.rec` back and computes from it (startup, stalls,
  which box served what), so the assertions read as the issue states them.
"""

from __future__ import annotations

import mimetypes
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import BrowserContext, Page, Route, sync_playwright

PAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pages")
CHROMIUM = "/usr/bin/chromium"
# issue 5, "Players": no sandbox (root in CI), no GPU, no QUIC, nothing that phones home, autoplay allowed
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--autoplay-policy=no-user-gesture-required"]
PREFIX = "/__players/"
H264_AAC = 'video/mp4; codecs="avc1.64001f,mp4a.40.2"'

@contextmanager
def chromium(user_data_dir: str) -> Iterator[BrowserContext]:
    """A headless Chromium (new headless) with a fresh profile in `user_data_dir`."""
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(user_data_dir, executable_path=CHROMIUM, headless=True,
                                                        args=FLAGS)
        try:
            yield context
        finally:
            context.close()


def _fulfil(route: Route) -> None:
    name = urllib.parse.urlsplit(route.request.url).path.split(PREFIX, 1)[1]
    file = os.path.join(PAGES, name)
    if "/" in name or not os.path.isfile(file):
        route.fulfill(status=404, body="not a test page")
        return
    content_type = mimetypes.guess_type(file)[0] or "application/octet-stream"
    with open(file, "rb") as fh:
        route.fulfill(status=200, body=fh.read(), headers={"Content-Type": content_type,
                                                             "Cache-Control": "no-store"})


def open_player(context: BrowserContext, control_url: str, player: str, src: str, client: tuple[str, str],
                sid: str, requests: list[tuple[str, str | None]] | None = None, settings: str = "default",
                cmcd_keys: list[str] | None = None) -> Page:
    """Load pages/<player>.html at the control plane's origin, playing `src` as a lab client (`client`: the
    header and the address it names), with `sid` as the CMCD session id it sends to boxes. `requests`
    collects (URL, the client header or None) of every request the page makes, as the browser sent it.
    `settings`: "default" (the player's own) or "recommended" (the lab's /lab/players.js, as README says).
    `cmcd_keys`: the CMCD keys hls.js sends (its includeKeys), when not its default set."""
    context.route(f"{control_url}{PREFIX}**", _fulfil)
    # A page playwright hands over has no address of its own, so Chromium's Local Network Access counts
    # it as public and refuses its requests to loopback boxes; served over loopback it would need nothing.
    context.grant_permissions(["local-network-access"], origin=control_url)
    page = context.new_page()
    if requests is not None:
        page.on("request", lambda r: requests.append((r.url, r.headers.get(client[0].lower()))))
    params = {"src": src, "header": client[0], "client": client[1], "sid": sid, "settings": settings}
    if cmcd_keys is not None:
        params["cmcdKeys"] = ",".join(cmcd_keys)
    query = urllib.parse.urlencode(params)
    page.goto(f"{control_url}{PREFIX}{player}.html?{query}")
    return page


def h264_supported(page: Page) -> bool:
    return bool(page.evaluate(f"() => MediaSource.isTypeSupported({H264_AAC!r})"))


@dataclass(frozen=True)
class Record:
    """What a test page recorded (window.rec); times are ms since the page's performance.timeOrigin."""

    raw: dict[str, Any]

    @classmethod
    def of(cls, page: Page) -> Record:
        return cls(page.evaluate("() => JSON.parse(JSON.stringify(window.rec))"))

    @property
    def first_playing(self) -> float | None:
        value = self.raw["firstPlaying"]
        return None if value is None else float(value)

    @property
    def current_time(self) -> float:
        samples = self.raw["samples"]
        return float(samples[-1][1]) if samples else 0.0

    def longest_stall(self, since: float = 0.0) -> tuple[float, float]:
        """(start, length in ms) of the longest stretch after the first "playing" (and after `since`) in which
        currentTime did not advance, while not paused and not ended: what a viewer sees as a frozen picture."""
        start = max(since, float("inf") if self.first_playing is None else self.first_playing)
        best = (start, 0.0)
        frozen_at: float | None = None
        last_time: float | None = None
        for t, current, paused, ended, *_ in self.raw["samples"]:
            if t < start or paused or ended:
                frozen_at, last_time = None, None
                continue
            if last_time is None or current > last_time:
                frozen_at, last_time = t, current
                continue
            assert frozen_at is not None
            if t - frozen_at > best[1]:
                best = (frozen_at, t - frozen_at)
        return best

    def waiting_ms(self, since: float = 0.0) -> float:
        """The longest "waiting" interval (to the next "playing", or to now) starting after `since`."""
        end = self.raw["samples"][-1][0] if self.raw["samples"] else since
        return max((float((b if b is not None else end) - a) for a, b in self.raw["waiting"] if a >= since),
                   default=0.0)

    def fragments(self, since: float = 0.0) -> list[tuple[float, str]]:
        """(requested at, URL) of the fragments loaded, in load order, that were requested after `since`."""
        return [(f["start"], f["url"]) for f in self.raw["fragments"] if f["start"] >= since]

    def steering(self) -> list[dict[str, Any]]:
        return list(self.raw["steering"])

    def errors(self) -> list[dict[str, Any]]:
        return list(self.raw["errors"])

    def summary(self) -> str:
        """A few lines for assertion messages."""
        frags = [f"{f['t']:.0f} {urllib.parse.urlsplit(f['url']).netloc} "
                 f"{urllib.parse.urlsplit(f['url']).path.rsplit('/titles/', 1)[-1]}" for f in self.raw["fragments"]]
        steer = [f"{s['t']:.0f} {s['priority']}" for s in self.raw["steering"]]
        return (f"{self.raw['player']} {self.raw['version']}: first playing {self.first_playing} ms, "
                f"currentTime {self.current_time:.2f}\n  events: {self.raw['events'][-30:]}\n"
                f"  steering: {steer[-12:]}\n  fragments: {frags[-24:]}\n  errors: {self.raw['errors'][-10:]}")
