"""Where a fill's bytes go: the file its clients are fed from (the feed), and the tier's temp file.

Rules kept here:
- Clients are fed from memory when they can be: a fill whose length is known and fits `memory_feed`'s
  bounds writes each chunk to a file in a tmpfs directory (/dev/shm) and announces it; the workers send
  from that file with os.sendfile. The tier's temp file is written from it, hashed and fsynced once the
  upstream body has ended (oca.fetch.tierwriter), so neither a slow disk nor its CPU holds a client back.
  (On the machine of README's benchmarks, writing 8 MiB into fresh page cache of an ext4 disk took 20-50
  ms; the same into tmpfs pages freed by the previous fill, 6 ms; the client's whole transfer from the
  origin, about 6 ms.)
- Otherwise (length unknown, too large, the memory budget or the tmpfs taken) the tier's temp file is the
  feed, and each chunk is announced once the writer thread has written it.
- A memory feed has a unique random name (a worker that opens a name late can never get another fill's
  bytes) and is unlinked once its fill ends: workers that opened it keep reading it (Linux unlink
  semantics); one that comes later opens the stored path that "done" names. When the feed is the only copy
  (the tier could not keep it), it stays FEED_GRACE seconds for workers still catching up. Without a
  usable tmpfs directory the feed is an anonymous memory file (memfd) opened through /proc/<master pid>/fd/<n>
  (Linux opens the same file, not a copy), closed FEED_GRACE seconds after its fill.
- So a failed tier write never fails a client fed from memory: the tier is charged, the clients get the
  whole body, the object is not stored. A fill fed from the tier file itself (too large for memory) fails.
- The tier temp file is made in the directory `Store.fill_target` named, so adopting it is a rename.
- A memory feed's name carries the master's pid: feeds of a master that died are removed at start-up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile

MEMORY_FEED_DIR = "/dev/shm"
MEMORY_FEED_LIMIT = 64 << 20  # one fill's bytes held in memory at most (a slice is 4 MiB by default)
MEMORY_FEED_BUDGET = 1 << 30  # all fills' memory feeds together
MEMORY_FEED_RESERVE = 64 << 20  # tmpfs space left free for other users of it
FEED_GRACE = 30.0
_PREFIX = "oca-feed-"


def memory_feed(length: int | None, in_use: int, free: int) -> bool:
    """Whether a fill of `length` body bytes is fed from memory, with `in_use` bytes of memory feeds held
    already and `free` bytes free in the tmpfs."""
    if length is None or length <= 0 or length > MEMORY_FEED_LIMIT:
        return False
    return in_use + length <= MEMORY_FEED_BUDGET and free - length >= MEMORY_FEED_RESERVE


def usable_feed_dir(path: str | None) -> str | None:
    """`path` if memory feeds can be made there (it exists and is writable), else None."""
    if path and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
        return path
    return None


def free_bytes(path: str) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def remove_orphan_feeds(path: str) -> int:
    """Remove the memory feeds of masters that are no longer running; how many were removed."""
    removed = 0
    try:
        names = os.listdir(path)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(path, name))
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # someone else's process: not ours to judge
    return True


class FillFile:
    """One open file a fill writes to: `path` is what workers open to read it while it grows."""

    def __init__(self, fd: int, path: str, *, memory: bool = False) -> None:
        self.fd = fd
        self.path = path
        self.memory = memory  # a memory feed (tmpfs), not the tier's temp file
        self.kept = False  # adopted into storage: the temp file is storage's now

    @classmethod
    def create(cls, tmp_dir: str) -> FillFile:
        fd, path = tempfile.mkstemp(dir=tmp_dir, prefix="fill-")
        return cls(fd, path)

    @classmethod
    def create_feed(cls, feed_dir: str | None) -> FillFile:
        """A memory feed: a file in `feed_dir` (a tmpfs), or with none, an anonymous memory file that workers
        open by its /proc path (which names a descriptor number: see `named`)."""
        if feed_dir is None:
            fd = os.memfd_create("oca-fill", os.MFD_CLOEXEC)
            return cls(fd, f"/proc/{os.getpid()}/fd/{fd}", memory=True)
        fd, path = tempfile.mkstemp(dir=feed_dir, prefix=f"{_PREFIX}{os.getpid()}-")
        return cls(fd, path, memory=True)

    @property
    def named(self) -> bool:
        """False for an anonymous memory file: its path names a descriptor number, which the master must not
        reuse while a worker may still open the path, so it stays open FEED_GRACE seconds after its fill."""
        return not (self.memory and self.path.startswith("/proc/"))

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Close it and, unless storage took it, remove it."""
        self.close()
        if not self.kept and self.path and self.named:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
