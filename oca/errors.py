"""The handful of error types OCA raises.

Each carries the HTTP status a server answers with and the exit code the CLI uses, so neither the
servers nor the CLI need a translation table. Messages name the thing and the value that was wrong.
"""

from __future__ import annotations

# The exit codes of every `oca` command (README: Exit codes).
OK = 0
FAILED = 1  # the operation failed: the server refused it, files failed, a roll-out halted
USAGE = 2  # bad usage or configuration, including a missing or wrong token
UNREACHABLE = 3  # the control plane or the box could not be reached, or did not answer in time
WINDOW_CLOSED = 4  # `oca fill run`: the fill window closed before the fill completed (the next run resumes)
INTERRUPTED = 130  # Ctrl-C


class OcaError(Exception):
    """Base class: anything OCA raises on purpose."""

    status: int = 500
    exit_code: int = FAILED


class ConfigError(OcaError):
    """A configuration file is unreadable or invalid: the CLI prints one line and exits 2."""

    exit_code = USAGE

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + problem)


class ConfigProblems(ConfigError):
    """Every ConfigError the start-up checks found (`oca check-config`, `oca serve`): one line each, exit 2.
    Its file, key and problem are the first one's."""

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0] if problems else ConfigError("<config>", "", "invalid")
        super().__init__(first.file, first.key, first.problem)
        self.problems = problems or [first]
        self.args = ("\n".join(str(p) for p in self.problems),)

    def __str__(self) -> str:
        return str(self.args[0])


class BadRequest(OcaError):
    """The client sent something we will not act on (bad path, bad header)."""

    status = 400
    exit_code = USAGE


class Unauthorized(OcaError):
    status = 401


class Forbidden(OcaError):
    """A known credential that may not do this (the read-only token on a route that writes)."""

    status = 403


class NotFound(OcaError):
    status = 404


class Conflict(OcaError):
    status = 409


class StorageError(OcaError):
    """A tier could not store or read an object (I/O error, disk full, directory gone)."""

    status = 503


class InsufficientStorage(StorageError):
    """The object does not fit: every byte is pinned or it is larger than the tier."""

    status = 507


class ClientError(OcaError):
    """An operator client's exchange failed: the server answered `status` with its own message, or (with
    `unreachable`) it could not be reached or did not answer within the timeout (status 503).
    The CLI maps these to exit codes in one place (oca.cli.main): unreachable 3, 401/403 2, else 1."""

    credential = "the token"  # where the token comes from, named when the server refuses it

    def __init__(self, status: int, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable
