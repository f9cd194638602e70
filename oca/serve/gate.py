"""Who may have content: a player with a valid token, a peer box with the fleet credential, or anyone for
unsigned prefixes (and everyone when tokens are not required).

Rules kept here:
- The token is the first path segment, `/t/<jwt>/titles/...`; it is cut off the request-target before the
  key is derived, so the key (and the cache) never sees it.
- Verification is RFC 9246 via oca.tokens (cached per token until it expires, so a session costs one
  signature check per worker); a refusal is 403 with the reason in X-OCA-Reason and the access log.
- A peer box presents `Authorization: Bearer <fleet peer credential>` (the scheme in any case, RFC 9110
  §11.1: oca.http.auth), compared in constant time.
"""

from __future__ import annotations

import hmac

from oca.config import TokensConfig
from oca.http.auth import bearer_token
from oca.tokens import TokenRejected, TokenVerifier, load_jwks

_PREFIX = b"/t/"


class Gate:
    def __init__(self, config: TokensConfig, peer_credential: str | None) -> None:
        self.required = config.required
        self.leeway = config.clock_skew
        self.unsigned = tuple(config.unsigned_prefixes)
        self.verifier: TokenVerifier | None = None
        if config.required:
            assert config.jwks_file is not None  # the config loader insists
            self.verifier = TokenVerifier(load_jwks(config.jwks_file), leeway=config.clock_skew,
                                          issuers=frozenset(config.issuers) or None)
        self._peer = peer_credential.encode() if peer_credential else None

    @staticmethod
    def split(target: bytes, strict: bool) -> tuple[str | None, bytes]:
        """(token or None, the target without it). Strict (tokens required): any `/t/` segment is a token
        ("" when nothing usable follows). Otherwise only a JWT-shaped one (`a.b.c` followed by a path) is
        cut off, so a box without tokens still serves a key such as `t/logo.png` as it is."""
        if not target.startswith(_PREFIX):
            return None, target
        end = target.find(b"/", 3)
        if end < 0:
            return ("", b"/") if strict else (None, target)
        segment = target[3:end]
        if not strict and segment.count(b".") != 2:
            return None, target
        return segment.decode("latin-1"), target[end:]

    def check(self, token: str | None, key: str, client: str, authorization: str | None) -> tuple[str | None, float]:
        """(None, until) if the request may have `key`, else (the reason for a 403, 0). `until` is how long the
        same request-target may be let through without asking again (0: ask every time): a token's expiry
        plus the clock skew, unless the token is bound to a client address."""
        verifier = self.verifier
        if verifier is None or (self.unsigned and key.startswith(self.unsigned)):
            return None, 0.0
        if self._peer is not None and authorization is not None:
            presented = bearer_token(authorization)  # RFC 9110 §11.1: the scheme in any case
            if presented is not None and hmac.compare_digest(presented.encode("latin-1", "replace"), self._peer):
                return None, 0.0
        try:
            verified = verifier.verify(token, "/" + key, client)
        except TokenRejected as exc:
            return f"token {exc.reason}: {exc.detail}", 0.0
        if verified.client_ip is not None:
            return None, 0.0
        return None, verified.expires + self.leeway
