"""The box's settings as frozen dataclasses: the one place their names, types, defaults and limits live.

A field's metadata says how the loader reads it: `unit` ("size", "duration", "listen", "path"), and the
bounds `min`/`max`. Defaults here are the production defaults; configs/oca.yaml documents each key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any = None, *, unit: str = "", min: float | None = None, max: float | None = None,
       factory: Any = None, choices: tuple[str, ...] = ()) -> Any:
    meta = {"unit": unit, "min": min, "max": max, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BoxIdentity:
    id: str = _f("box-1")
    site: str = _f("site-1")


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, int] = _f(("127.0.0.1", 8080), unit="listen")
    workers: int = _f(0, min=0, max=256)  # 0 = one per core
    max_connections: int = _f(10000, min=1, max=1_000_000)
    header_timeout: float = _f(10.0, unit="duration", min=0.001)
    keepalive_timeout: float = _f(60.0, unit="duration", min=0.001)
    send_timeout: float = _f(60.0, unit="duration", min=0.001)
    max_header_bytes: int = _f(16384, unit="size", min=1024, max=1 << 20)
    max_headers: int = _f(100, min=4, max=10000)
    shutdown_timeout: float = _f(30.0, unit="duration", min=0.0)
    backlog: int = _f(1024, min=1, max=65535)

    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class AdminConfig:
    listen: tuple[str, int] = _f(("127.0.0.1", 8081), unit="listen")
    token_file: str | None = _f(None, unit="path")


@dataclass(frozen=True)
class TierConfig:
    name: str = _f("")
    path: str = _f("", unit="path")
    capacity: int = _f(0, unit="size", min=1)


@dataclass(frozen=True)
class PromotionConfig:
    hits: int = _f(3, min=1, max=1_000_000)
    window: float = _f(600.0, unit="duration", min=0.001)


@dataclass(frozen=True)
class MemoryCacheConfig:
    max_object_size: int = _f(256 * 1024, unit="size", min=0, max=64 << 20)
    capacity: int = _f(256 << 20, unit="size", min=0)


@dataclass(frozen=True)
class StorageConfig:
    state_dir: str = _f("/var/lib/oca", unit="path")
    tiers: tuple[TierConfig, ...] = _f(factory=tuple)
    promotion: PromotionConfig = _f(factory=PromotionConfig)
    memory_cache: MemoryCacheConfig = _f(factory=MemoryCacheConfig)
    health_check_interval: float = _f(5.0, unit="duration", min=0.05)
    access_flush_interval: float = _f(1.0, unit="duration", min=0.01)


@dataclass(frozen=True)
class HttpConfig:
    max_ranges: int = _f(16, min=1, max=1000)
    playlist_cache_control: str = _f("public, max-age=2")
    segment_cache_control: str = _f("public, max-age=31536000, immutable")
    cors_allow_origin: str = _f("*")
    cors_max_age: float = _f(86400.0, unit="duration")


@dataclass(frozen=True)
class LogConfig:
    access_log: str | None = _f("-", unit="path")
    level: str = _f("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class SourceConfig:
    """One upstream a miss may be filled from; tried in the order listed (peers, parent, origin)."""

    name: str = _f("")
    url: str = _f("")  # http://host:port, optionally with a path prefix the content path is appended to
    kind: str = _f("origin", choices=("peer", "parent", "origin"))


@dataclass(frozen=True)
class FetchConfig:
    sources: tuple[SourceConfig, ...] = _f(factory=tuple)
    connect_timeout: float = _f(2.0, unit="duration", min=0.001)
    first_byte_timeout: float = _f(5.0, unit="duration", min=0.001)
    between_bytes_timeout: float = _f(10.0, unit="duration", min=0.001)
    negative_ttl: float = _f(10.0, unit="duration", min=0.0)
    slice_size: int = _f(4 << 20, unit="size", min=0)  # 0 = never slice
    max_fills: int = _f(64, min=1, max=100_000)
    peer_credential_file: str | None = _f(None, unit="path")
    prefetch_rate: int = _f(0, unit="size", min=0)  # bytes per second for prefetches; 0 = no cap


@dataclass(frozen=True)
class TokensConfig:
    required: bool = _f(True)
    jwks_file: str | None = _f(None, unit="path")
    issuers: tuple[str, ...] = _f(factory=tuple)  # empty = any issuer
    clock_skew: float = _f(30.0, unit="duration", min=0.0, max=3600.0)
    unsigned_prefixes: tuple[str, ...] = _f(factory=tuple)  # content paths served without a token


@dataclass(frozen=True)
class ControlConfig:
    url: str | None = _f(None)  # the control plane's base URL; null = this box pulls no invalidations
    credential_file: str | None = _f(None, unit="path")  # bearer token the box presents to the control plane
    poll_interval: float = _f(5.0, unit="duration", min=0.1)


@dataclass(frozen=True)
class BoxConfig:
    box: BoxIdentity = _f(factory=BoxIdentity)
    server: ServerConfig = _f(factory=ServerConfig)
    admin: AdminConfig = _f(factory=AdminConfig)
    storage: StorageConfig = _f(factory=StorageConfig)
    http: HttpConfig = _f(factory=HttpConfig)
    log: LogConfig = _f(factory=LogConfig)
    fetch: FetchConfig = _f(factory=FetchConfig)
    tokens: TokensConfig = _f(factory=TokensConfig)
    control: ControlConfig = _f(factory=ControlConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})
