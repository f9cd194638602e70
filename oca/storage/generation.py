"""The generation counter: one 8-byte little-endian integer in `<state_dir>/generation`, shared by mmap.

Rules kept here:
- Only the owner writes it (`bump`); views map it read-only and compare, so reading costs no syscall.
- The owner bumps it after the index change it announces is committed, so a view that sees the new
  value and re-reads the index sees the change.
- Views only test for inequality: a torn or reset value can cause one spurious "changed", never a missed one
  that persists.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence

from oca.errors import StorageError

GENERATION_NAME = "generation"
_FORMAT = "<Q"
_SIZE = struct.calcsize(_FORMAT)


class Generation:
    def __init__(self, path: str, *, writable: bool) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY, 0o644)
        except OSError as e:
            raise StorageError(f"cannot open generation file {path}: {e.strerror or e}") from e
        try:
            size = os.fstat(fd).st_size
            if writable and size != _SIZE:
                os.ftruncate(fd, _SIZE)
            elif not writable and size < _SIZE:
                raise StorageError(f"generation file {path} holds {size} bytes, expected {_SIZE}")
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self._map = mmap.mmap(fd, _SIZE, access=access)
            self._word = memoryview(self._map).cast("Q")  # native-endian view: one index per read
        except OSError as e:
            raise StorageError(f"cannot map generation file {path}: {e.strerror or e}") from e
        finally:
            os.close(fd)

    @property
    def value(self) -> int:
        value: int = struct.unpack_from(_FORMAT, self._map)[0]
        return value

    @property
    def word(self) -> Sequence[int]:
        """The raw word itself, for a reader that compares `word[0]` on every request without a call (only
        for inequality, as read()); it is released on close."""
        return self._word

    def read(self) -> int:
        """The raw word as a view sees it (read on every request: no struct call). Only compared for
        inequality, so its byte order does not matter."""
        word: int = self._word[0]
        return word

    def bump(self) -> int:
        value = (self.value + 1) % (1 << 64)
        struct.pack_into(_FORMAT, self._map, 0, value)
        return value

    def close(self) -> None:
        self._word.release()
        self._map.close()
