"""Durable file primitives: copy-and-hash into a temp file, small atomic writes, directory fsync.

Rules kept here:
- Every byte written to a tier goes through `write_chunk`, the one function that writes object data
  (tests make a disk full or failing by replacing it).
- A copy is hashed while it is written, fsynced before it is reported done, and checked against the
  expected size and digest; on any failure the temp file is removed before the exception leaves.
  A batch (Store.put_files) stages its copies unsynced and makes them durable with one flush of the tier
  (`Flusher`, syncfs) before any is renamed into place or indexed: one flush for hundreds of files instead
  of an fsync each, and batches staged on several threads share flushes (a flush that started after a
  batch's writes ended covers them).
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
               expect_digest: str | None = None, sync: bool = True) -> Staged:
    """Copy `src` into a new temp file in `tmp_dir`, hashing as it goes; fsync (unless `sync` is False: the
    caller runs sync_filesystem before relying on it); verify."""
    try:
        src_file = open(src, "rb", buffering=0)  # noqa: SIM115 - closed in the finally below
    except OSError as e:
        raise SourceError(src, e) from e
    try:
        path, (size, digest) = _write_temp(tmp_dir, "obj-", lambda fd: _copy_hashing(src_file, src, fd, expect_size),
                                           sync)
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


def stage_bytes(data: bytes, tmp_dir: str, sync: bool = True) -> str:
    """Write a small file (a sidecar) into a new temp file in `tmp_dir`, fsynced unless `sync` is False;
    returns its path."""
    path, _ = _write_temp(tmp_dir, "meta-", lambda fd: write_chunk(fd, memoryview(data)), sync)
    return path


def _write_temp(tmp_dir: str, prefix: str, write: Callable[[int], T], sync: bool = True) -> tuple[str, T]:
    """A new temp file in `tmp_dir` filled by `write(fd)`, given its mode and fsynced (if `sync`); removed on
    any failure."""
    fd, path = _make_temp(tmp_dir, prefix)
    try:
        result = write(fd)
        os.fchmod(fd, FILE_MODE)
        if sync:
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


def staging_dir(tmp_dir: str) -> str:
    """A new directory in `tmp_dir` for one batch's temp files. Batches staged at once on several threads
    each create their files in a directory of their own, so they do not all take one directory's lock in the
    kernel for every file they create. Emptied with the rest of tmp/ at the next open if left behind."""
    while True:
        path = f"{tmp_dir}/batch-{os.getpid()}-{next(_temp_names)}"
        try:
            os.mkdir(path, 0o700)
            return path
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
