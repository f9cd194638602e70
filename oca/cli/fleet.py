"""`oca fleet status|drain|undrain`: the fleet as the control plane sees it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from oca.cli.control import control_options
from oca.cli.format import bytes_option, sizes
from oca.wire.control_client import ControlClient


@click.group()
def fleet() -> None:
    """Show the fleet's health; drain and undrain boxes."""


@fleet.command("status")
@control_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--titles", is_flag=True, help="Where each title is live instead: a table of titles by boxes.")
@bytes_option
def status(client: ControlClient, as_json: bool, titles: bool, raw_bytes: bool) -> None:
    """A table: box, site, health, load, version, draining, tiers (or, with --titles, title x box)."""
    if titles:
        _titles(client.request("GET", "/v1/fleet/titles"), as_json, sizes(raw_bytes))
        return
    answer = client.fleet()
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows: list[tuple[str, ...]] = [("BOX", "SITE", "HEALTH", "LOAD", "VERSION", "DRAINING", "TIERS")]
    rows += [_row(box) for box in answer["boxes"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1])
    healthy = sum(1 for b in answer["boxes"] if b["healthy"])
    click.echo(f"{healthy}/{len(answer['boxes'])} boxes healthy; invalidation log at seq "
               f"{answer['last_invalidation_seq']}", err=True)


def _row(box: dict[str, Any]) -> tuple[str, ...]:
    health = "up" if box["healthy"] else f"DOWN ({box['error']})" if box.get("error") else "DOWN"
    draining = "operator" if box.get("drained_by_operator") else "box" if box["draining"] else "no"
    tiers = ",".join(f"{t['name']}:{t['state']}" + (f" {100 * t['used'] / t['capacity']:.0f}%"
                                                    if t.get("capacity") and t.get("used") is not None else "")
                     for t in box.get("tiers") or []) or "-"
    return (box["id"], box["site"], health, f"{100 * box['load']:.0f}%", str(box.get("version") or "-"),
            draining, tiers)


@fleet.command("drain")
@control_options
@click.argument("box")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def drain(client: ControlClient, box: str, as_json: bool) -> None:
    """Give BOX no new sessions; its sessions move at their next steering reload."""
    answer = client.drain(box, True)
    click.echo(json.dumps(answer, indent=2) if as_json else f"{box} drained")


@fleet.command("undrain")
@control_options
@click.argument("box")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def undrain(client: ControlClient, box: str, as_json: bool) -> None:
    """Let BOX take new sessions again."""
    answer = client.drain(box, False)
    click.echo(json.dumps(answer, indent=2) if as_json else f"{box} undrained")


def _titles(answer: dict[str, Any], as_json: bool, size: Callable[[float], str]) -> None:
    """Title x box: `live` (every file there), `part N/M` (N objects of M files), `-` (nothing)."""
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    boxes = [b["id"] for b in answer["boxes"]]
    rows: list[list[str]] = [["TITLE", "FILES", "SIZE", *boxes]]
    for title in answer["titles"]:
        cells = []
        for box in boxes:
            held = title["boxes"].get(box)
            cells.append("-" if not held else "live" if held["live"] else f"part {held['objects']}/{title['files']}")
        rows.append([title["id"], str(title["files"]), size(title["size"]), *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    live = sum(len(t["live"]) for t in answer["titles"])
    click.echo(f"{len(answer['titles'])} titles, {live} (title, box) pairs live", err=True)
