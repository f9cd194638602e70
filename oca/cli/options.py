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


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_path", metavar="FILE", default=lambda: os.environ.get("OCA_CONFIG", DEFAULT_CONFIG),
        show_default=f"$OCA_CONFIG or {DEFAULT_CONFIG}", help="The box's configuration file.",
    )(fn)


def run_service(main: Callable[[], Coroutine[Any, Any, None]], *, name: str, level: str, loop_kind: str) -> None:
    """Log to stderr as `oca <name>` from `level` up, then run `main()` to its end on a new event loop."""
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format=f"%(asctime)s oca {name} %(levelname)s %(message)s")
    from oca.serve.worker import new_event_loop

    loop = new_event_loop(loop_kind)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
