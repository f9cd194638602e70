"""Why a token was refused: one exception, one machine-readable reason, always HTTP 403.

The reason goes into the `X-OCA-Reason` header and the access log; the detail is for people and
names the value that was wrong (never the whole token, which is a bearer credential). Players read the
detail too, so it names only what came from the token or the request, never the box's own state (a file
path, such as the JWKS file's).
"""

from __future__ import annotations

from typing import Literal, get_args

from oca.errors import OcaError

Reason = Literal[
    "missing",        # no token in the request
    "malformed",      # not a JWS compact JWT, bad base64/JSON, bad claim types, bad cdniuc/cdniip value
    "bad-alg",        # alg none, HMAC, anything but ES256/EdDSA, or an alg that does not fit the kid's key
    "unknown-kid",    # no key with that kid in the box's JWKS
    "bad-signature",  # the signature does not verify with the kid's key
    "expired",        # now >= exp + leeway
    "not-yet-valid",  # now < nbf - leeway
    "bad-version",    # cdniv is not 1 (RFC 9246 claim set version)
    "bad-issuer",     # iss not among the issuers this box trusts
    "out-of-scope",   # the content path is not inside the cdniuc container (or is not in normal form)
    "wrong-ip",       # the client address is outside cdniip
    "missing-claim",  # iss, exp, nbf, cdniv or cdniuc absent
    "unsupported",    # a claim we must understand and do not (aud, cdnicrit naming an unknown claim)
]

REASONS: tuple[Reason, ...] = get_args(Reason)


class TokenRejected(OcaError):
    """The request's token does not authorise this path for this client: answer 403, never content."""

    status = 403
    exit_code = 1

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"token rejected: {reason}: {detail}")
