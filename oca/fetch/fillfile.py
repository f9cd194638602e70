"""Where a fill's bytes go while its clients are sent them: a temp file on the tier it will be stored on, or,
once that tier cannot take a write, memory.

Rules kept here:
- A fill writes into a temp file in the directory `Store.fill_target` named, so adopting it is a rename.
- When a write to the tier fails (ENOSPC, EIO, a vanished directory) the caller charges the tier and may
  `spill`: the bytes so far and the rest go to an anonymous memory file (memfd) that the workers open through
  /proc/<master pid>/fd/<n> (Linux opens the same file, not a copy), so clients keep receiving the object from
  upstream. A spilled fill is never stored: a failed cache write never fails a client (it only costs a copy).
- A spill holds at most SPILL_LIMIT bytes (a whole-object fill is at most one slice when slicing is on); the
  master keeps a finished spill open for SPILL_GRACE seconds, so a worker still catching up on the fill's
  messages can open it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

SPILL_LIMIT = 64 << 20
SPILL_GRACE = 30.0


class FillFile:
    """One open file a fill writes to: `path` is what workers open to read it while it grows."""

    def __init__(self, fd: int, path: str, *, spilled: bool = False) -> None:
        self.fd = fd
        self.path = path
        self.spilled = spilled
        self.kept = False  # adopted into storage: the temp file is storage's now

    @classmethod
    def create(cls, tmp_dir: str) -> FillFile:
        fd, path = tempfile.mkstemp(dir=tmp_dir, prefix="fill-")
        return cls(fd, path)

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]

    def spill(self, have: int) -> FillFile:
        """A memory file holding this file's first `have` bytes (those the workers were told of), for the
        rest of the fill; this file is closed and removed. OSError if those bytes cannot be read back."""
        fd = os.memfd_create("oca-fill", os.MFD_CLOEXEC)
        try:
            copied = 0
            while copied < have:
                if self.fd < 0:
                    raise OSError(0, "the temp file was never created")
                sent = os.sendfile(fd, self.fd, copied, have - copied)
                if sent == 0:
                    raise OSError(0, f"the temp file ended at {copied} of {have} bytes")
                copied += sent
            os.lseek(fd, have, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        self.discard()
        return FillFile(fd, f"/proc/{os.getpid()}/fd/{fd}", spilled=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close it and, unless storage took it, remove the temp file (a spill has no name to remove)."""
        self.close()
        if not self.kept and not self.spilled and self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
