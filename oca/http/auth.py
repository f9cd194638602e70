"""The Bearer credentials of an `Authorization` header (RFC 6750 §2.1 over RFC 9110 §11): pure, no I/O.

Rules kept here:
- The auth scheme is case-insensitive (RFC 9110 §11.1): `Bearer`, `bearer` and `BEARER` are one scheme.
- `credentials = auth-scheme [ 1*SP token68 ]` (§11.4): one or more spaces separate scheme and token; a
  header with another scheme, or no token, carries no bearer token.
- Callers compare the token they get in constant time (hmac.compare_digest): this only finds it.
"""

from __future__ import annotations


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, whatever the scheme's case; None when
    the header is absent, names another scheme or carries no token."""
    if authorization is None:
        return None
    scheme, sep, rest = authorization.partition(" ")
    if not sep or scheme.lower() != "bearer":
        return None
    token = rest.lstrip(" ")
    return token or None
