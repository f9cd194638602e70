"""`oca steer explain`: which boxes a client would be steered to for a title, and why."""

from __future__ import annotations

import json

import click

from oca.cli.control import control_options
from oca.cli.format import table
from oca.wire.control_client import ControlClient


@click.group()
def steer() -> None:
    """Inspect steering decisions."""


@steer.command("explain")
@control_options
@click.option("--ip", required=True, help="The client's address.")
@click.option("--title", required=True, help="The title id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def explain(client: ControlClient, ip: str, title: str, as_json: bool) -> None:
    """Show the pathways in order and the reason for each candidate box."""
    answer = client.explain(ip, title)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(answer["note"])
    if answer["status"] != 200:
        click.echo(f"status {answer['status']}: no pathways")
    if answer["pathways"]:
        rows: list[tuple[str, ...]] = [("#", "PATHWAY", "URL")]
        rows += [(f"{i}.", p["id"], p["data_url"]) for i, p in enumerate(answer["pathways"], 1)]
        for line in table(rows):
            click.echo(line)
    if answer["candidates"]:
        rows = [("BOX", "SITE", "TIER", "REASON")]
        rows += [(c["box"], c["site"], c["tier"], c["reason"]) for c in answer["candidates"]]
        for line in table(rows):
            click.echo(line)
