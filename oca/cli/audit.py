"""`oca audit`: the control plane's audit log (who drained, invalidated, ingested, rolled out what), filtered by
the control plane (GET /v1/audit?action=&subject=&operator=&since=&limit=)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import click

from oca.cli.control import control_options
from oca.cli.format import table
from oca.errors import ConfigError
from oca.wire.control_client import ControlClient

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """`--since`: a duration back from now (30s, 15m, 2h, 7d), epoch seconds, or an ISO 8601 time (UTC unless
    it names its zone); the epoch seconds it means."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError("oca audit", "--since", f"expected a duration (30s, 15m, 2h, 7d), epoch seconds or an "
                          f"ISO 8601 time, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@click.command("audit")
@control_options
@click.option("--action", default=None, help="Only this action (invalidate, drain, undrain, catalog, rollout...).")
@click.option("--subject", default=None, help="Only entries about this subject (a box, a title, a roll-out).")
@click.option("--operator", default=None, help="Only this operator (user@host).")
@click.option("--since", default=None, metavar="TIME|DURATION",
              help="Only entries at or after TIME (ISO 8601, or epoch seconds) or in the last DURATION (2h, 7d).")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True,
              help="At most this many entries (the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def audit(client: ControlClient, action: str | None, subject: str | None, operator: str | None, since: str | None,
          limit: int, as_json: bool) -> None:
    """A table of the audit log, oldest first: time (UTC), operator, action, subject, detail."""
    query = {"limit": str(limit)}
    for name, value in (("action", action), ("subject", subject), ("operator", operator)):
        if value:
            query[name] = value
    if since is not None:
        query["since"] = repr(parse_since(since, time.time()))
    answer = client.request("GET", "/v1/audit", query=query)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [["TIME", "OPERATOR", "ACTION", "SUBJECT", "DETAIL"]]
    for entry in answer["entries"]:
        when = datetime.fromtimestamp(entry["time"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        detail = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(entry["detail"].items()))
        rows.append([when, entry["operator"], entry["action"], entry["subject"], detail])
    for line in table(rows):
        click.echo(line)
    click.echo(f"{len(answer['entries'])} entries", err=True)
