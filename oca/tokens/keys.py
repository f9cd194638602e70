"""Token keys: the box's public keys by kid (a JWKS file), and the control plane's signing keys (PEM files).

Rules kept here:
- Two key types only, each bound to one JWS alg: Ed25519 -> "EdDSA", EC P-256 -> "ES256". RSA, other
  curves, Ed448 and symmetric ("oct") keys are refused, so an HMAC secret can never enter a KeySet.
- A box's JWKS holds public keys only: a key with a private member ("d") is a ConfigError, because a
  box in an ISP's rack must not be able to mint tokens.
- Every key has a unique, non-empty `kid`; several keys may be live at once (rotation with overlap).
- JWK parsing and serialisation go through PyJWT/cryptography (which also check that an EC point is on
  its curve); nothing here hand-writes JOSE.
- Errors are ConfigError(file, key, problem) one-liners naming the file, the member and the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from jwt.exceptions import PyJWTError

from oca.errors import BadRequest, ConfigError
from oca.secret_files import load_private_pem, read_small_file

Alg = Literal["ES256", "EdDSA"]
ALGS: tuple[Alg, ...] = ("ES256", "EdDSA")

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_MAX_JWKS_BYTES = 1 << 20
# The JWK members (kty, crv) each alg needs (RFC 8037 §2 for OKP, RFC 7518 §6.2 for EC).
_JWK_TYPE: dict[Alg, tuple[str, str]] = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    kid: str
    alg: Alg
    key: PublicKey


@dataclass(frozen=True)
class KeySet:
    """Public keys by kid. Immutable: a reloaded JWKS is a new KeySet."""

    by_kid: Mapping[str, VerifyingKey]
    source: str = "<keys>"

    def get(self, kid: str) -> VerifyingKey | None:
        return self.by_kid.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self.by_kid

    def __len__(self) -> int:
        return len(self.by_kid)

    def __iter__(self) -> Iterator[VerifyingKey]:
        return iter(self.by_kid.values())

    @classmethod
    def of(cls, keys: Mapping[str, PublicKey | PrivateKey], source: str = "<keys>") -> KeySet:
        """A KeySet from key objects by kid (private keys contribute their public half)."""
        by_kid = {}
        for kid, key in keys.items():
            public = key.public_key() if isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey) else key
            by_kid[kid] = VerifyingKey(kid, key_alg(public), public)
        return cls(by_kid, source)

    @classmethod
    def from_jwks(cls, document: object, source: str = "<jwks>") -> KeySet:
        """Parse a JWKS document ({"keys": [...]}) holding public Ed25519 / P-256 keys."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ConfigError(source, "", 'expected a JWKS object: {"keys": [ ... ]}')
        if not document["keys"]:
            raise ConfigError(source, "keys", "no keys: a box with an empty JWKS can verify no token")
        by_kid: dict[str, VerifyingKey] = {}
        for index, jwk in enumerate(document["keys"]):
            key = _parse_jwk(jwk, source, f"keys[{index}]")
            if key.kid in by_kid:
                raise ConfigError(source, f"keys[{index}].kid", f"duplicate kid {key.kid!r}")
            by_kid[key.kid] = key
        return cls(by_kid, source)


def load_jwks(path: str) -> KeySet:
    """The KeySet in a JWKS file; ConfigError naming the file and the problem."""
    data = read_small_file(path, "JWKS file", _MAX_JWKS_BYTES)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(path, "", f"not valid JSON: {exc}") from None
    return KeySet.from_jwks(document, path)


def _parse_jwk(jwk: object, source: str, where: str) -> VerifyingKey:
    if not isinstance(jwk, dict):
        raise ConfigError(source, where, "expected a JWK object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ConfigError(source, f"{where}.kid", "every key needs a non-empty string kid")
    if "d" in jwk:
        raise ConfigError(source, f"{where}.d", f"key {kid!r} is a private key: a box's JWKS holds public keys "
                          "only (a box must not be able to mint tokens)")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    algs = [alg for alg, (t, c) in _JWK_TYPE.items() if (t, c) == (kty, crv)]
    if not algs:
        raise ConfigError(source, where, f"key {kid!r} is kty={kty!r} crv={crv!r}; only OKP/Ed25519 (EdDSA) "
                          "and EC/P-256 (ES256) keys are accepted")
    alg = algs[0]
    if jwk.get("alg", alg) != alg:
        raise ConfigError(source, f"{where}.alg", f"key {kid!r} is {kty}/{crv}, which signs {alg}, "
                          f"not {jwk['alg']!r}")
    if jwk.get("use", "sig") != "sig":
        raise ConfigError(source, f"{where}.use", f"key {kid!r} has use={jwk['use']!r}; expected 'sig'")
    try:
        key = OKPAlgorithm.from_jwk(jwk) if alg == "EdDSA" else ECAlgorithm.from_jwk(jwk)
    except (PyJWTError, ValueError, TypeError) as exc:
        raise ConfigError(source, where, f"key {kid!r} is not a valid {kty} public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError(source, where, f"key {kid!r} did not load as a public key")
    return VerifyingKey(kid, alg, key)


def key_alg(key: object) -> Alg:
    """The one JWS alg a key may sign or verify with; BadRequest for any other key type."""
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise BadRequest(f"{_describe(key)} cannot be a token key: use Ed25519 (EdDSA) or EC P-256 (ES256)")


def public_jwk(key: PrivateKey | PublicKey, kid: str) -> dict[str, Any]:
    """The public JWK (with kid, alg and use) of a key, for a JWKS file. Never includes a private member."""
    alg = key_alg(key)
    public = key.public_key() if isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey) else key
    if not kid:
        raise BadRequest("a key needs a non-empty kid")
    if isinstance(public, Ed25519PublicKey):
        jwk = dict(OKPAlgorithm.to_jwk(public, as_dict=True))
    else:
        jwk = dict(ECAlgorithm.to_jwk(public, as_dict=True))
    jwk.pop("d", None)
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def generate_private_key(alg: Alg) -> PrivateKey:
    if alg == "EdDSA":
        return Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file itself must be protected (mode 0600, the signer's host only)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path: str) -> PrivateKey:
    """A signing key from a PEM file; ConfigError naming the file and what is wrong with it."""
    key = load_private_pem(path, "minting", _MAX_JWKS_BYTES)
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError(path, "", f"{_describe(key)} cannot sign tokens: use Ed25519 (EdDSA) or EC P-256 (ES256)")


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    name = type(key).__name__.lstrip("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return f"a {name or type(key).__name__} key"


def write_private_key(path: str, key: PrivateKey) -> None:
    """Create `path` (mode 0600, never overwriting) holding the key as PEM."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private_key_pem(key))
