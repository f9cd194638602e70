"""Configuration: typed, frozen settings loaded from YAML with one-line errors."""

from oca.config.loader import box_config_from_raw, box_config_to_raw, load_box_config
from oca.config.model import (
    AdminConfig,
    BoxConfig,
    HttpConfig,
    LogConfig,
    MemoryCacheConfig,
    PromotionConfig,
    ServerConfig,
    StorageConfig,
    TierConfig,
)

__all__ = [
    "AdminConfig",
    "BoxConfig",
    "HttpConfig",
    "LogConfig",
    "MemoryCacheConfig",
    "PromotionConfig",
    "ServerConfig",
    "StorageConfig",
    "TierConfig",
    "box_config_from_raw",
    "box_config_to_raw",
    "load_box_config",
]
