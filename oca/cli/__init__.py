"""The `oca` command: the only place that prints, exits, or turns errors into exit codes."""

from __future__ import annotations

import sys

import click

from oca import __version__
from oca.cli.cache import cache
from oca.cli.catalog import catalog
from oca.cli.check import check_config
from oca.cli.content import content
from oca.cli.control import control
from oca.cli.fill import fill
from oca.cli.firmware import firmware
from oca.cli.fleet import fleet
from oca.cli.invalidate import invalidate
from oca.cli.lab import lab
from oca.cli.serve import serve
from oca.cli.steer import steer
from oca.cli.token import token
from oca.errors import OcaError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oca")
def cli() -> None:
    """OCA: an open, Open Connect-style CDN for video."""


cli.add_command(serve)
cli.add_command(check_config)
cli.add_command(cache)
cli.add_command(control)
cli.add_command(fleet)
cli.add_command(invalidate)
cli.add_command(steer)
cli.add_command(catalog)
cli.add_command(token)
cli.add_command(content)
cli.add_command(lab)
cli.add_command(fill)
cli.add_command(firmware)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except OcaError as exc:
        for line in str(exc).splitlines() or [""]:  # ConfigProblems: one line per problem
            click.echo(f"oca: {line}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("oca: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
