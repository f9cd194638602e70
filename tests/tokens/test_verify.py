"""Every way a token can be wrong, each to its own reason (in the manner of Apache Traffic Server's url_sig tests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from oca.tokens import REASONS, TokenRejected, hash_scope, title_scope
from tests.tokens.helpers import (
    CLIENT,
    EC_KEY,
    ED_KEY,
    ED_OTHER,
    ISSUER,
    NOW,
    PATH,
    claims,
    ed_public_raw,
    flip,
    forge,
    hmac_token,
    public_pem,
    sign,
    verifier,
)

_b64 = "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkLTEifQ"  # {"alg":"EdDSA","kid":"ed-1"}

# (case id, token factory, path, client address, reason)
REJECTED: list[tuple[str, Callable[[], str | None], str, str, str]] = [
    ("no token", lambda: None, PATH, CLIENT, "missing"),
    # malformed: not a JWS compact token at all
    ("empty /t/ segment", lambda: "", PATH, CLIENT, "malformed"),
    ("garbage", lambda: "hello", PATH, CLIENT, "malformed"),
    ("two segments", lambda: _b64 + ".eyJ9", PATH, CLIENT, "malformed"),
    ("bad base64", lambda: "!!!.@@@.###", PATH, CLIENT, "malformed"),
    ("base64 of non-JSON header", lambda: "bm90IGpzb24." + sign().split(".", 1)[1], PATH, CLIENT, "malformed"),
    ("header is a JSON list", lambda: "WzFd." + sign().split(".", 1)[1], PATH, CLIENT, "malformed"),
    ("non-ASCII", lambda: "é.é.é", PATH, CLIENT, "malformed"),
    ("lone surrogate", lambda: "\ud800.a.b", PATH, CLIENT, "malformed"),
    ("far too long", lambda: sign() + "A" * 5000, PATH, CLIENT, "malformed"),
    ("signed payload not JSON", lambda: sign(b"not json"), PATH, CLIENT, "malformed"),
    ("signed payload a JSON list", lambda: sign([1, 2]), PATH, CLIENT, "malformed"),
    ("signed payload with NaN", lambda: sign(b'{"exp": NaN}'), PATH, CLIENT, "malformed"),
    ("no kid in the header", lambda: sign(kid=None), PATH, CLIENT, "malformed"),
    ("kid not a string", lambda: forge({"alg": "EdDSA", "kid": 7}, claims(), b"x" * 64), PATH, CLIENT, "malformed"),
    ("unknown crit header", lambda: sign(header={"crit": ["exp"]}), PATH, CLIENT, "malformed"),
    # the signature
    ("flipped byte in the signature", lambda: flip(sign(), 2), PATH, CLIENT, "bad-signature"),
    ("flipped byte in the payload", lambda: flip(sign(), 1), PATH, CLIENT, "bad-signature"),
    ("flipped byte in the ES256 signature", lambda: flip(sign(key=EC_KEY, kid="ec-1"), 2), PATH, CLIENT,
     "bad-signature"),
    ("signature cut short", lambda: sign()[:-22], PATH, CLIENT, "bad-signature"),
    ("signed by another key with our kid", lambda: sign(key=ED_OTHER), PATH, CLIENT, "bad-signature"),
    ("empty signature", lambda: forge({"alg": "EdDSA", "kid": "ed-1"}, claims()), PATH, CLIENT, "bad-signature"),
    ("unknown kid", lambda: sign(key=ED_OTHER, kid="ed-9"), PATH, CLIENT, "unknown-kid"),
    # algorithms
    ("alg none", lambda: forge({"alg": "none", "kid": "ed-1"}, claims()), PATH, CLIENT, "bad-alg"),
    ("alg None spelled", lambda: forge({"alg": "None", "kid": "ed-1"}, claims()), PATH, CLIENT, "bad-alg"),
    ("no alg", lambda: forge({"kid": "ed-1"}, claims(), b"x" * 64), PATH, CLIENT, "bad-alg"),
    ("HS256 keyed with the public key PEM", lambda: hmac_token(public_pem(ED_KEY)), PATH, CLIENT, "bad-alg"),
    ("HS256 keyed with the raw public key", lambda: hmac_token(ed_public_raw()), PATH, CLIENT, "bad-alg"),
    ("HS256 keyed with the EC public PEM", lambda: hmac_token(public_pem(EC_KEY), kid="ec-1"), PATH, CLIENT,
     "bad-alg"),
    ("HS512", lambda: hmac_token(b"secret", alg="HS512"), PATH, CLIENT, "bad-alg"),
    ("RS256", lambda: forge({"alg": "RS256", "kid": "ed-1"}, claims(), b"x" * 256), PATH, CLIENT, "bad-alg"),
    ("ES384", lambda: forge({"alg": "ES384", "kid": "ec-1"}, claims(), b"x" * 96), PATH, CLIENT, "bad-alg"),
    ("ES256 header on the Ed25519 kid", lambda: sign(key=EC_KEY, kid="ed-1"), PATH, CLIENT, "bad-alg"),
    ("EdDSA header on the P-256 kid", lambda: sign(key=ED_KEY, kid="ec-1"), PATH, CLIENT, "bad-alg"),
    ("alg is a list", lambda: forge({"alg": ["EdDSA"], "kid": "ed-1"}, claims(), b"x" * 64), PATH, CLIENT,
     "bad-alg"),
    # time (leeway 30 s)
    ("expired", lambda: sign(claims(exp=int(NOW) - 31)), PATH, CLIENT, "expired"),
    ("expired exactly at exp + leeway", lambda: sign(claims(exp=int(NOW) - 30)), PATH, CLIENT, "expired"),
    ("nbf in the future", lambda: sign(claims(nbf=int(NOW) + 31)), PATH, CLIENT, "not-yet-valid"),
    # claims
    ("cdniv 2", lambda: sign(claims(cdniv=2)), PATH, CLIENT, "bad-version"),
    ("cdniv '1'", lambda: sign(claims(cdniv="1")), PATH, CLIENT, "bad-version"),
    ("cdniv 1.0", lambda: sign(claims(cdniv=1.0)), PATH, CLIENT, "bad-version"),
    ("cdniv true", lambda: sign(claims(cdniv=True)), PATH, CLIENT, "bad-version"),
    ("wrong issuer", lambda: sign(claims(iss="someone-else")), PATH, CLIENT, "bad-issuer"),
    ("no iss", lambda: sign(claims(iss=...)), PATH, CLIENT, "missing-claim"),
    ("no exp", lambda: sign(claims(exp=...)), PATH, CLIENT, "missing-claim"),
    ("no nbf", lambda: sign(claims(nbf=...)), PATH, CLIENT, "missing-claim"),
    ("no cdniv", lambda: sign(claims(cdniv=...)), PATH, CLIENT, "missing-claim"),
    ("no cdniuc", lambda: sign(claims(cdniuc=...)), PATH, CLIENT, "missing-claim"),
    ("no claims at all", lambda: sign({}), PATH, CLIENT, "missing-claim"),
    ("iss not a string", lambda: sign(claims(iss=5)), PATH, CLIENT, "malformed"),
    ("exp a string", lambda: sign(claims(exp="tomorrow")), PATH, CLIENT, "malformed"),
    ("nbf a boolean", lambda: sign(claims(nbf=True)), PATH, CLIENT, "malformed"),
    ("exp beyond float", lambda: sign(claims(exp=10**400)), PATH, CLIENT, "malformed"),
    ("cdniuc not a string", lambda: sign(claims(cdniuc=5)), PATH, CLIENT, "malformed"),
    ("cdniuc regex does not compile", lambda: sign(claims(cdniuc="regex:^/titles/(")), PATH, CLIENT, "malformed"),
    ("cdniuc unknown container", lambda: sign(claims(cdniuc="prefix:/titles/")), PATH, CLIENT, "malformed"),
    ("cdniuc bare pattern", lambda: sign(claims(cdniuc="^/titles/")), PATH, CLIENT, "malformed"),
    ("cdniuc hash not a digest", lambda: sign(claims(cdniuc="hash:abc")), PATH, CLIENT, "malformed"),
    ("cdniip not an address", lambda: sign(claims(cdniip="nope")), PATH, CLIENT, "malformed"),
    ("cdniip bad prefix", lambda: sign(claims(cdniip="10.0.0.0/33")), PATH, CLIENT, "malformed"),
    ("cdniip a number", lambda: sign(claims(cdniip=167772160)), PATH, CLIENT, "malformed"),
    ("aud present", lambda: sign(claims(aud="some-cdn")), PATH, CLIENT, "unsupported"),
    ("cdnicrit names an unknown claim", lambda: sign(claims(cdnicrit=["cdnistt"])), PATH, CLIENT, "unsupported"),
    ("cdnicrit not a list", lambda: sign(claims(cdnicrit="exp")), PATH, CLIENT, "malformed"),
    # scope: the title's directory and nothing else
    ("another title", lambda: sign(), "/titles/81239482/720p/seg00001.m4s", CLIENT, "out-of-scope"),
    ("title id sharing a prefix", lambda: sign(), "/titles/812394810/720p/seg00001.m4s", CLIENT, "out-of-scope"),
    ("title directory itself", lambda: sign(), "/titles/81239481", CLIENT, "out-of-scope"),
    ("path merely containing the scope", lambda: sign(), "/evil/titles/81239481/720p/a.m4s", CLIENT, "out-of-scope"),
    ("dot-dot out of the title", lambda: sign(), "/titles/81239481/../81239482/a.m4s", CLIENT, "out-of-scope"),
    ("dot segment", lambda: sign(), "/titles/81239481/./a.m4s", CLIENT, "out-of-scope"),
    ("empty segment", lambda: sign(), "/titles/81239481//a.m4s", CLIENT, "out-of-scope"),
    ("percent escape", lambda: sign(), "/titles/81239481/%2e%2e/81239482/a.m4s", CLIENT, "out-of-scope"),
    ("backslash", lambda: sign(), "/titles/81239481/..\\81239482/a.m4s", CLIENT, "out-of-scope"),
    ("empty path", lambda: sign(), "", CLIENT, "out-of-scope"),
    ("path without leading slash", lambda: sign(), PATH[1:], CLIENT, "out-of-scope"),
    ("unanchored regex still anchors", lambda: sign(claims(cdniuc="regex:/titles/1/")), "/x/titles/1/a.m4s", CLIENT,
     "out-of-scope"),
    ("top-level alternation anchors", lambda: sign(claims(cdniuc="regex:^/titles/1/|/titles/2/")),
     "/x/titles/2/a.m4s", CLIENT, "out-of-scope"),
    ("hash scope, other file", lambda: sign(claims(cdniuc=hash_scope(PATH))), PATH + "x", CLIENT, "out-of-scope"),
    # client address
    ("IPv4, other address", lambda: sign(claims(cdniip="192.0.2.7")), PATH, "192.0.2.8", "wrong-ip"),
    ("IPv4 /24, outside", lambda: sign(claims(cdniip="192.0.2.0/24")), PATH, "192.0.3.1", "wrong-ip"),
    ("IPv4 /8, outside", lambda: sign(claims(cdniip="10.0.0.0/8")), PATH, "11.0.0.1", "wrong-ip"),
    ("IPv6, other address", lambda: sign(claims(cdniip="2001:db8::1")), PATH, "2001:db8::2", "wrong-ip"),
    ("IPv6 /32, outside", lambda: sign(claims(cdniip="2001:db8::/32")), PATH, "2001:db9::1", "wrong-ip"),
    ("IPv4 token, IPv6 client", lambda: sign(claims(cdniip="192.0.2.7")), PATH, "2001:db8::7", "wrong-ip"),
    ("IPv6 token, IPv4 client", lambda: sign(claims(cdniip="2001:db8::/32")), PATH, "192.0.2.7", "wrong-ip"),
    ("client address garbage", lambda: sign(claims(cdniip="192.0.2.7")), PATH, "not-an-ip", "wrong-ip"),
    ("no client address", lambda: sign(claims(cdniip="192.0.2.7")), PATH, "", "wrong-ip"),
]

ACCEPTED: list[tuple[str, Callable[[], str], str, str]] = [
    ("EdDSA", lambda: sign(), PATH, CLIENT),
    ("ES256", lambda: sign(key=EC_KEY, kid="ec-1"), PATH, CLIENT),
    ("playlist in a rendition", lambda: sign(), f"/titles/{'81239481'}/720p/index.m3u8", CLIENT),
    ("expired but inside the leeway", lambda: sign(claims(exp=int(NOW) - 29)), PATH, CLIENT),
    ("nbf in the future inside the leeway", lambda: sign(claims(nbf=int(NOW) + 29)), PATH, CLIENT),
    ("fractional NumericDates", lambda: sign(claims(nbf=NOW - 0.5, exp=NOW + 0.5)), PATH, CLIENT),
    ("hash scope, that file", lambda: sign(claims(cdniuc=hash_scope(PATH))), PATH, CLIENT),
    ("regex with an end anchor", lambda: sign(claims(cdniuc="regex:^/titles/81239481/720p/[^/]+\\.m4s$")), PATH,
     CLIENT),
    ("IPv4 address", lambda: sign(claims(cdniip="192.0.2.7")), PATH, "192.0.2.7"),
    ("IPv4 /8", lambda: sign(claims(cdniip="10.0.0.0/8")), PATH, "10.200.1.1"),
    ("IPv4 prefix with host bits", lambda: sign(claims(cdniip="10.1.2.3/8")), PATH, "10.9.9.9"),
    ("IPv4-mapped IPv6 client", lambda: sign(claims(cdniip="10.0.0.0/8")), PATH, "::ffff:10.1.2.3"),
    ("IPv6 address", lambda: sign(claims(cdniip="2001:db8::1")), PATH, "2001:db8::1"),
    ("IPv6 address, long form", lambda: sign(claims(cdniip="2001:db8::1")), PATH, "2001:0db8:0:0:0:0:0:1"),
    ("IPv6 /32", lambda: sign(claims(cdniip="2001:db8::/32")), PATH, "2001:db8:ffff::1"),
    ("unknown claims are ignored", lambda: sign(claims(jti="abc", iat=int(NOW), sub="session-1")), PATH, CLIENT),
    ("cdnicrit naming enforced claims", lambda: sign(claims(cdnicrit=["exp", "cdniuc"])), PATH, CLIENT),
]


def test_the_reason_table_covers_every_reason() -> None:
    assert {case[-1] for case in REJECTED} == set(REASONS)


@pytest.mark.parametrize("make, path, client, reason", [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_rejected(make: Callable[[], str | None], path: str, client: str, reason: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        verifier().verify(make(), path, client)
    assert caught.value.reason == reason, caught.value.detail
    assert caught.value.status == 403
    assert caught.value.detail


@pytest.mark.parametrize("make, path, client", [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_accepted(make: Callable[[], str], path: str, client: str) -> None:
    verified = verifier().verify(make(), path, client)
    assert verified.issuer == ISSUER
    assert verified.kid in ("ed-1", "ec-1")


def test_verified_token_carries_the_claims() -> None:
    token = sign(claims(cdniip="10.0.0.0/8"), key=EC_KEY, kid="ec-1")
    verified = verifier().verify(token, PATH, "10.1.1.1")
    assert (verified.kid, verified.alg, verified.scope, verified.client_ip) == (
        "ec-1", "ES256", title_scope("81239481"), "10.0.0.0/8")
    assert (verified.not_before, verified.expires) == (NOW, NOW + 3600)
    assert verified.claims["cdniv"] == 1


def test_single_address_cdniip_is_shown_bare() -> None:
    cases = [("192.0.2.7/32", "192.0.2.7"), ("2001:db8::1/128", "2001:db8::1"), ("10.1.0.0/16", "10.1.0.0/16")]
    for cdniip, shown in cases:
        client = shown.split("/")[0]
        assert verifier().verify(sign(claims(cdniip=cdniip)), PATH, client).client_ip == shown


def test_any_issuer_when_none_are_configured() -> None:
    assert verifier(issuers=None).verify(sign(claims(iss="anyone")), PATH, CLIENT).issuer == "anyone"


def test_no_leeway_means_exact_times() -> None:
    with pytest.raises(TokenRejected, match="expired"):
        verifier(leeway=0).verify(sign(claims(exp=int(NOW))), PATH, CLIENT)
    verifier(leeway=0).verify(sign(claims(nbf=int(NOW))), PATH, CLIENT)


def test_detail_never_echoes_the_token() -> None:
    token = flip(sign(), 2)
    with pytest.raises(TokenRejected) as caught:
        verifier().verify(token, PATH, CLIENT)
    assert token.split(".")[2] not in str(caught.value)


def test_p384_key_cannot_pose_as_es256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(TokenRejected) as caught:
        verifier().verify(sign(key=p384, kid="ec-1", alg="ES384"), PATH, CLIENT)
    assert caught.value.reason == "bad-alg"


def test_title_scope_escapes_the_title_id() -> None:
    assert title_scope("81239481") == "regex:^/titles/81239481/"
    token = sign(claims(cdniuc=title_scope("a.b")))
    verifier().verify(token, "/titles/a.b/x.m4s", CLIENT)
    with pytest.raises(TokenRejected, match="out-of-scope"):
        verifier().verify(token, "/titles/aXb/x.m4s", CLIENT)

