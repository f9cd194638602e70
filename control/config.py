"""Loads configs/control.yaml into ControlConfig (service settings) and a model.Fleet (sites, boxes, coverage).

Rules kept here, as for the box's config:
- Unknown keys, wrong types and impossible values are rejected with one ConfigError naming the file, the
  dotted key path (`fleet.boxes[2].admin_url`) and the problem.
- Sizes, durations and listen addresses use oca.config.units; rates (bits per second) accept `10Gbps`.
- Relative paths resolve against the file that names them, so a config and its state can travel together.
- The fleet is inline under `fleet:` or in its own file (`fleet: {file: fleet.yaml}`); the coverage file is
  CSV (`prefix,lat,lon,country`) or YAML (a list of mappings with those keys). See control/fleet.py.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args, get_origin

import yaml

from control.model import Fleet
from oca.config.units import parse_duration, parse_listen
from oca.errors import ConfigError

T = TypeVar("T")


def _f(default: Any = None, *, unit: str = "", min: float | None = None, max: float | None = None,
       choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"unit": unit, "min": min, "max": max, "choices": choices})


@dataclass(frozen=True)
class StateConfig:
    path: str = _f("/var/lib/oca-control/state.db", unit="path")


@dataclass(frozen=True)
class HealthConfig:
    interval: float = _f(2.0, unit="duration", min=0.05, max=3600)
    timeout: float = _f(1.0, unit="duration", min=0.01, max=600)
    down_after: int = _f(2, min=1, max=100)  # k: failed polls in a row before a healthy box is marked down
    up_after: int = _f(2, min=1, max=100)  # m: good polls in a row before a down box is marked up
    inventory_timeout: float = _f(5.0, unit="duration", min=0.01, max=600)


@dataclass(frozen=True)
class SteeringConfig:
    ttl: float = _f(10.0, unit="duration", min=1, max=86400)
    overload_threshold: float = _f(0.9, min=0.01, max=10)
    max_pathways: int = _f(4, min=0, max=64)  # boxes offered per session (the origin comes after them)
    default_site: str | None = _f(None)  # where clients matching no prefix go; None = origin only
    max_sessions: int = _f(200_000, min=1, max=100_000_000)  # sessions whose steering memory is kept
    client_ip_header: str | None = _f(None)  # e.g. X-Forwarded-For behind a load balancer: its last address


@dataclass(frozen=True)
class TokenConfig:
    signing_key_file: str | None = _f(None, unit="path")  # PEM private key (ES256 or EdDSA); None = no tokens
    kid: str = _f("control-1")
    issuer: str = _f("oca-control")
    lifetime: float = _f(6 * 3600.0, unit="duration", min=1, max=30 * 86400)
    bind_client_ip: bool = _f(False)


@dataclass(frozen=True)
class AuthConfig:
    operator_token_file: str | None = _f(None, unit="path")
    box_token_file: str | None = _f(None, unit="path")


@dataclass(frozen=True)
class InvalidationConfig:
    push_timeout: float = _f(2.0, unit="duration", min=0.01, max=600)
    retry_interval: float = _f(1.0, unit="duration", min=0.01, max=3600)


@dataclass(frozen=True)
class PopularityConfig:
    half_life: float = _f(3600.0, unit="duration", min=1)
    snapshot_interval: float = _f(60.0, unit="duration", min=0.1)


@dataclass(frozen=True)
class LogConfig:
    level: str = _f("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class ControlConfig:
    listen: tuple[str, int] = _f(("127.0.0.1", 8090), unit="listen")
    public_url: str | None = _f(None)  # base URL players reach us at; default http://<listen>
    coverage_file: str | None = _f(None, unit="path")
    state: StateConfig = field(default_factory=StateConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    invalidation: InvalidationConfig = field(default_factory=InvalidationConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    fleet: Fleet = field(default_factory=lambda: Fleet({}, {}, (), ""), metadata={"internal": True})
    source: str = field(default="<defaults>", metadata={"internal": True})

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.listen
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def load_control_config(path: str) -> ControlConfig:
    """Read, validate and resolve a control-plane config file with its fleet and coverage."""
    from control.fleet import load_fleet

    raw = read_yaml(path)
    fleet_raw = raw.pop("fleet", None)
    base = os.path.dirname(os.path.abspath(path))
    config = build_settings(ControlConfig, raw, path, "", base)
    if fleet_raw is None:
        raise ConfigError(path, "fleet", "is required (inline sites/boxes/origin_url, or file: PATH)")
    fleet = load_fleet(fleet_raw, path, config.coverage_file)
    if config.public_url is not None and not config.public_url.startswith(("http://", "https://")):
        raise ConfigError(path, "public_url", f"expected an http(s) URL, got {config.public_url!r}")
    return dataclasses.replace(config, fleet=fleet, source=path)


def read_yaml(path: str) -> dict[str, Any]:
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


def build_settings(cls: type[T], raw: object, file: str, prefix: str, base: str) -> T:
    """A settings dataclass from a mapping, checking keys, types, units and bounds."""
    if not isinstance(raw, dict):
        raise ConfigError(file, prefix or "(top)", f"expected a mapping, got {kind(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise ConfigError(file, join(prefix, str(key)), f"unknown key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = {name: _value(hints[name], fld.metadata, raw[name], file, join(prefix, name), base)
              for name, fld in fields.items() if name in raw}
    return cls(**values)


def _value(hint: Any, meta: Any, raw: object, file: str, key: str, base: str) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        if raw is None:
            return None
        hint = next(a for a in get_args(hint) if a is not type(None))
    unit = meta.get("unit", "")
    if dataclasses.is_dataclass(hint):
        return build_settings(hint, raw, file, key, base)  # type: ignore[arg-type]
    try:
        if unit == "duration":
            value: Any = parse_duration(raw)
        elif unit == "listen":
            return parse_listen(raw)
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
            value = resolve_path(raw, base) if unit == "path" else raw
        else:  # pragma: no cover - a model field of a type the loader does not know
            raise ValueError(f"unsupported setting type {hint!r}")
    except ValueError as exc:
        raise ConfigError(file, key, str(exc)) from None
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if low is not None and value < low:
        raise ConfigError(file, key, f"must be at least {low:g}{'s' if unit == 'duration' else ''}, got {raw!r}")
    if high is not None and value > high:
        raise ConfigError(file, key, f"must be at most {high:g}{'s' if unit == 'duration' else ''}, got {raw!r}")
    if choices and value not in choices:
        raise ConfigError(file, key, f"must be one of {', '.join(choices)}, got {raw!r}")
    return value


def resolve_path(raw: str, base: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw if os.path.isabs(raw) else os.path.normpath(os.path.join(base, raw))


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def kind(raw: object) -> str:
    if raw is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {raw!r}", bool: f"{raw}"}.get(
        type(raw), f"{type(raw).__name__} {raw!r}")
