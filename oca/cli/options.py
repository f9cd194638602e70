"""Options shared by several commands, and running a service (`oca serve`, `oca control serve`)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = "/etc/oca/oca.yaml"
DEFAULT_TIMEOUT = 10.0  # seconds a client command waits for the control plane or the box


def timeout_option(default: float = DEFAULT_TIMEOUT) -> Callable[[F], F]:
    """--timeout SECONDS: how long to wait for the server (connecting, and each wait for its answer); past it
    the command exits 3 like an unreachable server."""
    return click.option("--timeout", "timeout", type=click.FloatRange(0.1, 3600), default=default,
                        show_default=True, metavar="SECONDS",
                        help="Seconds to wait for the server to connect and answer (past it: exit 3).")


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_path", metavar="FILE", default=lambda: os.environ.get("OCA_CONFIG", DEFAULT_CONFIG),
        show_default=f"$OCA_CONFIG or {DEFAULT_CONFIG}", help="The box's configuration file.",
    )(fn)


def run_service(main: Callable[[], Coroutine[Any, Any, None]], *, name: str, level: str, loop_kind: str) -> None:
    """Log to stderr as `oca <name>` from `level` up, then run `main()` to its end on a new event loop."""
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format=f"%(asctime)s oca {name} %(levelname)s %(message)s")
    from oca.serve.loops import new_event_loop

    loop = new_event_loop(loop_kind)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
