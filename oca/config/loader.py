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
    base = os.path.dirname(os.path.abspath(source))
    config = build_settings(BoxConfig, raw, source, "", base)
    config = dataclasses.replace(config, source=source)
    _check_storage(config.storage, source)
    _check_fetch(config, source)
    return config


def box_config_to_raw(config: BoxConfig) -> dict[str, Any]:
    """The settings as plain data that box_config_from_raw reads back to the same BoxConfig. The master
    hands its validated config to each worker this way: a worker never re-reads a file that may have
    changed since the master checked it."""
    raw: dict[str, Any] = settings_to_raw(config)
    return raw


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
    for i, url in enumerate(config.control.url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            key = "control.url" if len(config.control.url) == 1 else f"control.url[{i}]"
            raise ConfigError(file, key, f"expected http://host[:port], got {url!r}")
