"""URI Signing tokens (RFC 9246, CDNI URI Signing): the one token format the control plane signs and boxes verify.

OCA's profile of RFC 9246 (each rule is kept in the module named):
- A token is a JWS compact JWT signed with ES256 (EC P-256) or EdDSA (Ed25519), with a `kid` header
  selecting the key. Boxes hold public keys only (a JWKS file, several kids at once for rotation);
  the control plane holds the private keys (PEM). HMAC and "none" are refused.       -> keys, verify
- Claims: `iss`, `nbf`, `exp`, `cdniv` = 1 and `cdniuc` are required; `cdniip` optional.  -> claims
- `cdniuc` is `regex:<Python re pattern>` (matched with re.match: anchored at the start of the path)
  or `hash:<base64url SHA-256 of the path>`. Deviation from RFC 9246, which matches the container
  against the full URI: we match it against the content path alone, the request path with the
  `/t/<jwt>` segment removed, e.g. `/titles/81239481/720p/seg00001.m4s`.              -> claims
- The token travels as the first path segment: `/t/<jwt>/titles/...` (RFC 9246 allows a
  path-style parameter; ours is a plain segment so relative playlist URIs inherit it). -> paths
- Every refusal is TokenRejected (403) with one machine-readable reason from REASONS.   -> errors
"""

from oca.tokens.claims import hash_scope, title_scope
from oca.tokens.errors import REASONS, Reason, TokenRejected
from oca.tokens.keys import (
    ALGS,
    Alg,
    KeySet,
    PrivateKey,
    PublicKey,
    VerifyingKey,
    generate_private_key,
    load_jwks,
    load_private_key,
    private_key_pem,
    public_jwk,
    write_private_key,
)
from oca.tokens.mint import mint
from oca.tokens.paths import split_token_path, token_path
from oca.tokens.verify import TokenVerifier, VerifiedToken

__all__ = [
    "ALGS",
    "REASONS",
    "Alg",
    "KeySet",
    "PrivateKey",
    "PublicKey",
    "Reason",
    "TokenRejected",
    "TokenVerifier",
    "VerifiedToken",
    "VerifyingKey",
    "generate_private_key",
    "hash_scope",
    "load_jwks",
    "load_private_key",
    "mint",
    "private_key_pem",
    "public_jwk",
    "split_token_path",
    "title_scope",
    "token_path",
    "write_private_key",
]
