"""`oca serve`: run the box (master, workers, admin port) in the foreground; `--check` only checks."""

from __future__ import annotations

import click

from oca.cli.check import check_option
from oca.cli.options import config_option, run_service
from oca.serve.preflight import load_checked_box


@click.command()
@config_option
@click.option("--loop", "loop_kind", type=click.Choice(["uvloop", "asyncio"]), default="uvloop",
              show_default=True, help="Event loop of the workers and the master.")
@check_option
def serve(config_path: str, loop_kind: str, check: bool) -> None:
    """Serve the cache on the data port until SIGTERM; SIGHUP reloads the config."""
    if check:
        from oca.cli.check import report

        report(config_path, "box")
        return
    config = load_checked_box(config_path)  # every start-up check; all problems, one line each (exit 2)
    from oca.serve.master import Master

    run_service(lambda: Master(config_path, config, loop_kind).run(), name="master", level=config.log.level,
                loop_kind=loop_kind)
