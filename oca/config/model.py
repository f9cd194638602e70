"""The box's settings as frozen dataclasses: the one place their names, types, defaults and limits live.

A field's metadata (`setting(...)`, see oca.config.settings) says how the loader reads it: `unit` ("size",
"duration", "listen", "path"), the bounds `min`/`max`, the allowed `choices`. Defaults here are the
production defaults; configs/oca.yaml documents each key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from oca.config.settings import setting


@dataclass(frozen=True)
class BoxIdentity:
    id: str = setting("box-1")
    site: str = setting("site-1")


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, int] = setting(("127.0.0.1", 8080), unit="listen")
    workers: int = setting(0, min=0, max=256)  # 0 = one per core
    max_connections: int = setting(10000, min=1, max=1_000_000)
    header_timeout: float = setting(10.0, unit="duration", min=0.001)
    keepalive_timeout: float = setting(60.0, unit="duration", min=0.001)
    send_timeout: float = setting(60.0, unit="duration", min=0.001)
    max_header_bytes: int = setting(16384, unit="size", min=1024, max=1 << 20)
    max_headers: int = setting(100, min=4, max=10000)
    shutdown_timeout: float = setting(30.0, unit="duration", min=0.0)
    backlog: int = setting(1024, min=1, max=65535)

    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class AdminConfig:
    listen: tuple[str, int] = setting(("127.0.0.1", 8081), unit="listen")
    token_file: str | None = setting(None, unit="path")  # the full token: every route
    read_token_file: str | None = setting(None, unit="path")  # a read-only token: GET /status, /metrics, ...


@dataclass(frozen=True)
class TierConfig:
    name: str = setting("")
    path: str = setting("", unit="path")
    capacity: int = setting(0, unit="size", min=1)
    # all: new objects may land here; returning: only objects the policy remembers (read again after they
    # left the cache, or hot) -- so a fast tier takes only what earned it
    admission: str = setting("all", choices=("all", "returning"))


@dataclass(frozen=True)
class PromotionConfig:
    hits: int = setting(3, min=1, max=1_000_000)
    window: float = setting(600.0, unit="duration", min=0.001)


@dataclass(frozen=True)
class MemoryCacheConfig:
    max_object_size: int = setting(256 * 1024, unit="size", min=0, max=64 << 20)
    capacity: int = setting(256 << 20, unit="size", min=0)
    # objects whose metadata and fixed headers a worker keeps (~1.5 KiB each, counted within capacity): the least
    # recently used go first
    max_entries: int = setting(65536, min=16)


@dataclass(frozen=True)
class StorageConfig:
    state_dir: str = setting("/var/lib/oca", unit="path")
    policy: str = setting("s3fifo", choices=("s3fifo", "lru"))  # eviction order; see oca/storage/s3fifo.py
    tiers: tuple[TierConfig, ...] = setting(factory=tuple)
    promotion: PromotionConfig = setting(factory=PromotionConfig)
    memory_cache: MemoryCacheConfig = setting(factory=MemoryCacheConfig)
    health_check_interval: float = setting(5.0, unit="duration", min=0.05)
    access_flush_interval: float = setting(1.0, unit="duration", min=0.01)


@dataclass(frozen=True)
class HttpConfig:
    max_ranges: int = setting(16, min=1, max=1000)
    playlist_cache_control: str = setting("public, max-age=2")
    segment_cache_control: str = setting("public, max-age=31536000, immutable")
    cors_allow_origin: str = setting("*")
    cors_max_age: float = setting(86400.0, unit="duration")
    # CMSD (CTA-5006, oca.http.cmsd): CMSD-Static and CMSD-Dynamic on every answer; in duress (draining, or
    # sending more than duress_egress bits/s; 0 = no egress target) CMSD-Dynamic adds `du` and
    # `mb` = duress_max_bitrate (0 = no `mb`)
    cmsd: bool = setting(True)
    duress_egress: int = setting(0, unit="rate", min=0)
    duress_max_bitrate: int = setting(1_500_000, unit="rate", min=0)


@dataclass(frozen=True)
class LogConfig:
    access_log: str | None = setting("-", unit="path")
    level: str = setting("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class SourceConfig:
    """One upstream a miss may be filled from; tried in the order listed (peers, parent, origin)."""

    name: str = setting("")
    url: str = setting("")  # http://host:port, optionally with a path prefix the content path is appended to
    kind: str = setting("origin", choices=("peer", "parent", "origin"))


@dataclass(frozen=True)
class FetchConfig:
    sources: tuple[SourceConfig, ...] = setting(factory=tuple)
    connect_timeout: float = setting(2.0, unit="duration", min=0.001)
    first_byte_timeout: float = setting(5.0, unit="duration", min=0.001)
    between_bytes_timeout: float = setting(10.0, unit="duration", min=0.001)
    negative_ttl: float = setting(10.0, unit="duration", min=0.0)
    slice_size: int = setting(4 << 20, unit="size", min=0)  # 0 = never slice
    max_fills: int = setting(64, min=1, max=100_000)
    peer_credential_file: str | None = setting(None, unit="path")
    prefetch_rate: int = setting(0, unit="size", min=0)  # bytes per second for prefetches; 0 = no cap


@dataclass(frozen=True)
class TokensConfig:
    required: bool = setting(True)
    jwks_file: str | None = setting(None, unit="path")
    issuers: tuple[str, ...] = setting(factory=tuple)  # empty = any issuer
    clock_skew: float = setting(30.0, unit="duration", min=0.0, max=3600.0)
    unsigned_prefixes: tuple[str, ...] = setting(factory=tuple)  # content paths served without a token


@dataclass(frozen=True)
class ControlConfig:
    # the control plane's base URL, or a list of its replicas' (tried in turn); null = no invalidation pull
    url: tuple[str, ...] = setting((), unit="urls")
    credential_file: str | None = setting(None, unit="path")  # bearer token the box presents to the control plane
    poll_interval: float = setting(5.0, unit="duration", min=0.1)


@dataclass(frozen=True)
class FirmwareConfig:
    """Signed release bundles this box installs (oca.firmware)."""

    trusted_keys_file: str | None = setting(None, unit="path")  # PEM public keys; null = no firmware accepted
    releases_dir: str | None = setting(None, unit="path")  # release slots; null = <storage.state_dir>/releases
    health_timeout: float = setting(30.0, unit="duration", min=0.1, max=3600.0)
    max_bundle_size: int = setting(200 << 20, unit="size", min=1024)


@dataclass(frozen=True)
class BoxConfig:
    box: BoxIdentity = setting(factory=BoxIdentity)
    server: ServerConfig = setting(factory=ServerConfig)
    admin: AdminConfig = setting(factory=AdminConfig)
    storage: StorageConfig = setting(factory=StorageConfig)
    http: HttpConfig = setting(factory=HttpConfig)
    log: LogConfig = setting(factory=LogConfig)
    fetch: FetchConfig = setting(factory=FetchConfig)
    tokens: TokensConfig = setting(factory=TokensConfig)
    control: ControlConfig = setting(factory=ControlConfig)
    firmware: FirmwareConfig = setting(factory=FirmwareConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})
