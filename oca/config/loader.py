"""Loads configs/oca.yaml into BoxConfig (read by oca.config.settings, as the control plane's config is).

Rules: unknown keys, wrong types and impossible values are rejected with one ConfigError naming the
file, the dotted key path (`storage.tiers[1].capacity`) and the problem. Relative paths resolve against
the config file's directory, so a config and its cache can travel together.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from typing import Any

from oca.config.model import BoxConfig, StorageConfig
from oca.config.settings import build_settings, read_yaml, settings_to_raw
from oca.errors import ConfigError


def load_box_config(path: str) -> BoxConfig:
    """Read, validate and resolve one box config file."""
    return box_config_from_raw(read_yaml(path), path)


def box_config_from_raw(raw: dict[str, Any], source: str) -> BoxConfig:
    """Validate and resolve settings already parsed from YAML (or from box_config_to_raw)."""
    problems: list[ConfigError] = []
    config = box_config_problems(raw, source, problems)
    if problems:
        raise problems[0]
    return config


def box_config_problems(raw: dict[str, Any], source: str, problems: list[ConfigError]) -> BoxConfig:
    """The settings, with every problem appended to `problems` (`oca check-config`); a setting that could not
    be read keeps its default."""
    base = os.path.dirname(os.path.abspath(source))
    config = build_settings(BoxConfig, raw, source, "", base, problems)
    config = dataclasses.replace(config, source=source)
    cross: list[ConfigError] = []
    _check_storage(config.storage, source, cross)
    _check_fetch(config, source, cross)
    settled = {p.key for p in problems}  # a value that could not be read is not also reported as missing
    problems.extend(p for p in cross if p.key not in settled)
    return config


def box_config_to_raw(config: BoxConfig) -> dict[str, Any]:
    """The settings as plain data that box_config_from_raw reads back to the same BoxConfig. The master
    hands its validated config to each worker this way: a worker never re-reads a file that may have
    changed since the master checked it."""
    raw: dict[str, Any] = settings_to_raw(config)
    return raw


def _check_storage(storage: StorageConfig, file: str, problems: list[ConfigError]) -> None:
    """Rules that span several keys."""
    if not storage.tiers:
        problems.append(ConfigError(file, "storage.tiers", "at least one tier is required"))
    names: set[str] = set()
    paths: set[str] = set()
    for i, tier in enumerate(storage.tiers):
        key = f"storage.tiers[{i}]"
        if not tier.name or not tier.name.replace("-", "").replace("_", "").isalnum():
            problems.append(ConfigError(file, f"{key}.name",
                                        f"must be a non-empty name of letters, digits, - or _, got {tier.name!r}"))
        elif tier.name in names:
            problems.append(ConfigError(file, f"{key}.name", f"duplicate tier name {tier.name!r}"))
        if not tier.path:
            problems.append(ConfigError(file, f"{key}.path", "is required"))
        elif tier.path in paths:
            problems.append(ConfigError(file, f"{key}.path", f"{tier.path} is already used by another tier"))
        if tier.capacity <= 0:
            problems.append(ConfigError(file, f"{key}.capacity", "is required and must be positive"))
        names.add(tier.name)
        paths.add(tier.path)


def _check_fetch(config: BoxConfig, file: str, problems: list[ConfigError]) -> None:
    names: set[str] = set()
    for i, src in enumerate(config.fetch.sources):
        key = f"fetch.sources[{i}]"
        if not src.name:
            problems.append(ConfigError(file, f"{key}.name", "is required"))
        elif src.name in names:
            problems.append(ConfigError(file, f"{key}.name", f"duplicate source name {src.name!r}"))
        names.add(src.name)
        parts = urllib.parse.urlsplit(src.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(ConfigError(file, f"{key}.url", f"expected http://host[:port][/prefix], got {src.url!r}"))
    if config.tokens.required and not config.tokens.jwks_file:
        problems.append(ConfigError(file, "tokens.jwks_file",
                                    "tokens.required is true, so a JWKS file of public keys is needed"))
    for i, prefix in enumerate(config.tokens.unsigned_prefixes):
        if not prefix or prefix.startswith("/"):
            problems.append(ConfigError(file, f"tokens.unsigned_prefixes[{i}]",
                                        f"expected a content path prefix such as 'public/', got {prefix!r}"))
    for i, url in enumerate(config.control.url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            key = "control.url" if len(config.control.url) == 1 else f"control.url[{i}]"
            problems.append(ConfigError(file, key, f"expected http://host[:port], got {url!r}"))
