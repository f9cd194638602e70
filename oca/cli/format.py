"""How CLI tables show things: sizes in IEC units (KiB, MiB, GiB: one helper for every command, `--bytes` for
exact byte counts) and columns aligned under a header row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def iec(n: float) -> str:
    """`512 B`, `1.5 KiB`, `28.4 MiB`, `1.0 GiB`: powers of 1024, one decimal."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(n)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def sizes(raw: bool) -> Callable[[float], str]:
    """The size formatter of a command: IEC units, or the exact byte count with --bytes."""
    return (lambda n: str(int(n))) if raw else iec


def bytes_option(fn: F) -> F:
    """--bytes: sizes as exact byte counts (for scripts that read the table) instead of KiB/MiB/GiB."""
    return click.option("--bytes", "raw_bytes", is_flag=True,
                        help="Show sizes as exact byte counts instead of KiB/MiB/GiB.")(fn)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows (the first is the header) as lines with each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
