"""`oca catalog ingest|ls`: describe a packaged title to the control plane; list what it knows.

`ingest` reads the package here (a directory, or an origin URL) and posts the record: the control plane
never needs to see the operator's files.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import click

from control.catalog import Ingested, ingest_source, title_to_json
from oca.cli.control import control_options, control_options_with
from oca.cli.format import bytes_option, sizes, table
from oca.wire.control_client import ControlClient


@click.group()
def catalog() -> None:
    """Ingest and list titles."""


async def _ingest(source: str, title_id: str, countries: list[str] | None) -> Ingested:
    async with aiohttp.ClientSession() as session:
        return await ingest_source(source, title_id, session=session, countries=countries, now=time.time())


@catalog.command("ingest")
@control_options_with(60.0)
@click.argument("source")
@click.argument("title_id")
@click.option("--countries", default=None, help="Where it may play, e.g. US,CA [default: countries.txt in "
              "the package, else everywhere].")
@click.option("--json", "as_json", is_flag=True, help="Print the stored record as JSON.")
@bytes_option
def ingest(client: ControlClient, source: str, title_id: str, countries: str | None, as_json: bool,
           raw_bytes: bool) -> None:
    """Read the HLS/DASH package at SOURCE (directory or URL) and record it as TITLE_ID."""
    codes = [c.strip() for c in countries.split(",") if c.strip()] if countries is not None else None
    started = time.monotonic()
    ingested = asyncio.run(_ingest(source, title_id, codes))
    stored = client.put_title(title_id, {"title": title_to_json(ingested.title), "mpd": ingested.mpd})
    if as_json:
        click.echo(json.dumps(stored, indent=2))
        return
    title = ingested.title
    kinds = "+".join(k for k, v in (("HLS", title.hls_master), ("DASH", title.dash_manifest)) if v)
    click.echo(f"{title.id}: {kinds}, {len(title.renditions)} renditions, {len(title.files)} files, "
               f"{sizes(raw_bytes)(title.size)}, countries {','.join(sorted(title.countries)) or 'everywhere'} "
               f"({time.monotonic() - started:.1f}s)")


@catalog.command("ls")
@control_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@bytes_option
def ls(client: ControlClient, as_json: bool, raw_bytes: bool) -> None:
    """A table of the titles: id, renditions, files, size, packages, countries."""
    answer = client.catalog()
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    size = sizes(raw_bytes)
    rows = [("TITLE", "RENDITIONS", "FILES", "SIZE", "PACKAGES", "COUNTRIES")]
    rows += [(t["id"], str(t["renditions"]), str(t["files"]), size(t["size"]),
              "+".join(k for k, v in (("hls", t["hls"]), ("dash", t["dash"])) if v) or "-",
              ",".join(t["countries"]) or "*") for t in answer["titles"]]
    for line in table(rows):
        click.echo(line)
    click.echo(f"{len(answer['titles'])} titles", err=True)
