"""Parsing of human units in config values: sizes ("500GiB", "64KiB", "1.5GB"), durations ("30s", "10m"),
rates in bits per second ("10Gbps", "400Mbit") and listen addresses ("127.0.0.1:8080").

Pure functions; they raise ValueError with a message the loader puts after the key path.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string with a unit; "500GiB" -> 536870912000."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 500GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 500GiB, got {value!r}")
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 500GiB or 64KiB, got {value!r}")
    number = float(match.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(number):  # "9999…9TB" overflows a float: int() of it would raise OverflowError
        raise ValueError(f"size is too large: {value[:40]!r}")
    return int(number)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string with a unit; "10m" -> 600.0."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s, got {value!r}")
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as 30s, 10m or 500ms, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_rate(raw: object) -> int:
    """Bits per second from an int or `10Gbps` / `400Mbit` / `1.5G` (decimal units)."""
    if isinstance(raw, str):
        text = raw.strip()
        for suffix in ("bit/s", "bps", "bit"):
            if text.lower().endswith(suffix):
                text = text[: -len(suffix)]
                break
        if text[-1:].lower() in ("k", "m", "g", "t") or text.isdigit():
            try:
                return parse_size(text)
            except ValueError:
                pass
        raise ValueError(f"expected a rate such as 10Gbps or 400Mbps, got {raw!r}")
    return parse_size(raw)


def parse_listen(value: object) -> tuple[str, int]:
    """("127.0.0.1", 8080) from "127.0.0.1:8080"; IPv6 as "[::1]:8080"."""
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8080, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port
