"""`oca invalidate`: append to the control plane's invalidation log; optionally wait for the boxes."""

from __future__ import annotations

import json
import sys

import click

from oca.cli.control import control_options
from oca.wire.control_client import ControlClient


@click.command()
@control_options
@click.option("--key", default=None, help="One content key, e.g. titles/81239481/720p/seg_00001.m4s.")
@click.option("--prefix", default=None, help="Every key that starts with this.")
@click.option("--title", default=None, help="Every object of a title id.")
@click.option("--soft", is_flag=True, help="Mark stale (revalidate) instead of removing.")
@click.option("--reason", default="", help="Why, for the audit trail.")
@click.option("--id", "client_id", default=None, help="Idempotency id: resubmitting the same id does nothing new.")
@click.option("--wait", is_flag=True, help="Wait until every healthy box has applied it.")
@click.option("--wait-timeout", default=30.0, show_default=True, type=click.FloatRange(0, 300),
              help="Seconds --wait waits at most (on top of --timeout).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def invalidate(client: ControlClient, key: str | None, prefix: str | None, title: str | None, soft: bool,
               reason: str, client_id: str | None, wait: bool, wait_timeout: float, as_json: bool) -> None:
    """Invalidate a key, a prefix or a title on every box (pushed now; boxes also pull the log)."""
    given = [(s, v) for s, v in (("key", key), ("prefix", prefix), ("title", title)) if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --key, --prefix or --title")
    scope, value = given[0]
    answer = client.invalidate(scope, value, soft=soft, reason=reason, client_id=client_id,
                               wait=wait_timeout if wait else 0)
    if answer.get("warning"):
        click.echo(f"oca: warning: {answer['warning']}", err=True)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        entry = answer["invalidation"]
        what = "appended" if answer.get("created") else "already in the log"
        click.echo(f"invalidation {entry['seq']} ({entry['scope']} {entry['value']}) {what}")
        if wait:
            if answer.get("propagation_seconds") is not None:
                click.echo(f"applied by every healthy box in {answer['propagation_seconds']:.3f}s")
            for box in answer["pending"]:
                state = "healthy" if answer["boxes"][box]["healthy"] else "down"
                click.echo(f"pending: {box} ({state}, at seq {answer['boxes'][box]['applied_seq']})")
    if wait and not answer.get("complete"):
        sys.exit(1)
