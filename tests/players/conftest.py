"""Fixtures of the player tests: one lab for the whole session (real H.264/AAC content, made once), and a fresh
headless Chromium per test.

They skip only when a tool is missing (`make test` installs both): chromium for the browser tests, ffmpeg
for all of them (without it the lab's content is synthetic, which no player can decode).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext

from oca.lab import Lab, LabConfig
from tests.players.browser import CHROMIUM, H264_AAC, chromium, h264_supported

FFMPEG = "/usr/bin/ffmpeg"
FFPROBE = "/usr/bin/ffprobe"
# Seconds per title: a few 2 s segments to play before a box is killed, and fragments to fetch through the
# 20 s after the player failed over (issue 13: at most one pathway change in that window).
DURATION = 30


def _missing(*paths: str) -> str | None:
    gone = [p for p in paths if not os.access(p, os.X_OK)]
    return f"{' and '.join(gone)} not installed (Debian packages; make test installs them)" if gone else None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """`oca lab up` in-process: origin, control plane, boxes a1, a2 (site-a) and b1 (site-b), the title
    pre-positioned; every box on 127.0.0.1 with free ports so a developer's own `make lab` can keep running."""
    missing = _missing(FFMPEG, FFPROBE)
    if missing:
        pytest.skip(f"{missing}: the lab's content would be synthetic, which players cannot decode")
    config = LabConfig(workdir=str(tmp_path_factory.mktemp("lab")), titles=1, boxes=3, duration=DURATION,
                       synthetic=False, control_port=0, box_ports=0)
    with Lab(config) as running:
        assert running.content is not None and not running.content.synthetic
        yield running


@pytest.fixture
def healed_lab(lab: Lab) -> Iterator[Lab]:
    """The session's lab; every box a test stopped is started again afterwards, and seen healthy by the
    control plane before the next test steers to it."""
    yield lab
    stopped = [b.id for b in lab.boxes if not b.running]
    for box_id in stopped:
        lab.start_box(box_id)
    if stopped:
        lab.wait_healthy(stopped)


@pytest.fixture
def browser(tmp_path: Any) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile, once it has shown it can play the lab's H.264/AAC."""
    missing = _missing(CHROMIUM)
    if missing:
        pytest.skip(missing)
    with chromium(str(tmp_path / "chromium-profile")) as context:
        page = context.new_page()
        if not h264_supported(page):
            pytest.skip(f"{CHROMIUM} cannot play {H264_AAC} (a build without proprietary codecs): the sample "
                        "content would have to be VP9/Opus")
        page.close()
        yield context
