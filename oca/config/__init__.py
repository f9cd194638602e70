"""Configuration: typed, frozen settings loaded from YAML with one-line errors."""

from oca.config.loader import box_config_from_raw, box_config_to_raw, load_box_config
from oca.config.model import (
    AdminConfig,
    BoxConfig,
    ControlConfig,
    FetchConfig,
    HttpConfig,
    LogConfig,
    MemoryCacheConfig,
    PromotionConfig,
    ServerConfig,
    SourceConfig,
    StorageConfig,
    TierConfig,
    TokensConfig,
)

__all__ = [
    "AdminConfig",
    "BoxConfig",
    "ControlConfig",
    "FetchConfig",
    "HttpConfig",
    "LogConfig",
    "MemoryCacheConfig",
    "PromotionConfig",
    "ServerConfig",
    "SourceConfig",
    "StorageConfig",
    "TierConfig",
    "TokensConfig",
    "box_config_from_raw",
    "box_config_to_raw",
    "load_box_config",
]
