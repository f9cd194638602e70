"""The access log: one JSON object per line, per request, buffered and written whole lines at a time.

Several workers append to one file: each flush is a single write() of complete lines on an O_APPEND
descriptor, so lines from different workers never interleave.
"""

from __future__ import annotations

import json
import os
from typing import Any

_FLUSH_AT = 64 * 1024


class AccessLog:
    def __init__(self, destination: str | None) -> None:
        self._fd: int | None
        if destination is None:
            self._fd = None
        elif destination == "-":
            self._fd = 1
        else:
            self._fd = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._buffer: list[str] = []
        self._size = 0

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is not None:
            self.write_line(json.dumps(record, separators=(",", ":"), default=str) + "\n")

    def write_line(self, line: str) -> None:
        """One complete JSON line, newline included."""
        if self._fd is None:
            return
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self._fd is None or not self._buffer:
            return
        data = "".join(self._buffer).encode("utf-8", "replace")
        self._buffer.clear()
        self._size = 0
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:
            pass  # a full log disk must not stop the box from serving

    def close(self) -> None:
        self.flush()
        if self._fd is not None and self._fd > 2:
            os.close(self._fd)
        self._fd = None
