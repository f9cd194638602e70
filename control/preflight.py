"""The control plane's start-up checks, in one place: ControlPlane.open loads what it needs through
`startup()`, `oca control serve` runs `check_control` before it starts, and `oca check-config` /
`oca control serve --check` run it and stop. So they cannot drift apart.

Checked, every problem collected (one ConfigError each, against the config file and the key):
- the settings, the fleet (inline or its file) and the coverage file (control.config); the prefixes file
  (control.prefix_data, as the steering index is built);
- every file the config names, loaded as the plane loads it: the operator, box and read-only tokens, the
  state database password, the token signing key, the roll-out trusted keys; the steering index built;
- the directories it writes: the SQLite state's directory and the bundles directory;
- `listen` bindable now.
A PostgreSQL state is not connected to here (the database may be down while the config is fine; the plane
says so at start and in /v1/status).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from control.config import ControlConfig, control_config_problems
from control.prefix_data import PrefixFiles, Signature, build_index
from control.steering import SteeringIndex
from oca.config.check import Problems, check_bindable, check_writable_dir
from oca.config.settings import read_yaml
from oca.errors import ConfigError, ConfigProblems
from oca.secret_files import read_secret
from oca.tokens import PrivateKey, load_private_key


@dataclass(frozen=True)
class Startup:
    """What ControlPlane.open reads from the files the config names."""

    operator_token: str | None
    box_token: str | None
    read_token: str | None
    state_password: str | None
    signing_key: PrivateKey | None
    index: SteeringIndex | None
    prefix_signature: Signature = ()  # the prefix files as they were just before the index read them


def read_startup(config: ControlConfig, problems: Problems) -> Startup:
    """Load every file the config names and build the steering index, recording each problem."""
    from oca.firmware.keys import load_trusted_keys

    def secret(path: str | None, key: str) -> str | None:
        if path is None:
            return None
        return problems.attempt(key, lambda: read_secret(path, key, file=config.source, unreadable="cannot read "
                                                         "{path}: {error}", empty="{path} is empty"))

    auth = config.auth
    operator = secret(auth.operator_token_file, "auth.operator_token_file")
    box = secret(auth.box_token_file, "auth.box_token_file")
    read = secret(auth.read_token_file, "auth.read_token_file")
    if auth.read_token_file is not None:
        if auth.operator_token_file is None:
            problems.add("auth.read_token_file", "needs auth.operator_token_file (without it the API is open)")
        elif read is not None and read in (operator, box):
            problems.add("auth.read_token_file", "holds the same token as the operator or box token")
    password = secret(config.state_password_file, "state_password_file")
    signing_key = None
    if config.tokens.signing_key_file is not None:
        path = config.tokens.signing_key_file
        signing_key = problems.attempt("tokens.signing_key_file", lambda: load_private_key(path))
    if config.rollout.trusted_keys_file is not None:  # a bad file stops the start, not the first roll-out
        keys = config.rollout.trusted_keys_file
        problems.attempt("rollout.trusted_keys_file", lambda: load_trusted_keys(keys))
    index = None
    signature = prefix_files(config).signature()  # before reading: a change made meanwhile is seen next check
    try:
        index = build_index(config.fleet, prefix_files(config), config.steering.default_site,
                            coverage=config.fleet.coverage)
    except ConfigError as exc:  # a line of the prefix file: the error names that file and line
        problems.found.append(exc)
    except ValueError as exc:
        problems.add("fleet", str(exc))
    return Startup(operator, box, read, password, signing_key, index, signature)


def prefix_files(config: ControlConfig) -> PrefixFiles:
    return PrefixFiles(config.prefixes_file, config.coverage_file)


def startup(config: ControlConfig) -> Startup:
    """read_startup, raising ConfigProblems (every problem, one line each; exit 2) if there is any."""
    problems = Problems(config.source)
    loaded = read_startup(config, problems)
    if problems.found:
        raise ConfigProblems(problems.found)
    return loaded


def check_control(path: str, *, ports: bool = True) -> tuple[ControlConfig | None, list[ConfigError]]:
    """(the config, every problem found); the config is None when the file could not be read as YAML."""
    config, _, problems = _check(path, ports)
    return config, problems


def _check(path: str, ports: bool) -> tuple[ControlConfig | None, Startup | None, list[ConfigError]]:
    problems = Problems(path)
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        return None, None, [exc]
    config = control_config_problems(raw, path, problems.found)
    loaded = read_startup(config, problems)
    if config.state.url is None:
        check_writable_dir(problems, "state", os.path.dirname(os.path.abspath(config.state.path)))
    # bundles/ beside the SQLite state unless rollout.bundles_dir says where: a problem of `state` then
    check_writable_dir(problems, "state" if config.rollout.bundles_dir is None else "rollout.bundles_dir",
                       config.bundles_dir())
    if ports:
        check_bindable(problems, "listen", config.listen)
    return config, loaded, problems.found


def load_checked_control(path: str) -> tuple[ControlConfig, Startup]:
    """The config and what it names, loaded (ControlPlane.open takes it: a fleet's million prefixes are
    read once, not once to check and again to serve), once every check passed; ConfigProblems otherwise."""
    config, loaded, problems = _check(path, True)
    if problems or config is None or loaded is None:
        raise ConfigProblems(problems)
    return config, loaded
