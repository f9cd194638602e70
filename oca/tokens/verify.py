"""TokenVerifier: is this request's token good for this path, from this client, now? Yes, or TokenRejected (403).

Rules kept here:
- JOSE is PyJWT's (`PyJWS`, registered with ES256 and EdDSA only). Before any key is touched the header
  must name alg ES256 or EdDSA ("none", every HMAC, RSA... -> "bad-alg"), a kid the KeySet holds
  ("unknown-kid"), and an alg that fits that key's type ("bad-alg"); the signature is then checked with
  that one key and that one alg, so the public key can never be used as an HMAC secret.
- The payload is parsed here (NaN/Infinity refused) and the claims are checked by oca.tokens.claims;
  `exp`/`nbf` are compared with the injected clock, never PyJWT's: valid while nbf - leeway <= now <
  exp + leeway (RFC 7519 §4.1.4-5).
- Positive cache: a token whose signature and claims verified is remembered (token text -> entry) until
  it expires, so a session costs one signature check per process. The cached path is one dict lookup,
  one clock read, one chained float compare, one precompiled-regex match of the path, one scan for an
  abnormal path, and, only when cdniip is set, a set lookup of the client address (parsed and tested
  against the prefix the first time a token meets it). An expired token is refused on the cached path
  too (replay after expiry) and dropped. Bounded: when full, the oldest entry is evicted (FIFO). Only
  tokens with a valid signature get in, so an attacker cannot fill it.
- Negative cache: a token refused *after* its signature was checked (bad signature, bad claims,
  expired) is remembered for `negative_ttl` seconds in a small bounded map, so a player retrying a bad
  token costs one dict lookup. Failures found before the signature check (malformed, bad-alg,
  unknown-kid) are cheap and not cached. A flood of *distinct* well-formed forged tokens costs one
  signature check each (tens of µs); limiting that is the connection layer's job.
- The path is the content path in normal form: `/` + the key from oca.keys (no `/t/<jwt>` segment, no
  query). As defence in depth a path holding `//`, `/.`, `%` or `\\` is refused as out of scope, so a
  caller that forgot to normalise cannot be walked out of a title with `..`.
- One verifier per process (or event loop); it keeps no lock. `update_keys` swaps the KeySet on a JWKS
  reload and keeps cached entries whose kid still maps to the same key.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from jwt.api_jws import PyJWS
from jwt.exceptions import InvalidAlgorithmError, InvalidSignatureError, PyJWTError

from oca.tokens.claims import IPNetwork, Matcher, check_claims, client_in, network_text
from oca.tokens.errors import Reason, TokenRejected
from oca.tokens.keys import ALGS, Alg, KeySet, VerifyingKey

MAX_TOKEN_CHARS = 4096
NEGATIVE_CACHE_SIZE = 4096
_ACCEPTED_IPS = 8

_JWS = PyJWS(algorithms=list(ALGS))
_ABNORMAL_PATH = re.compile(r"//|/\.|%|\\").search


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    kid: str
    alg: Alg
    issuer: str
    not_before: float
    expires: float
    scope: str  # the cdniuc value
    client_ip: str | None  # the cdniip network, or None when the token is not bound to a client
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Entry:
    earliest: float  # nbf - leeway
    latest: float  # exp + leeway
    matches: Matcher
    network: IPNetwork | None
    # Client address texts already found inside `network` (a few; seeded with a /32's or /128's address):
    # a set lookup accepts the common case, a player with one address, without parsing it again.
    accepted_ips: set[str]
    key: VerifyingKey
    token: VerifiedToken


class TokenVerifier:
    def __init__(self, keys: KeySet, *, issuers: frozenset[str] | None = None, leeway: float = 30.0,
                 clock: Callable[[], float] = time.time, cache_size: int = 100_000,
                 negative_ttl: float = 10.0) -> None:
        if leeway < 0 or cache_size < 0 or negative_ttl < 0:
            raise ValueError("leeway, cache_size and negative_ttl must not be negative")
        self._keys = keys
        self._issuers = issuers
        self._leeway = float(leeway)
        self._clock = clock
        self._cache_size = cache_size
        self._negative_ttl = negative_ttl if cache_size else 0.0
        self._cache: dict[str, _Entry] = {}
        self._rejected: dict[str, tuple[float, Reason, str]] = {}
        self.signature_checks = 0  # how many times a signature was verified (the cache's benefit, in tests)

    @property
    def keys(self) -> KeySet:
        return self._keys

    def __len__(self) -> int:
        return len(self._cache)

    def verify(self, token: str | None, path: str, client_ip: str) -> VerifiedToken:
        """The verified token when it authorises `path` for `client_ip` now; TokenRejected otherwise."""
        if token is None:
            raise TokenRejected("missing", "no token in the request path")
        now = self._clock()
        entry = self._cache.get(token)
        if entry is None:
            entry = self._verify_slowly(token, now)
        if not entry.earliest <= now < entry.latest:
            self._reject_time(token, entry, now)
        if not entry.matches(path) or _ABNORMAL_PATH(path) is not None:
            raise TokenRejected("out-of-scope", f"path {path[:120]!r} is outside the token's scope "
                                f"{entry.token.scope[:120]!r}")
        if entry.network is not None and client_ip not in entry.accepted_ips:
            self._check_client(entry, entry.network, client_ip)
        return entry.token

    def update_keys(self, keys: KeySet) -> None:
        """Use a reloaded KeySet; cached tokens whose key is gone or changed are verified afresh."""
        self._keys = keys
        self._cache = {token: e for token, e in self._cache.items() if keys.get(e.key.kid) == e.key}
        self._rejected.clear()

    @staticmethod
    def _check_client(entry: _Entry, network: IPNetwork, client_ip: str) -> None:
        if not client_in(network, client_ip):
            raise TokenRejected("wrong-ip", f"client {client_ip[:64]!r} is outside the token's cdniip {network}")
        if len(entry.accepted_ips) < _ACCEPTED_IPS:
            entry.accepted_ips.add(client_ip)

    def _reject_time(self, token: str, entry: _Entry, now: float) -> NoReturn:
        claims = entry.token
        if now >= entry.latest:
            self._cache.pop(token, None)
            detail = f"token expired at {_when(claims.expires)} ({now - claims.expires:.0f} s ago)"
            self._remember(token, "expired", detail, now)
            raise TokenRejected("expired", detail)
        raise TokenRejected("not-yet-valid", f"token is valid from {_when(claims.not_before)} "
                            f"({claims.not_before - now:.0f} s from now)")

    def _verify_slowly(self, token: str, now: float) -> _Entry:
        rejected = self._rejected.get(token)
        if rejected is not None:
            until, reason, detail = rejected
            if now < until:
                raise TokenRejected(reason, detail)
            del self._rejected[token]
        key, alg = self._select_key(token)
        try:
            entry = self._check_signed(token, key, alg)
        except TokenRejected as exc:
            self._remember(token, exc.reason, exc.detail, now)
            raise
        if now < entry.latest and self._cache_size:
            cache = self._cache
            if len(cache) >= self._cache_size:
                _drop_oldest(cache)
            cache[token] = entry
        return entry

    def _select_key(self, token: str) -> tuple[VerifyingKey, Alg]:
        """The key and alg for a token, from its (not yet trusted) header: everything before the crypto."""
        if not token:
            raise TokenRejected("malformed", "empty token segment")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected("malformed", f"token is {len(token)} characters; at most {MAX_TOKEN_CHARS}")
        if not token.isascii():
            raise TokenRejected("malformed", "token has characters outside ASCII")
        try:
            header = _JWS.get_unverified_header(token)
        except PyJWTError as exc:
            raise TokenRejected("malformed", f"not a JWS compact token: {exc}") from None
        alg = header.get("alg")
        if alg not in ALGS:
            raise TokenRejected("bad-alg", f"alg {_show(alg)} is not accepted; tokens are ES256 or EdDSA")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("malformed", "token header has no kid")
        key = self._keys.get(kid)
        if key is None:
            # the detail reaches the player (X-OCA-Reason): name their kid, never our JWKS file's path
            raise TokenRejected("unknown-kid", f"no key {kid[:64]!r} in this box's JWKS")
        if key.alg != alg:
            raise TokenRejected("bad-alg", f"token says alg {alg} but key {kid[:64]!r} is a {key.alg} key")
        return key, key.alg

    def _check_signed(self, token: str, key: VerifyingKey, alg: Alg) -> _Entry:
        self.signature_checks += 1
        try:
            decoded = _JWS.decode_complete(token, key.key, algorithms=[alg])
        except InvalidSignatureError:
            raise TokenRejected("bad-signature", f"signature does not verify with key {key.kid[:64]!r}") from None
        except InvalidAlgorithmError as exc:
            raise TokenRejected("bad-alg", str(exc)) from None
        except PyJWTError as exc:
            raise TokenRejected("malformed", f"not a JWS compact token: {exc}") from None
        try:
            payload = json.loads(decoded["payload"], parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise TokenRejected("malformed", f"payload is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise TokenRejected("malformed", "payload is not a JSON object")
        claims = check_claims(payload, self._issuers)
        network = claims.network
        accepted = {str(network.network_address)} if network is not None and network.num_addresses == 1 else set()
        verified = VerifiedToken(key.kid, alg, claims.issuer, claims.not_before, claims.expires, claims.scope,
                                 None if network is None else network_text(network), MappingProxyType(payload))
        return _Entry(claims.not_before - self._leeway, claims.expires + self._leeway, claims.matches, network,
                      accepted, key, verified)

    def _remember(self, token: str, reason: Reason, detail: str, now: float) -> None:
        if not self._negative_ttl or not token:
            return
        if len(self._rejected) >= NEGATIVE_CACHE_SIZE:
            _drop_oldest(self._rejected)
        self._rejected[token] = (now + self._negative_ttl, reason, detail)


def _drop_oldest(cache: dict[str, Any]) -> None:
    with contextlib.suppress(StopIteration, RuntimeError, KeyError):  # emptied or changed under us
        del cache[next(iter(cache))]


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _show(value: object) -> str:
    return repr(value)[:40]


def _when(seconds: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f}"
