"""mint: sign a token (the control plane's side; a box never holds a private key).

Rules kept here:
- The alg follows from the key: Ed25519 -> EdDSA, EC P-256 -> ES256; no other key signs.
- Every token carries iss, nbf = now, exp = now + lifetime (whole seconds, nbf rounded down and exp
  rounded down, so a token never outlives what was asked), cdniv 1, cdniuc and, when asked, cdniip;
  the header carries the kid. Exactly the claims TokenVerifier requires: what mint makes, verify takes.
- The scope and the client address are checked with the verifier's own parsers before signing, so a
  token that no box would accept is never issued. Bad arguments raise BadRequest naming the value.
"""

from __future__ import annotations

import math
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oca.errors import BadRequest
from oca.tokens.claims import CDNIV, compile_container, network_text, parse_network
from oca.tokens.keys import PrivateKey, key_alg


def mint(private_key: PrivateKey, kid: str, *, issuer: str, scope: str, lifetime: float, now: float,
         client_ip: str | None = None) -> str:
    """A signed JWS compact token granting `scope` from `now` for `lifetime` seconds."""
    alg = key_alg(private_key)
    if not isinstance(private_key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise BadRequest("minting needs a private key, not a public one")
    if not isinstance(kid, str) or not kid:
        raise BadRequest("a token needs a non-empty kid")
    if not isinstance(issuer, str) or not issuer:
        raise BadRequest("a token needs a non-empty issuer")
    if not (math.isfinite(lifetime) and lifetime >= 1):
        raise BadRequest(f"token lifetime must be at least 1 s, got {lifetime!r}")
    try:
        compile_container(scope)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    not_before = math.floor(now)
    claims: dict[str, Any] = {
        "iss": issuer, "nbf": not_before, "exp": math.floor(now + lifetime), "cdniv": CDNIV, "cdniuc": scope,
    }
    if client_ip is not None:
        try:
            network = parse_network(client_ip)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        claims["cdniip"] = network_text(network)
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid})
