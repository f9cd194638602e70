"""Reading a secret (bearer token, credential) from the file a config or an option names.

Rules kept here:
- The secret is the file's text with surrounding white space stripped; an empty one is an error, never
  "no secret".
- Every problem is one ConfigError (exit code 2) against `file` (the config that names the secret file;
  by default the secret file itself) and `key`, worded by the caller's templates: {path} is the secret
  file, {error} why it could not be read.
- Named secret_files, not secrets, so it can never stand in for the standard library's `secrets`.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from oca.errors import ConfigError


def read_secret(path: str, key: str = "", *, file: str | None = None, unreadable: str = "cannot read: {error}",
                empty: str = "the file is empty") -> str:
    """The secret in the file at `path`."""
    where = path if file is None else file
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        raise ConfigError(where, key, unreadable.format(path=path, error=exc.strerror or exc)) from None
    if not secret:
        raise ConfigError(where, key, empty.format(path=path))
    return secret


def read_small_file(path: str, what: str, limit: int) -> bytes:
    """The bytes of a small file a config names (a key, a JWKS), at most `limit` of them; ConfigError naming
    the file and `what` it should have been when it cannot be read or is larger."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(path, "", f"the {what} is larger than {limit} bytes")
    return data


def load_private_pem(path: str, needed_for: str, limit: int = 1 << 16) -> Any:
    """The private key in a PEM file (any type: the caller checks which it needs); ConfigError naming the
    file when it is unreadable, a public key, encrypted or not a PEM private key. `needed_for` completes
    "this is a public key; ... needs the private key"."""
    data = read_small_file(path, "key file", limit)
    if b"PUBLIC KEY-----" in data:
        raise ConfigError(path, "", f"this is a public key; {needed_for} needs the private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(path, "", "the private key is encrypted; give an unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(path, "", "not a PEM private key") from None
