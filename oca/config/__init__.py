"""Configuration: typed, frozen settings loaded from YAML with one-line errors."""

from oca.config.loader import load_box_config
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
    "load_box_config",
]
