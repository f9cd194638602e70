"""`oca control serve`, `oca control migrate` (a SQLite state into PostgreSQL), and the options every
control-plane command shares (--control, --token-file, --timeout).

The operator token comes from --token-file, else the environment variable OCA_CONTROL_TOKEN (the token
itself); the control plane's URL from --control, else OCA_CONTROL_URL, else http://127.0.0.1:8090.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from oca.cli.check import check_option
from oca.cli.options import DEFAULT_TIMEOUT, run_service, timeout_option
from oca.errors import ConfigError
from oca.secret_files import read_secret
from oca.wire.control_client import ControlClient

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONTROL_URL = "http://127.0.0.1:8090"
DEFAULT_CONTROL_CONFIG = "/etc/oca/control.yaml"


def control_options(fn: F) -> F:
    """Adds --control, --token-file and --timeout and passes a ready ControlClient as `client`."""
    return control_options_with(DEFAULT_TIMEOUT)(fn)


def control_options_with(default_timeout: float) -> Callable[[F], F]:
    """control_options with another default --timeout (a command whose answer takes longer)."""
    return functools.partial(_control_options, default_timeout=default_timeout)


def _control_options(fn: F, default_timeout: float) -> F:
    @click.option("--control", "control_url", metavar="URL[,URL...]", default=None,
                  help="The control plane's base URL, or its replicas' separated by commas (tried in turn) "
                       f"[default: $OCA_CONTROL_URL or {DEFAULT_CONTROL_URL}].")
    @click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                  help="File holding the operator token [default: the token in $OCA_CONTROL_TOKEN].")
    @timeout_option(default_timeout)
    @functools.wraps(fn)
    def wrapper(*args: Any, control_url: str | None, token_file: str | None, timeout: float, **kwargs: Any) -> Any:
        return fn(*args, client=make_client(control_url, token_file, timeout), **kwargs)
    return wrapper  # type: ignore[return-value]


def make_client(control_url: str | None, token_file: str | None, timeout: float = DEFAULT_TIMEOUT) -> ControlClient:
    url = control_url or os.environ.get("OCA_CONTROL_URL") or DEFAULT_CONTROL_URL
    token = os.environ.get("OCA_CONTROL_TOKEN", "").strip() or None
    if token_file is not None:
        token = read_secret(token_file, unreadable="cannot read the operator token: {error}",
                            empty="the operator token file is empty")
    return ControlClient(url, token, timeout)


@click.group()
def control() -> None:
    """Run the control plane."""


@control.command("serve")
@click.option("--config", "config_path", metavar="FILE",
              default=lambda: os.environ.get("OCA_CONTROL_CONFIG", DEFAULT_CONTROL_CONFIG),
              show_default=f"$OCA_CONTROL_CONFIG or {DEFAULT_CONTROL_CONFIG}", help="The control plane's config.")
@click.option("--loop", "loop_kind", type=click.Choice(["uvloop", "asyncio"]), default="uvloop",
              show_default=True, help="Event loop.")
@check_option
def serve(config_path: str, loop_kind: str, check: bool) -> None:
    """Serve manifests, steering and the operator API; poll the fleet; until SIGTERM."""
    if check:
        from oca.cli.check import report

        report(config_path, "control")
        return
    import gc

    from control.preflight import load_checked_control
    from control.service import serve as run

    gc.disable()  # millions of objects that live for ever are about to be made: control.service turns it back on
    config, loaded = load_checked_control(config_path)  # every start-up check; all problems, one line each (exit 2)
    run_service(lambda: run(config, loaded=loaded), name="control", level=config.log.level, loop_kind=loop_kind)


@control.command("migrate")
@click.option("--from", "source", required=True, metavar="sqlite:PATH", help="The SQLite state to copy (read only).")
@click.option("--to", "target", required=True, metavar="postgresql://USER@HOST:PORT/DB",
              help="The PostgreSQL database to copy into: migrated, and empty. No password in the URL.")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the PostgreSQL password [default: libpq's PGPASSWORD or PGPASSFILE].")
def migrate(source: str, target: str, password_file: str | None) -> None:
    """Copy a SQLite state into PostgreSQL, printing and checking each table's count (a mismatch exits 1)."""
    from control.store import POSTGRES_SCHEMES
    from control.store.migrate import copy_state
    from control.store.postgres import PostgresStore, describe, has_password

    if not source.startswith("sqlite:") or source == "sqlite:":
        raise ConfigError("oca control migrate", "--from", f"expected sqlite:PATH, got {source.split(':')[0]!r}...")
    if not target.startswith(POSTGRES_SCHEMES):
        raise ConfigError("oca control migrate", "--to", "expected postgresql://USER@HOST:PORT/DB")
    try:
        password_in_url = has_password(target)
    except ValueError as exc:
        raise ConfigError("oca control migrate", "--to", str(exc)) from None
    if password_in_url:
        raise ConfigError("oca control migrate", "--to", f"a password in the URL is refused ({describe(target)}); "
                          "use --password-file, PGPASSWORD or PGPASSFILE")
    password = None
    if password_file is not None:
        password = read_secret(password_file, "--password-file", file="oca control migrate",
                               unreadable="cannot read {path}: {error}", empty="{path} is empty")
    path = source.removeprefix("sqlite:")
    store = PostgresStore.open(target, password=password)
    try:
        counts = copy_state(path, store, lambda count: click.echo(count.line()))
    finally:
        store.close()
    click.echo(f"migrated {path} to {store.where}: {sum(c.copied for c in counts)} rows in {len(counts)} tables")
