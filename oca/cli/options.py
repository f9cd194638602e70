"""Options shared by several commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = "/etc/oca/oca.yaml"


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_path", metavar="FILE", default=lambda: os.environ.get("OCA_CONFIG", DEFAULT_CONFIG),
        show_default=f"$OCA_CONFIG or {DEFAULT_CONFIG}", help="The box's configuration file.",
    )(fn)
