"""`oca top`: a live view of one box (its admin API's /status and /metrics) or of the fleet (the control plane's
/v1/fleet), redrawn every --interval seconds until Ctrl-C, like varnishstat; --once prints one frame."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from oca.cli.control import make_client
from oca.cli.format import bytes_option, sizes, table
from oca.cli.options import config_option, timeout_option
from oca.config import load_box_config
from oca.top import BoxSample, FleetSample, Frame, box_frame, fleet_frame, frame_lines
from oca.wire.admin_client import AdminClient, AdminError, admin_text

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen


@click.command("top")
@config_option
@click.option("--fleet", "fleet_view", is_flag=True, help="The fleet via the control plane instead of one box.")
@click.option("--control", "control_url", metavar="URL[,URL...]", default=None,
              help="With --fleet: the control plane's base URL(s) [default: $OCA_CONTROL_URL or "
                   "http://127.0.0.1:8090].")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="With --fleet: file holding the operator token [default: $OCA_CONTROL_TOKEN].")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=2.0, show_default=True, metavar="SECONDS",
              help="Seconds between refreshes (and between the two samples of the first frame).")
@click.option("--once", is_flag=True, help="Print one frame (two samples --interval apart) and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print each frame as one JSON document (use with --once).")
@timeout_option()
@bytes_option
def top(config_path: str, fleet_view: bool, control_url: str | None, token_file: str | None, interval: float,
        once: bool, as_json: bool, timeout: float, raw_bytes: bool) -> None:
    """Requests/s, egress, hit ratio by bytes, tiers, fills and players (CMCD) of one box (--config), or per
    box state, version, egress, hit ratio and load of the fleet (--fleet); redrawn until Ctrl-C."""
    size = sizes(raw_bytes)
    sample: Callable[[], Any]
    frame_of: Callable[[Any, Any], Frame]
    if fleet_view:
        client = make_client(control_url, token_file, timeout)
        sample = lambda: FleetSample(time.monotonic(), client.fleet())  # noqa: E731
        frame_of = lambda old, new: fleet_frame(old, new, size)  # noqa: E731
    else:
        admin = AdminClient.for_box(load_box_config(config_path), timeout)
        sample = lambda: _box_sample(admin)  # noqa: E731
        frame_of = lambda old, new: box_frame(old, new, size)  # noqa: E731
    try:
        old = sample()
        while True:
            time.sleep(interval)
            new = sample()
            frame = frame_of(old, new)
            if as_json:
                click.echo(json.dumps({"title": frame.title, **frame.data}, indent=None if not once else 2))
            else:
                text = "\n".join(frame_lines(frame, table))
                click.echo(text if once or not sys.stdout.isatty() else _CLEAR + text)
            if once:
                return
            old = new
    except KeyboardInterrupt:  # Ctrl-C ends the live view: exit 0
        return


def _box_sample(admin: AdminClient) -> BoxSample:
    at = time.monotonic()
    status = admin.request("GET", "/status")
    try:
        return BoxSample.parse(at, status, admin_text(admin, "/metrics"))
    except ValueError as exc:
        raise AdminError(502, f"box answered /metrics with something that is not Prometheus text: {exc}") from None
