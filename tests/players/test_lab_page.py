"""The lab's own page (/lab on the control plane) plays video in a real browser: issue 5's "Done when" asks
for a screenshot of a non-blank frame."""

from __future__ import annotations

import base64
from typing import Any

from playwright.sync_api import BrowserContext

from oca.lab import Lab

# Reads the screenshot's pixels back in the browser (no image library needed here): how many distinct
# colours a sample of pixels has, and the spread of their brightness.
_PIXELS = """async (png) => {
  const img = new Image();
  img.src = "data:image/png;base64," + png;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.width;
  canvas.height = img.height;
  const g = canvas.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, img.width, img.height).data;
  const colours = new Set();
  let n = 0, sum = 0, squares = 0;
  for (let i = 0; i < d.length; i += 4 * 31) {
    const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
    n += 1; sum += v; squares += v * v;
    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  const mean = sum / n;
  return { width: img.width, height: img.height, colours: colours.size, spread: Math.sqrt(squares / n - mean * mean) };
}"""


def test_the_lab_page_plays_video(lab: Lab, browser: BrowserContext, tmp_path: Any) -> None:
    page = browser.new_page()
    page.goto(f"{lab.page_url}?title={lab.titles[0]}&site=a&player=hls&autoplay=1")
    page.wait_for_function("() => { const s = window.labState; return s && s.firstPlayingMs !== null && "
                           "document.getElementById('video').currentTime >= 1.5; }", timeout=20_000)
    state = page.evaluate("() => window.labState")
    assert state["fragments"] and all(f["box"] in {b.id for b in lab.boxes} for f in state["fragments"]), state
    assert not [e for e in state["errors"] if e["fatal"]], state["errors"]
    png = page.locator("#video").screenshot()
    (tmp_path / "lab-page-video.png").write_bytes(png)
    pixels = page.evaluate(_PIXELS, base64.b64encode(png).decode())
    assert pixels["colours"] > 50 and pixels["spread"] > 10, pixels  # a picture, not a blank or flat frame
