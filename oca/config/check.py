"""What the start-up checks of both services share (oca.serve.preflight, control.preflight): a problem
list against one config file, directories that must be writable, ports that must be free, files to load.

Rules kept here:
- Every problem is one ConfigError against the config file and the key that names the thing, whatever
  file the loader complained about: `oca.yaml: tokens.jwks_file: /etc/oca/jwks.json: not valid JSON ...`.
- A directory is fine if it is a writable directory, or if it does not exist yet and its nearest existing
  ancestor is a writable directory (the service creates it). Nothing is created here.
- A port is bindable if a socket with the options the service uses binds it now (bound, never listened
  on, closed at once). The data port uses SO_REUSEPORT as the box's listeners do, so a running box of
  the same user does not make its own port look taken before a reload.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from oca.errors import ConfigError, OcaError

T = TypeVar("T")


@dataclass
class Problems:
    """The problems found in one config file, in the order found."""

    file: str
    found: list[ConfigError] = field(default_factory=list)

    def add(self, key: str, problem: str) -> None:
        """One problem with `key`: only the first one per key (a value that could not be read is not
        reported again as a file that cannot be loaded)."""
        if not any(p.key == key for p in self.found):
            self.found.append(ConfigError(self.file, key, problem))

    def adopt(self, key: str, exc: OcaError) -> None:
        """A loader's error, reported against this config file and `key` (naming the loader's file if other)."""
        if isinstance(exc, ConfigError):
            if exc.file == self.file:
                self.add(exc.key or key, exc.problem)
                return
            inner = f"{exc.key}: " if exc.key and exc.key != key else ""
            self.add(key, f"{exc.file}: {inner}{exc.problem}")
        else:
            self.add(key, str(exc))

    def attempt(self, key: str, load: Callable[[], T]) -> T | None:
        """`load()`, or None with its error recorded against `key`."""
        try:
            return load()
        except OcaError as exc:
            self.adopt(key, exc)
            return None


def check_writable_dir(problems: Problems, key: str, path: str) -> None:
    """`path` is (or can be created as) a directory this process may write."""
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    where = "" if probe == path else f"{path}: "
    if not os.path.isdir(probe):
        problems.add(key, f"{where}{probe} is not a directory")
    elif not os.access(probe, os.W_OK | os.X_OK):
        problems.add(key, f"{where}{probe} is not writable by this user (uid {os.getuid()})")


def check_writable_file(problems: Problems, key: str, path: str) -> None:
    """`path` is a writable file, or can be created in a writable directory."""
    if os.path.isdir(path):
        problems.add(key, f"{path} is a directory")
    elif os.path.exists(path):
        if not os.access(path, os.W_OK):
            problems.add(key, f"{path} is not writable by this user (uid {os.getuid()})")
    else:
        check_writable_dir(problems, key, os.path.dirname(path) or ".")


def check_bindable(problems: Problems, key: str, address: tuple[str, int], *, reuse_port: bool = False) -> None:
    """`address` can be bound now (with SO_REUSEADDR, and SO_REUSEPORT if the service sets it)."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
    except OSError as exc:
        problems.add(key, f"cannot listen on {host}:{port}: {exc.strerror or exc}")
