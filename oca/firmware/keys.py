"""Firmware signing keys: Ed25519 only, PEM on disk, named by a key id derived from the public key.

Rules kept here:
- The signer holds the private key (PKCS#8 PEM, mode 0600); a box holds public keys only, in
  `firmware.trusted_keys_file`: one or more `-----BEGIN PUBLIC KEY-----` blocks (rotation = two blocks).
- A key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key: the signature file names
  it, so "signed by a key this box does not trust" is told apart from "bad signature".
- A private key in the trusted keys file is a ConfigError: a box in an ISP's rack must not be able to sign.
"""

from __future__ import annotations

import hashlib
import os
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from oca.errors import ConfigError
from oca.secret_files import load_private_pem, read_small_file

_MAX_KEY_FILE = 1 << 20
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file itself must be protected (mode 0600, the signer's host only)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_keypair(path: str) -> tuple[str, str]:
    """Create `path` (private, 0600, never overwriting) and `<path minus .pem>.pub.pem`; (public path, key id)."""
    key = Ed25519PrivateKey.generate()
    public_path = (path[:-4] if path.endswith(".pem") else path) + ".pub.pem"
    for name in (path, public_path):
        if os.path.exists(name):
            raise ConfigError(name, "", "already exists; not overwriting a key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private_pem(key))
    with open(public_path, "xb") as file:
        file.write(public_pem(key.public_key()))
    return public_path, key_id(key.public_key())


def _read(path: str, what: str) -> bytes:
    return read_small_file(path, what, _MAX_KEY_FILE)


def load_signing_key(path: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file; ConfigError naming the file and what is wrong."""
    key = load_private_pem(path, "signing a bundle", _MAX_KEY_FILE)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(path, "", "firmware is signed with Ed25519 keys only (`oca firmware keygen`)")
    return key


def parse_trusted_keys(data: bytes, source: str) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id from PEM text holding one or more PUBLIC KEY blocks."""
    keys: dict[str, Ed25519PublicKey] = {}
    for number, match in enumerate(_PEM_BLOCK.finditer(data), start=1):
        where = f"key {number}"
        if match.group(1) != b"PUBLIC KEY":
            raise ConfigError(source, where, f"a {match.group(1).decode()} block: a box holds public keys only")
        try:
            key = serialization.load_pem_public_key(match.group(0))
        except ValueError:
            raise ConfigError(source, where, "not a valid PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(source, where, "not an Ed25519 key: firmware is signed with Ed25519 only")
        keys[key_id(key)] = key
    if not keys:
        raise ConfigError(source, "", "no PUBLIC KEY block: a box that trusts no key can install no firmware")
    return keys


def load_trusted_keys(path: str) -> dict[str, Ed25519PublicKey]:
    return parse_trusted_keys(_read(path, "trusted keys file"), path)
