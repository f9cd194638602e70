"""The claim set of OCA's RFC 9246 profile: a verified JWT payload in, a checked `Claims` value out (pure).

Claims (RFC 9246 §2.1, RFC 7519 §4.1):
- `iss` string, `exp` and `nbf` NumericDates (finite JSON numbers): all required by our profile (our
  control plane always sets them, and a token without an end must not exist).
- `cdniv` (CDNI Claim Set Version) required, and exactly the integer 1: RFC 9246 lets a token omit
  it; our profile wants every token to state its version. Any other value -> "bad-version".
- `cdniuc` (CDNI URI Container) required. Two of RFC 9246's container forms:
  - `regex:<pattern>`, a Python `re` pattern (PCRE-like), matched with `re.match`: anchored at the
    start of the path, not at its end, so a scope is a prefix pattern (add `$` to pin one file). A
    leading `^` is conventional and harmless; a pattern without it still cannot match in mid-path.
  - `hash:<base64url SHA-256>`: the path must hash to exactly that digest (one object per token).
  Profile deviation: RFC 9246 matches the container against the whole request URI; we match it against
  the content path alone, with the `/t/<jwt>` segment, the scheme, the host and the query removed, e.g.
  `/titles/81239481/720p/seg00001.m4s`, so one token works on every box and pathway of a session.
- `cdniip` (Client IP) optional: one IPv4/IPv6 address or a CIDR prefix (host bits are ignored);
  IPv4-mapped IPv6 client addresses (`::ffff:a.b.c.d`) count as their IPv4 address.
- `aud` is refused ("unsupported"): RFC 7519 §4.1.3 says a recipient that is not named in it MUST
  reject, and a box has no audience name. `cdnicrit` naming a claim this module does not enforce is
  refused too (critical claims must be understood). Other claims (`iat`, `jti`, `sub`...) are ignored.
Regexes are compiled only after the signature has verified (they come from our own signer), so a
forged token cannot make a box compile a pathological pattern.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from oca.tokens.errors import TokenRejected

# What a path matcher returns: truthy when the path is inside the container.
Matcher = Callable[[str], object]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REQUIRED = ("iss", "exp", "nbf", "cdniv", "cdniuc")
# Claims whose meaning this module enforces: the only ones a cdnicrit list may name.
UNDERSTOOD = frozenset({"iss", "exp", "nbf", "iat", "jti", "sub", "cdniv", "cdniuc", "cdniip", "cdnicrit"})
CDNIV = 1
# 32 bytes in unpadded base64url: 43 characters, the last one carrying 2 bits (so one of AEIMQUYcgkosw048).
_SHA256_B64URL = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


@dataclass(frozen=True, slots=True)
class Claims:
    issuer: str
    not_before: float
    expires: float
    scope: str
    matches: Matcher
    network: IPNetwork | None


def title_scope(title_id: str) -> str:
    """The cdniuc value that scopes a token to one title's directory (and nothing that merely shares a prefix)."""
    return f"regex:^/titles/{re.escape(title_id)}/"


def compile_container(container: str) -> Matcher:
    """A path matcher for a cdniuc value; ValueError naming the problem when the container is not usable."""
    kind, sep, value = container.partition(":")
    if not sep or kind not in ("regex", "hash"):
        raise ValueError(f"cdniuc {container[:80]!r} is neither 'regex:<pattern>' nor 'hash:<sha-256>'")
    if kind == "regex":
        try:
            return re.compile(value).match
        except (re.error, RecursionError, OverflowError) as exc:
            raise ValueError(f"cdniuc regex {value[:80]!r} does not compile: {exc}") from None
    if _SHA256_B64URL.fullmatch(value) is None:
        raise ValueError(f"cdniuc hash {value[:80]!r} is not an unpadded base64url SHA-256 digest")
    digest = base64.urlsafe_b64decode(value + "=")
    return lambda path: hashlib.sha256(path.encode("utf-8", "surrogatepass")).digest() == digest


def hash_scope(path: str) -> str:
    """The `hash:` cdniuc value for exactly one content path."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).digest()
    return "hash:" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def parse_network(text: str) -> IPNetwork:
    """A cdniip value (an address or a CIDR prefix) as a network; ValueError when it is neither."""
    if not isinstance(text, str) or not text or text.strip() != text:
        raise ValueError(f"cdniip {text!r} is not an IP address or CIDR prefix")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"cdniip {text!r} is not an IP address or CIDR prefix") from None


def network_text(network: IPNetwork) -> str:
    """The canonical cdniip text: the bare address for a single host, else the CIDR prefix."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def client_in(network: IPNetwork, client_ip: str) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped in network
    return address in network


def check_claims(payload: Mapping[str, Any], issuers: frozenset[str] | None) -> Claims:
    """The profile's checks that do not depend on time or on the request; TokenRejected on the first failure."""
    missing = [name for name in REQUIRED if name not in payload]
    if missing:
        raise TokenRejected("missing-claim", f"token has no {', '.join(missing)} claim")
    cdniv = payload["cdniv"]
    if type(cdniv) is not int or cdniv != CDNIV:
        raise TokenRejected("bad-version", f"cdniv is {cdniv!r}; this box speaks version {CDNIV}")
    issuer = payload["iss"]
    if not isinstance(issuer, str):
        raise TokenRejected("malformed", f"iss is {type(issuer).__name__}, not a string")
    if issuers is not None and issuer not in issuers:
        raise TokenRejected("bad-issuer", f"issuer {issuer[:80]!r} is not trusted by this box")
    if "aud" in payload:
        raise TokenRejected("unsupported", "token has an aud claim; a box is not a named audience")
    crit = payload.get("cdnicrit")
    if crit is not None:
        if not isinstance(crit, list) or not all(isinstance(name, str) for name in crit):
            raise TokenRejected("malformed", "cdnicrit is not a list of claim names")
        unknown = sorted(set(crit) - UNDERSTOOD)
        if unknown:
            raise TokenRejected("unsupported", f"cdnicrit names claims this box does not enforce: {unknown[:5]}")
    not_before, expires = _numeric_date(payload, "nbf"), _numeric_date(payload, "exp")
    scope = payload["cdniuc"]
    if not isinstance(scope, str):
        raise TokenRejected("malformed", f"cdniuc is {type(scope).__name__}, not a string")
    try:
        matches = compile_container(scope)
    except ValueError as exc:
        raise TokenRejected("malformed", str(exc)) from None
    network = None
    if "cdniip" in payload:
        try:
            network = parse_network(payload["cdniip"])
        except ValueError as exc:
            raise TokenRejected("malformed", str(exc)) from None
    return Claims(issuer, not_before, expires, scope, matches, network)


def _numeric_date(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("malformed", f"{name} is {value!r:.40}, not a NumericDate")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TokenRejected("malformed", f"{name} is out of range")
    return seconds
