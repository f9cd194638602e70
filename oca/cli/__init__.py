"""The `oca` command: the only place that prints, exits, or turns errors into exit codes.

Exit codes (oca.errors, README "Exit codes"): 0 ok, 1 the operation failed, 2 usage or configuration (a missing
or wrong token too), 3 the control plane or the box cannot be reached or did not answer within --timeout,
4 the fill window closed before `oca fill run` completed, 130 interrupted.
"""

from __future__ import annotations

import sys

import click

from oca import __version__
from oca.cli.audit import audit
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
from oca.cli.sample import sample
from oca.cli.serve import serve
from oca.cli.steer import steer
from oca.cli.token import token
from oca.cli.top import top
from oca.errors import INTERRUPTED, UNREACHABLE, USAGE, ClientError, OcaError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oca")
def cli() -> None:
    """OCA: an open, Open Connect-style CDN for video."""


cli.add_command(serve)
cli.add_command(sample)
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
cli.add_command(top)
cli.add_command(audit)


def exit_code(exc: OcaError) -> int:
    """The one mapping of a client's failed exchange to an exit code; other errors carry their own."""
    if isinstance(exc, ClientError):
        if exc.unreachable:
            return UNREACHABLE
        if exc.status in (401, 403):
            return USAGE
    return exc.exit_code


def message(exc: OcaError) -> str:
    """The one line printed for an error: a refused token also says where the token comes from."""
    if isinstance(exc, ClientError) and not exc.unreachable and exc.status in (401, 403):
        return f"{exc}; {exc.credential}"
    return str(exc)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except OcaError as exc:
        for line in message(exc).splitlines() or [""]:  # ConfigProblems: one line per problem
            click.echo(f"oca: {line}", err=True)
        sys.exit(exit_code(exc))
    except click.exceptions.Abort:
        click.echo("oca: aborted", err=True)
        sys.exit(INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
