"""Durable file primitives: copy-and-hash into a temp file, small atomic writes, directory fsync.

Rules kept here:
- Every byte written to a tier goes through `write_chunk`, the one function that writes object data
  (tests make a disk full or failing by replacing it).
- A copy is hashed while it is written, fsynced before it is reported done, and checked against the
  expected size and digest; on any failure the temp file is removed before the exception leaves.
- A batch (Store.put_files) writes its files at their final names (`copy_new`, `write_new`: no temp name,
  no rename, no fchmod when the umask already leaves FILE_MODE), unsynced, and makes them durable with one
  flush of the tier (`Flusher`, syncfs) before anything relies on them: one flush for a thousand files
  instead of an fsync each, and batches written on several threads share flushes (a flush that started
  after a batch's writes ended covers them). That is safe only because the store claims and journals the
  names first and indexes nothing before the flushes (see Store._put_batch).
- Failures are told apart by side: reading the source raises `SourceError`, a size or digest mismatch
  raises `VerifyError`, writing the destination raises the plain `OSError` (its errno says FULL or FAILED).
"""

from __future__ import annotations

import ctypes
import functools
import io
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import xxhash

from oca.storage.layout import unlink_quiet

T = TypeVar("T")

CHUNK = 1 << 20
FILE_MODE = 0o644


class SourceError(Exception):
    """Reading the source failed; `error` is the OSError."""

    def __init__(self, path: str, error: OSError) -> None:
        self.path, self.error = path, error
        super().__init__(f"cannot read {path}: {error.strerror or error}")


class VerifyError(Exception):
    """The copied bytes are not what was expected (size or digest)."""


@dataclass(frozen=True, slots=True)
class Staged:
    """A fully written, fsynced temp file and what it holds."""

    path: str
    size: int
    digest: str


def write_chunk(fd: int, data: memoryview) -> None:
    """Write all of `data` to `fd` (os.write may write less than asked)."""
    while data:
        written = os.write(fd, data)
        data = data[written:]


def stage_copy(src: str, tmp_dir: str, *, expect_size: int | None = None,
               expect_digest: str | None = None) -> Staged:
    """Copy `src` into a new temp file in `tmp_dir`, hashing as it goes; fsync; verify."""
    try:
        src_file = open(src, "rb", buffering=0)  # noqa: SIM115 - closed in the finally below
    except OSError as e:
        raise SourceError(src, e) from e
    try:
        path, (size, digest) = _write_temp(tmp_dir, "obj-", lambda fd: _copy_hashing(src_file, src, fd, expect_size))
    finally:
        src_file.close()
    problem = _mismatch(size, digest, expect_size, expect_digest)
    if problem:
        unlink_quiet(path)
        raise VerifyError(f"{src}: {problem}")
    return Staged(path, size, digest)


def _copy_hashing(src_file: io.FileIO, src: str, fd: int, expect_size: int | None = None) -> tuple[int, str]:
    hasher = xxhash.xxh3_128()
    # the expected size sizes the buffer without an fstat (a file that grew meanwhile is still read whole)
    buf = bytearray(_buffer_size(src_file) if expect_size is None else max(1, min(CHUNK, expect_size + 1)))
    view = memoryview(buf)
    size = 0
    while True:
        try:
            n = src_file.readinto(buf)
        except OSError as e:
            raise SourceError(src, e) from e
        if not n:
            break
        chunk = view[:n]
        hasher.update(chunk)
        write_chunk(fd, chunk)
        size += n
    return size, hasher.hexdigest()


def _buffer_size(f: io.FileIO) -> int:
    """A read buffer for `f`: CHUNK, or the file's size and one byte more when smaller (one read fills it, the
    next sees the end), since zeroing a 1 MiB buffer per segment of a few KiB costs more than reading it."""
    try:
        size = os.fstat(f.fileno()).st_size
    except OSError:
        return CHUNK
    return max(1, min(CHUNK, size + 1))


def _mismatch(size: int, digest: str, expect_size: int | None, expect_digest: str | None) -> str:
    if expect_size is not None and size != expect_size:
        return f"size {size} bytes, expected {expect_size}"
    if expect_digest is not None and digest != expect_digest.lower():
        return f"digest {digest}, expected {expect_digest}"
    return ""


def copy_new(src: str, path: str, size: int, stale: str = "") -> str:
    """Copy `src`, expected to hold `size` bytes, into a new file at `path`, hashing as it goes; not fsynced
    (the caller flushes the filesystem before relying on it). Returns the xxh3_128 hex digest. Per file of up
    to CHUNK bytes: open, one read, close of the source; open, one write, close of the copy (no fstat: the
    size is known; no second read: a regular file reads short only at its end). A file already at `path` is
    unlinked first, and `stale` (its sidecar) before it. On any failure `path` is removed before the exception
    leaves: SourceError, VerifyError (another size), or the destination's OSError."""
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SourceError(src, e) from e
    try:
        fd = _create_new(path, stale)
        try:
            digest, copied = _copy_fd(src_fd, src, fd, size)
            if copied != size:
                raise VerifyError(f"{src}: size {copied} bytes, expected {size}")
        except BaseException:
            os.close(fd)
            unlink_quiet(path)
            raise
        os.close(fd)
    finally:
        os.close(src_fd)
    return digest


def _copy_fd(src_fd: int, src: str, fd: int, size: int) -> tuple[str, int]:
    """Copy all of `src_fd` to `fd`: (digest, bytes copied). A buffer of `size` + 1 bytes (at most CHUNK) reads
    a small file whole in one call and sees its end in the same one."""
    buf = bytearray(max(1, min(CHUNK, size + 1)))
    view = memoryview(buf)
    try:
        n = os.readv(src_fd, [buf])
    except OSError as e:
        raise SourceError(src, e) from e
    if n < len(buf):  # the whole file in one read: one-shot hash, one write
        chunk = view[:n]
        write_chunk(fd, chunk)
        return xxhash.xxh3_128_hexdigest(chunk), n
    hasher = xxhash.xxh3_128()
    copied = 0
    while n:
        chunk = view[:n]
        hasher.update(chunk)
        write_chunk(fd, chunk)
        copied += n
        try:
            n = os.readv(src_fd, [buf])
        except OSError as e:
            raise SourceError(src, e) from e
    return hasher.hexdigest(), copied


def write_new(path: str, data: bytes) -> None:
    """A new file at `path` holding `data` (a sidecar), not fsynced; removed again on failure."""
    fd = _create_new(path)
    try:
        write_chunk(fd, memoryview(data))
    except BaseException:
        os.close(fd)
        unlink_quiet(path)
        raise
    os.close(fd)


_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_new(path: str, stale: str = "") -> int:
    """Create `path` exclusively with FILE_MODE. A file already there is not a stored object (the caller holds
    the name: journalled, not indexed) but what a failed removal left: it is unlinked, not truncated, so a
    reader that still has it open keeps its bytes; `stale` (that object's sidecar, which a removal unlinks
    first, so it is left only beside its object) is unlinked before it, so the new bytes never sit beside
    it: the filesystem's journal keeps the order, and a scan trusts a sidecar's size (layout.py)."""
    try:
        fd = os.open(path, _NEW_FLAGS, FILE_MODE)
    except FileExistsError:
        if stale:
            unlink_quiet(stale)
        unlink_quiet(path)
        fd = os.open(path, _NEW_FLAGS, FILE_MODE)
    if _umask_strips(FILE_MODE):
        try:
            os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            unlink_quiet(path)
            raise
    return fd


@functools.cache
def _umask_strips(mode: int) -> bool:
    """Whether the process's umask takes bits off `mode` (then a new file needs an fchmod). Read once from
    /proc (setting the umask to read it would race other threads creating files); True when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return bool(int(line.split()[1], 8) & mode)
    except (OSError, ValueError):
        pass
    return True


def stage_bytes(data: bytes, tmp_dir: str) -> str:
    """Write a small file (a sidecar) into a new fsynced temp file in `tmp_dir`; returns its path."""
    path, _ = _write_temp(tmp_dir, "meta-", lambda fd: write_chunk(fd, memoryview(data)))
    return path


def _write_temp(tmp_dir: str, prefix: str, write: Callable[[int], T]) -> tuple[str, T]:
    """A new temp file in `tmp_dir` filled by `write(fd)`, given its mode and fsynced; removed on any
    failure."""
    fd, path = _make_temp(tmp_dir, prefix)
    try:
        result = write(fd)
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quiet(path)
        raise
    os.close(fd)
    return path, result


_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_temp_names = itertools.count()


def _make_temp(tmp_dir: str, prefix: str) -> tuple[int, str]:
    """A new file in `tmp_dir`, created exclusively (as tempfile.mkstemp does) but named by process and counter
    instead of random letters: tmp/ is this store's alone and emptied at open, so a name is taken only by a
    leftover of an earlier process with the same pid, and then the next number is tried."""
    while True:
        path = f"{tmp_dir}/{prefix}{os.getpid()}-{next(_temp_names)}"
        try:
            return os.open(path, _TEMP_FLAGS, 0o600), path
        except FileExistsError:
            continue


def hash_file(path: str) -> tuple[int, str]:
    """Size and xxh3_128 hex digest of the file at `path`."""
    hasher = xxhash.xxh3_128()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_buffer_size(f))
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return size, hasher.hexdigest()


def sync_filesystem(path: str) -> None:
    """Flush everything written to the filesystem holding `path` (syncfs(2); Linux 5.8+ reports write-back
    errors through it). Elsewhere, or without syncfs, every filesystem (sync(2)). Raises OSError."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


class Flusher:
    """`sync_filesystem` of one filesystem, shared by the threads that write to it (group commit).

    A caller takes a `ticket` once its writes are done and passes it to `flush`: its writes are durable once a
    flush that *started* after the ticket was taken has completed. `flush` returns at once when one has, waits
    for a running flush and then starts one only if that flush began too early, so N batches staged at once
    cost about two syncfs, not N. A flush that fails covers nobody: each waiter then runs its own and gets
    its own error (syncfs reports write-back errors to the fd that asks, Linux 5.8+). Thread-safe."""

    def __init__(self, path: str, sync: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._sync = sync or (lambda p: sync_filesystem(p))  # looked up per call: tests replace sync_filesystem
        self._cond = threading.Condition()
        self._started = 0  # flushes started so far (the latest one's number)
        self._done = 0  # the number of the latest flush that completed without error
        self._running = False
        self.flushes = 0  # syncfs calls made (for tests and figures)

    def ticket(self) -> int:
        """Take after writing: the number of the first flush that starts from now on."""
        with self._cond:
            return self._started + 1

    def flush(self, ticket: int) -> None:
        """Return once a flush numbered `ticket` or later has completed; run one if needed. Raises OSError."""
        with self._cond:
            while True:
                if covered(self._done, ticket):
                    return
                if not self._running:
                    self._running = True
                    self._started += 1
                    mine = self._started
                    break
                self._cond.wait()
        ok = False
        try:
            self.flushes += 1
            self._sync(self.path)
            ok = True
        finally:
            with self._cond:
                self._running = False
                if ok:
                    self._done = max(self._done, mine)
                self._cond.notify_all()


def covered(done: int, ticket: int) -> bool:
    """Whether writes that took `ticket` are durable, the latest completed flush being number `done`."""
    return done >= ticket


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
