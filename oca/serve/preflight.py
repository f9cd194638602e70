"""The box's start-up checks, in one place: `oca serve` runs them before it starts, a SIGHUP reload before
it applies a new config, and `oca check-config` / `oca serve --check` run them and stop. So they cannot
drift apart.

Checked, every problem collected (one ConfigError each, against the config file and the key):
- the settings themselves (oca.config: unknown keys, types, sizes, durations, bounds, cross-key rules);
- every file the config names, loaded as the box loads it: the JWKS (tokens.jwks_file), the admin and
  read-only admin tokens, the firmware trusted keys, the peer and control-plane credentials;
- every directory the box writes: storage.state_dir, each tier's path, the release slots, the access log;
- no other process owns the storage (storage.state_dir's owner lock);
- the data and admin ports bindable now (the data port with SO_REUSEPORT, as the master binds it).
A reload (`reload=True`) skips the owner lock and the admin port: the running box holds both, and a reload
keeps the storage and admin settings (they apply at the next restart).
"""

from __future__ import annotations

import fcntl
import os

from oca.config import BoxConfig
from oca.config.check import Problems, check_bindable, check_writable_dir, check_writable_file
from oca.config.loader import box_config_problems
from oca.config.settings import read_yaml
from oca.errors import ConfigError, ConfigProblems
from oca.secret_files import read_secret


def check_box(path: str, *, reload: bool = False, ports: bool = True) -> tuple[BoxConfig | None, list[ConfigError]]:
    """(the config, every problem found); the config is None when the file could not be read as YAML."""
    problems = Problems(path)
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        return None, [exc]
    config = box_config_problems(raw, path, problems.found)
    _check_files(config, problems)
    _check_dirs(config, problems)
    if not reload:
        _check_owner(config, problems)
    if ports:
        _check_ports(config, problems, reload)
    return config, problems.found


def load_checked_box(path: str, *, reload: bool = False, ports: bool = True) -> BoxConfig:
    """The config, once every check passed; ConfigProblems (exit 2, one line each) otherwise."""
    config, problems = check_box(path, reload=reload, ports=ports)
    if problems or config is None:
        raise ConfigProblems(problems)
    return config


def _check_files(config: BoxConfig, problems: Problems) -> None:
    from oca.firmware.keys import load_trusted_keys
    from oca.serve.gate import Gate

    if config.tokens.required and config.tokens.jwks_file:
        problems.attempt("tokens.jwks_file", lambda: Gate(config.tokens, None))
    admin = config.admin
    token = read = None
    if admin.token_file:
        token = problems.attempt("admin.token_file", lambda: read_secret(admin.token_file or "", "admin.token_file"))
    if admin.read_token_file:
        read = problems.attempt("admin.read_token_file",
                                lambda: read_secret(admin.read_token_file or "", "admin.read_token_file"))
        if not admin.token_file:
            problems.add("admin.read_token_file", "needs admin.token_file (without it every route is open)")
        elif read is not None and read == token:
            problems.add("admin.read_token_file", "holds the same token as admin.token_file")
    if config.firmware.trusted_keys_file:
        keys = config.firmware.trusted_keys_file
        problems.attempt("firmware.trusted_keys_file", lambda: load_trusted_keys(keys))
    for key, secret in (("fetch.peer_credential_file", config.fetch.peer_credential_file),
                        ("control.credential_file", config.control.credential_file)):
        if secret:
            _read_secret(problems, secret, key)


def _read_secret(problems: Problems, path: str, key: str) -> None:
    problems.attempt(key, lambda: read_secret(path, key))


def _check_dirs(config: BoxConfig, problems: Problems) -> None:
    storage = config.storage
    check_writable_dir(problems, "storage.state_dir", storage.state_dir)
    for i, tier in enumerate(storage.tiers):
        if tier.path:
            check_writable_dir(problems, f"storage.tiers[{i}].path", tier.path)
    releases = config.firmware.releases_dir
    if releases is not None:
        check_writable_dir(problems, "firmware.releases_dir", releases)
    log = config.log.access_log
    if log is not None and log != "-":
        check_writable_file(problems, "log.access_log", log)


def _check_owner(config: BoxConfig, problems: Problems) -> None:
    """No other process owns the storage (oca.storage.lock; tested, never taken, nothing written)."""
    from oca.storage.lock import LOCK_NAME

    lock = os.path.join(config.storage.state_dir, LOCK_NAME)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file yet (or none readable: the directory check says why)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        problems.add("storage.state_dir", f"storage at {config.storage.state_dir} is owned by another process "
                                          f"(pid {holder}): another box runs with it")
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_ports(config: BoxConfig, problems: Problems, reload: bool) -> None:
    data, admin = config.server.listen, config.admin.listen
    if data[1] != 0 and data == admin:
        problems.add("admin.listen", f"{admin[0]}:{admin[1]} is server.listen too")
        return
    check_bindable(problems, "server.listen", data, reuse_port=True)
    if not reload:
        check_bindable(problems, "admin.listen", admin)
