"""Settings files in, frozen settings dataclasses out: the machinery the box's config (oca.config) and the
control plane's (control.config) share.

Rules kept here:
- A settings class is a frozen dataclass whose fields are declared with `setting(...)`: the metadata says
  how a raw YAML value is read (`unit`: "size", "duration", "listen", "path", "rate", "urls": one string or
  a list of them, read as a tuple; bounds `min`/`max`;
  `choices`). Fields marked `internal` are never read from a file. Nested dataclasses, tuples of them,
  tuples of strings and Optional (`X | None`, where YAML null is None) are supported.
- Unknown keys, wrong types and impossible values are rejected with one ConfigError naming the file, the
  dotted key path (`storage.tiers[1].capacity`) and the problem; or, given a `problems` list (`oca
  check-config`), every one of them is collected there, in the order the one-error mode meets them.
- Relative paths resolve against `base` (the directory of the file that names them), so a config and its
  state can travel together; "-" (standard output) is kept as it is.
- YAML is read with libyaml's safe loader when PyYAML was built with it (the same documents as the
  pure-Python SafeLoader, errors at the same line in libyaml's words; ten times faster on a large fleet
  file), else with SafeLoader.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, TypeVar, get_args, get_origin

import yaml

from oca.config.units import parse_duration, parse_listen, parse_rate, parse_size
from oca.errors import ConfigError

T = TypeVar("T")
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def setting(default: Any = None, *, unit: str = "", min: float | None = None, max: float | None = None,
            factory: Any = None, choices: tuple[str, ...] = ()) -> Any:
    """A settings field: its default (or default `factory`), unit, bounds and allowed values."""
    meta = {"unit": unit, "min": min, "max": max, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_yaml(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file ({} for an empty one); ConfigError if unreadable or not a mapping."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=SAFE_LOADER)  # a safe loader (C or Python)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(path, "", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(path, "", "expected a mapping of sections at the top level")
    return raw


def build_settings(cls: type[T], raw: object, file: str, prefix: str, base: str,
                   problems: list[ConfigError] | None = None) -> T:
    """A settings dataclass from a mapping, checking keys, types, units, bounds and choices.

    Without `problems`, the first problem is raised. With it, every problem is appended there (in the order
    the first-problem mode would meet them) and the settings that could not be read keep their defaults."""
    sink: list[ConfigError] = [] if problems is None else problems
    before = len(sink)
    built = _build(cls, raw, file, prefix, base, sink)
    if problems is None and len(sink) > before:
        raise sink[before]
    return built


def _build(cls: type[T], raw: object, file: str, prefix: str, base: str, sink: list[ConfigError]) -> T:
    if not isinstance(raw, dict):
        sink.append(ConfigError(file, prefix or "(top)", f"expected a mapping, got {kind(raw)}"))
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            sink.append(ConfigError(file, join(prefix, str(key)), f"unknown key (known: {', '.join(sorted(fields))})"))
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        if name in raw:
            try:
                values[name] = _value(hints[name], fld.metadata, raw[name], file, join(prefix, name), base, sink)
            except ConfigError as exc:
                sink.append(exc)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        sink.append(ConfigError(file, prefix, str(exc)))
        return cls()


def settings_to_raw(value: Any, unit: str = "") -> Any:
    """Settings as plain data that build_settings reads back to equal settings (internal fields left out)."""
    if unit == "listen":
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if dataclasses.is_dataclass(value):
        return {f.name: settings_to_raw(getattr(value, f.name), f.metadata.get("unit", ""))
                for f in dataclasses.fields(value) if not f.metadata.get("internal")}
    if isinstance(value, tuple):
        return [settings_to_raw(item) for item in value]
    return value


def _value(hint: Any, meta: Any, raw: object, file: str, key: str, base: str, sink: list[ConfigError]) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        if raw is None:
            return None
        hint = next(a for a in get_args(hint) if a is not type(None))
    unit = meta.get("unit", "")
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, file, key, base, sink)  # type: ignore[arg-type]
    try:
        if unit == "size":
            value: Any = parse_size(raw)
        elif unit == "rate":
            value = parse_rate(raw)
        elif unit == "duration":
            value = parse_duration(raw)
        elif unit == "listen":
            return parse_listen(raw)
        elif unit == "urls":  # null: none
            return _tuple(str, [raw] if isinstance(raw, str) else [] if raw is None else raw, file, key, base, sink)
        elif get_origin(hint) is tuple:
            return _tuple(get_args(hint)[0], raw, file, key, base, sink)
        elif hint is bool:
            if not isinstance(raw, bool):
                raise ValueError(f"expected true or false, got {kind(raw)}")
            value = raw
        elif hint is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"expected an integer, got {kind(raw)}")
            value = raw
        elif hint is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"expected a number, got {kind(raw)}")
            value = float(raw)
        elif hint is str:
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {kind(raw)}")
            value = raw
            if unit == "path":
                value = raw if raw == "-" else resolve_path(raw, base)
        else:  # pragma: no cover - a model field of a type the loader does not know
            raise ValueError(f"unsupported setting type {hint!r}")
    except ValueError as exc:
        raise ConfigError(file, key, str(exc)) from None
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if low is not None and value < low:
        raise ConfigError(file, key, f"must be at least {_show(low, unit)}, got {raw!r}")
    if high is not None and value > high:
        raise ConfigError(file, key, f"must be at most {_show(high, unit)}, got {raw!r}")
    if choices and value not in choices:
        raise ConfigError(file, key, f"must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _tuple(item: Any, raw: object, file: str, key: str, base: str, sink: list[ConfigError]) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"expected a list, got {kind(raw)}")
    if item is str:
        if not all(isinstance(r, str) for r in raw):
            raise ValueError("expected a list of strings")
        return tuple(raw)
    return tuple(_build(item, r, file, f"{key}[{i}]", base, sink) for i, r in enumerate(raw))


def resolve_path(raw: str, base: str) -> str:
    """`raw` made absolute against `base`; ValueError if it is empty."""
    if not raw:
        raise ValueError("must not be empty")
    return raw if os.path.isabs(raw) else os.path.normpath(os.path.join(base, raw))


def join(prefix: str, key: str) -> str:
    """The dotted key path of `key` under `prefix`."""
    return f"{prefix}.{key}" if prefix else key


def kind(raw: object) -> str:
    """What a raw YAML value is, for a message: `a mapping`, `the string 'x'`, `int 3`."""
    if raw is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {raw!r}", bool: f"{raw}"}.get(
        type(raw), f"{type(raw).__name__} {raw!r}")


def _show(bound: float, unit: str) -> str:
    if unit == "duration":
        return f"{bound:g}s"
    if unit == "size":
        return f"{int(bound)} bytes"
    return f"{bound:g}"
