"""`oca serve`: run the box (master, workers, admin port) in the foreground."""

from __future__ import annotations

import click

from oca.cli.options import config_option, run_service
from oca.config import load_box_config


@click.command()
@config_option
@click.option("--loop", "loop_kind", type=click.Choice(["uvloop", "asyncio"]), default="uvloop",
              show_default=True, help="Event loop of the workers and the master.")
def serve(config_path: str, loop_kind: str) -> None:
    """Serve the cache on the data port until SIGTERM; SIGHUP reloads the config."""
    config = load_box_config(config_path)
    from oca.serve.master import Master

    run_service(lambda: Master(config_path, config, loop_kind).run(), name="master", level=config.log.level,
                loop_kind=loop_kind)
