"""OCA appliance: serves video objects from a tiered disk cache, zero-copy."""

__version__ = "0.1.0"
