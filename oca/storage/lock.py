"""Who may own a state_dir, and whether a storage config can be owned at all.

Rules kept here:
- One owner per state_dir: an exclusive, non-blocking flock on `<state_dir>/owner.lock`, whose file
  holds the owner's pid so the refusal can name it. The descriptor is close-on-exec; a process that forks
  workers after opening the Store passes the lock on to them (fork first, or accept that).
- Config problems are reported as ConfigError naming the key and the value.
"""

from __future__ import annotations

import fcntl
import os

from oca.config.model import StorageConfig
from oca.errors import ConfigError, Conflict, StorageError
from oca.storage.health import describe

LOCK_NAME = "owner.lock"


def validate(config: StorageConfig) -> None:
    where = "<storage config>"
    if not config.tiers:
        raise ConfigError(where, "storage.tiers", "at least one tier is needed")
    names = [t.name for t in config.tiers]
    paths = [os.path.abspath(t.path) for t in config.tiers]
    for i, tier in enumerate(config.tiers):
        if not tier.name:
            raise ConfigError(where, f"storage.tiers[{i}].name", "a tier needs a name")
        if not tier.path:
            raise ConfigError(where, f"storage.tiers[{i}].path", f"tier {tier.name} needs a path")
        if tier.capacity < 1:
            raise ConfigError(where, f"storage.tiers[{i}].capacity",
                              f"tier {tier.name} capacity must be positive, got {tier.capacity}")
        if names.count(tier.name) > 1:
            raise ConfigError(where, f"storage.tiers[{i}].name", f"tier name {tier.name!r} is used twice")
        if paths.count(paths[i]) > 1:
            raise ConfigError(where, f"storage.tiers[{i}].path", f"tier path {tier.path!r} is used twice")


def take_lock(state_dir: str) -> int:
    """The locked descriptor of `<state_dir>/owner.lock`; Conflict if another owner holds it."""
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StorageError(f"cannot open {path}: {describe(e)}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Conflict(f"storage at {state_dir} is owned by another process (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
