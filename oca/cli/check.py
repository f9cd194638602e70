"""`oca check-config FILE`: the start-up checks of `oca serve` or `oca control serve`, without serving.

Which service a file is for: `--box` or `--control` says so; otherwise a file with a top-level `fleet` key,
or with control-plane sections and no box section, is a control-plane config, anything else a box config.
Prints `FILE: ok` (exit 0), or one line per problem, `FILE: key: problem` (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from oca.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

BOX_SECTIONS = frozenset({"box", "server", "admin", "storage", "http", "fetch", "control", "firmware"})
CONTROL_SECTIONS = frozenset({"fleet", "listen", "public_url", "coverage_file", "state", "state_password_file",
                              "health", "steering", "auth", "invalidation", "popularity", "fill", "rollout",
                              "replica", "lab"})


def kind_of(path: str) -> str:
    """"box" or "control", from the file's top-level keys (a file that cannot be read: "box", whose check
    then reports why)."""
    from oca.config.settings import read_yaml

    try:
        keys = set(read_yaml(path))
    except ConfigError:
        return "box"
    if "fleet" in keys or (keys & CONTROL_SECTIONS and not keys & BOX_SECTIONS):
        return "control"
    return "box"


def problems_of(path: str, kind: str, *, reload: bool = False) -> list[ConfigError]:
    if kind == "control":
        from control.preflight import check_control

        return check_control(path)[1]
    from oca.serve.preflight import check_box

    return check_box(path, reload=reload)[1]


def report(path: str, kind: str, *, reload: bool = False) -> None:
    """Print `FILE: ok`, or every problem on stderr (one line each) and exit 2."""
    problems = problems_of(path, kind, reload=reload)
    if not problems:
        click.echo(f"{path}: ok")
        return
    for problem in problems:
        click.echo(str(problem), err=True)
    sys.exit(2)


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--box", "forced", flag_value="box", help="FILE is a box config (oca serve).")
@click.option("--control", "forced", flag_value="control", help="FILE is a control-plane config (oca control serve).")
@click.option("--reload", is_flag=True, help="Check before a SIGHUP reload of a running box: its admin port "
                                             "(which a reload keeps) is not bind-tested.")
def check_config(file: str, forced: str | None, reload: bool) -> None:
    """Run every start-up check on FILE (settings, the files it names, writable directories, free ports):
    print FILE: ok and exit 0, or one line per problem and exit 2."""
    report(file, forced or kind_of(file), reload=reload)


def check_option(fn: F) -> F:
    """`--check` on `oca serve` and `oca control serve`: the start-up checks only, as `oca check-config`."""
    return click.option("--check", is_flag=True, help="Run the start-up checks (as `oca check-config`), print "
                        "FILE: ok or one line per problem, exit 0 or 2; serve nothing.")(fn)
