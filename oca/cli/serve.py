"""`oca serve`: run the box (master, workers, admin port) in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from oca.cli.options import config_option
from oca.config import load_box_config


@click.command()
@config_option
@click.option("--loop", "loop_kind", type=click.Choice(["uvloop", "asyncio"]), default="uvloop",
              show_default=True, help="Event loop of the workers and the master.")
def serve(config_path: str, loop_kind: str) -> None:
    """Serve the cache on the data port until SIGTERM; SIGHUP reloads the config."""
    config = load_box_config(config_path)
    level = getattr(logging, config.log.level.upper())
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s oca master %(levelname)s %(message)s")
    from oca.serve.master import Master
    from oca.serve.worker import new_event_loop

    loop = new_event_loop(loop_kind)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Master(config_path, config, loop_kind).run())
    finally:
        loop.close()
