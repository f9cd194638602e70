"""Keys, a settable clock and token forgers shared by the token tests (no sleeps: time is a value)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.utils import base64url_encode

from oca.tokens import KeySet, TokenVerifier, public_jwk, title_scope
from tests.clock import FakeClock

NOW = 1_700_000_000.0
ISSUER = "oca-control"
TITLE = "81239481"
PATH = f"/titles/{TITLE}/720p/seg00001.m4s"
CLIENT = "198.51.100.7"

ED_KEY = Ed25519PrivateKey.generate()
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_OTHER = Ed25519PrivateKey.generate()  # not in the JWKS
KEYS = KeySet.from_jwks({"keys": [public_jwk(ED_KEY, "ed-1"), public_jwk(EC_KEY, "ec-1")]}, "test-jwks.json")


def verifier(clock: FakeClock | None = None, **kwargs: Any) -> TokenVerifier:
    kwargs.setdefault("issuers", frozenset({ISSUER}))
    return TokenVerifier(KEYS, clock=clock or FakeClock(NOW), **kwargs)


def claims(**changes: Any) -> dict[str, Any]:
    """A good claim set for TITLE at NOW, with `changes` applied (a value of ... deletes the claim)."""
    base: dict[str, Any] = {"iss": ISSUER, "nbf": int(NOW), "exp": int(NOW) + 3600, "cdniv": 1,
                            "cdniuc": title_scope(TITLE)}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not ...}


def sign(payload: Any = None, *, key: Any = ED_KEY, kid: str | None = "ed-1", alg: str | None = None,
         header: dict[str, Any] | None = None) -> str:
    """A token signed for real by `key` (Ed25519 -> EdDSA, EC -> ES256 unless `alg` says otherwise)."""
    alg = alg or ("EdDSA" if isinstance(key, Ed25519PrivateKey) else "ES256")
    headers: dict[str, Any] = {"typ": "JWT", **(header or {})}
    if kid is not None:
        headers["kid"] = kid
    if payload is None:
        payload = claims()
    # Through the JWS layer so that claims PyJWT's JWT layer would refuse to encode can be signed too.
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.api_jws.encode(body, key, algorithm=alg, headers=headers)


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token with whatever header and signature bytes an attacker likes."""
    parts = [base64url_encode(json.dumps(header).encode()), base64url_encode(json.dumps(payload).encode())]
    return b".".join([*parts, base64url_encode(signature)]).decode()


def hmac_token(secret: bytes, alg: str = "HS256", kid: str = "ed-1") -> str:
    """An HMAC token keyed with `secret` (the algorithm-confusion attack uses the public key as the secret)."""
    header = base64url_encode(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    body = base64url_encode(json.dumps(claims()).encode())
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(secret, header + b"." + body, digest).digest()
    return (header + b"." + body + b"." + base64url_encode(mac)).decode()


def public_pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def ed_public_raw() -> bytes:
    return ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def flip(token: str, part: int) -> str:
    """`token` with one character in the middle of segment `part` changed (still valid base64url)."""
    segments = token.split(".")
    seg = segments[part]
    middle = len(seg) // 2
    segments[part] = seg[:middle] + ("A" if seg[middle] != "A" else "B") + seg[middle + 1:]
    return ".".join(segments)
