"""Loads configs/oca.yaml into BoxConfig.

Rules: unknown keys, wrong types and impossible values are rejected with one ConfigError naming the
file, the dotted key path (`storage.tiers[1].capacity`) and the problem. Relative paths resolve against
the config file's directory, so a config and its cache can travel together.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
import urllib.parse
from typing import Any, TypeVar, get_args, get_origin

import yaml

from oca.config.model import BoxConfig, StorageConfig
from oca.config.units import parse_duration, parse_listen, parse_size
from oca.errors import ConfigError

T = TypeVar("T")


def load_box_config(path: str) -> BoxConfig:
    """Read, validate and resolve one box config file."""
    return box_config_from_raw(_read_yaml(path), path)


def box_config_from_raw(raw: dict[str, Any], source: str) -> BoxConfig:
    """Validate and resolve settings already parsed from YAML (or from box_config_to_raw)."""
    base = os.path.dirname(os.path.abspath(source))
    config = _build(BoxConfig, raw, source, "", base)
    config = dataclasses.replace(config, source=source)
    _check_storage(config.storage, source)
    _check_fetch(config, source)
    return config


def box_config_to_raw(config: BoxConfig) -> dict[str, Any]:
    """The settings as plain data that box_config_from_raw reads back to the same BoxConfig. The master
    hands its validated config to each worker this way: a worker never re-reads a file that may have
    changed since the master checked it."""
    raw: dict[str, Any] = _raw(config)
    return raw


def _raw(value: Any, unit: str = "") -> Any:
    if unit == "listen":
        return _listen_text(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _raw(getattr(value, f.name), f.metadata.get("unit", ""))
                for f in dataclasses.fields(value) if not f.metadata.get("internal")}
    if isinstance(value, tuple):
        return [_raw(item) for item in value]
    return value


def _listen_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
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


def _build(cls: type[T], raw: object, file: str, prefix: str, base: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(file, prefix or "(top)", f"expected a mapping, got {_kind(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise ConfigError(file, _join(prefix, str(key)), f"unknown key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        if name in raw:
            values[name] = _value(hints[name], fld.metadata, raw[name], file, _join(prefix, name), base)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(file, prefix, str(exc)) from None


def _value(hint: Any, meta: Any, raw: object, file: str, key: str, base: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if raw is None:
            return None
        hint, origin = args[0], get_origin(args[0])
    unit = meta.get("unit", "")
    try:
        if unit == "size":
            value: Any = parse_size(raw)
        elif unit == "duration":
            value = parse_duration(raw)
        elif unit == "listen":
            return parse_listen(raw)
        elif dataclasses.is_dataclass(hint):
            return _build(hint, raw, file, key, base)  # type: ignore[arg-type]
        elif origin is tuple:
            item = get_args(hint)[0]
            if not isinstance(raw, list):
                raise ValueError(f"expected a list, got {_kind(raw)}")
            if item is str:
                if not all(isinstance(r, str) for r in raw):
                    raise ValueError("expected a list of strings")
                return tuple(raw)
            return tuple(_build(item, r, file, f"{key}[{i}]", base) for i, r in enumerate(raw))
        elif hint is bool:
            if not isinstance(raw, bool):
                raise ValueError(f"expected true or false, got {_kind(raw)}")
            value = raw
        elif hint is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"expected an integer, got {_kind(raw)}")
            value = raw
        elif hint is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"expected a number, got {_kind(raw)}")
            value = float(raw)
        elif hint is str:
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {_kind(raw)}")
            value = raw
            if unit == "path":
                if not raw:
                    raise ValueError("must not be empty")
                value = raw if raw == "-" or os.path.isabs(raw) else os.path.normpath(os.path.join(base, raw))
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


def _check_storage(storage: StorageConfig, file: str) -> None:
    """Rules that span several keys."""
    if not storage.tiers:
        raise ConfigError(file, "storage.tiers", "at least one tier is required")
    names: set[str] = set()
    paths: set[str] = set()
    for i, tier in enumerate(storage.tiers):
        key = f"storage.tiers[{i}]"
        if not tier.name or not tier.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(file, f"{key}.name",
                              f"must be a non-empty name of letters, digits, - or _, got {tier.name!r}")
        if tier.name in names:
            raise ConfigError(file, f"{key}.name", f"duplicate tier name {tier.name!r}")
        if not tier.path:
            raise ConfigError(file, f"{key}.path", "is required")
        if tier.capacity <= 0:
            raise ConfigError(file, f"{key}.capacity", "is required and must be positive")
        if tier.path in paths:
            raise ConfigError(file, f"{key}.path", f"{tier.path} is already used by another tier")
        names.add(tier.name)
        paths.add(tier.path)


def _check_fetch(config: BoxConfig, file: str) -> None:
    names: set[str] = set()
    for i, src in enumerate(config.fetch.sources):
        key = f"fetch.sources[{i}]"
        if not src.name:
            raise ConfigError(file, f"{key}.name", "is required")
        if src.name in names:
            raise ConfigError(file, f"{key}.name", f"duplicate source name {src.name!r}")
        names.add(src.name)
        parts = urllib.parse.urlsplit(src.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(file, f"{key}.url", f"expected http://host[:port][/prefix], got {src.url!r}")
    if config.tokens.required and not config.tokens.jwks_file:
        raise ConfigError(file, "tokens.jwks_file", "tokens.required is true, so a JWKS file of public keys is needed")
    for i, prefix in enumerate(config.tokens.unsigned_prefixes):
        if not prefix or prefix.startswith("/"):
            raise ConfigError(file, f"tokens.unsigned_prefixes[{i}]",
                              f"expected a content path prefix such as 'public/', got {prefix!r}")
    if config.control.url is not None:
        parts = urllib.parse.urlsplit(config.control.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(file, "control.url", f"expected http://host[:port], got {config.control.url!r}")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(raw: object) -> str:
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
