"""The Date header value, formatted once per second: every response carries one (RFC 9110 §6.6.1)."""

from __future__ import annotations

import time

from oca.http.conditionals import http_date


class DateCache:
    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = http_date(second).encode("ascii")
        return self._value
