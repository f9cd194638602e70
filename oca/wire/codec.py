"""WireError and the field readers every wire-model decoder uses.

Rules kept here:
- A reader names what it reads (`fill plan files[3].size`), so the error says which field of which model
  was wrong and what it held (cut to 60 characters: a hostile body must not fill a log line).
- Booleans are never integers and integers never booleans (JSON's `true` is not 1 here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from oca.errors import BadRequest


class WireError(BadRequest, ValueError):
    """A wire model that does not decode: 400 when a server reads it from a request; a ValueError too, so a
    client reading an answer catches it as the bad data it is."""


class Fields:
    """The fields of one JSON object, read with the checks a model needs."""

    def __init__(self, raw: object, what: str) -> None:
        if not isinstance(raw, Mapping):
            raise WireError(f"{what}: expected a JSON object, got {_show(raw)}")
        self.raw: Mapping[str, Any] = raw
        self.what = what

    def where(self, name: str) -> str:
        """`items[0].key`, `fill plan files[3].size`, `fill plan box`."""
        if not self.what:
            return name
        return f"{self.what}.{name}" if self.what.endswith("]") else f"{self.what} {name}"

    def fail(self, name: str, expected: str) -> WireError:
        return WireError(f"{self.where(name)} must be {expected}, got {_show(self.raw.get(name))}")

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def text(self, name: str, *, empty: bool = True) -> str:
        value = self.raw.get(name)
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(name, "a string" if empty else "a non-empty string")
        return value

    def optional_text(self, name: str) -> str | None:
        return None if self.raw.get(name) is None else self.text(name)

    def count(self, name: str, *, default: int | None = None, maximum: int | None = None) -> int:
        """A non-negative integer (at most `maximum`); `default` when absent, if given."""
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if not _is_int(value) or value < 0 or (maximum is not None and value > maximum):
            raise self.fail(name, "a non-negative integer" + (f" up to {maximum}" if maximum is not None else ""))
        return int(value)

    def optional_count(self, name: str, *, maximum: int | None = None) -> int | None:
        return None if self.raw.get(name) is None else self.count(name, maximum=maximum)

    def integer(self, name: str, *, default: int | None = None, bound: int | None = None) -> int:
        """An integer within ±bound; `default` when absent, if given."""
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if not _is_int(value) or (bound is not None and not -bound <= value <= bound):
            raise self.fail(name, "an integer" + (f" from {-bound} to {bound}" if bound is not None else ""))
        return int(value)

    def number(self, name: str, *, default: float | None = None) -> float:
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
            raise self.fail(name, "a number")
        return float(value)

    def flag(self, name: str, *, default: bool | None = None) -> bool:
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, "true or false")
        return value

    def items(self, name: str, *, default: list[Any] | None = None) -> list[Any]:
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, list):
            raise self.fail(name, "a list")
        return value

    def mapping(self, name: str, *, default: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        value = self.raw.get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, Mapping):
            raise self.fail(name, "an object")
        return value

    def texts(self, name: str, *, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        values = self.items(name, default=None if default is None else list(default))
        if not all(isinstance(v, str) for v in values):
            raise self.fail(name, "a list of strings")
        return tuple(values)

    def counts(self, name: str) -> dict[str, int]:
        """An object of non-negative integers (bytes by source, failures by reason)."""
        values = self.mapping(name, default={})
        if not all(_is_int(v) and v >= 0 for v in values.values()):
            raise self.fail(name, "an object of non-negative integers")
        return {str(k): int(v) for k, v in values.items()}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
