"""Key files: a box's JWKS (public keys only) and the signer's PEM; every bad file is one ConfigError line."""

from __future__ import annotations

import json
import os
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from oca.errors import BadRequest, ConfigError
from oca.tokens import (
    KeySet,
    PrivateKey,
    generate_private_key,
    load_jwks,
    load_private_key,
    mint,
    private_key_pem,
    public_jwk,
    title_scope,
    write_private_key,
)
from oca.tokens.keys import key_alg
from tests.tokens.helpers import CLIENT, EC_KEY, ED_KEY, NOW, PATH, verifier

ED_JWK = public_jwk(ED_KEY, "ed-1")
EC_JWK = public_jwk(EC_KEY, "ec-1")


def _write(tmp_path: Any, name: str, data: str | bytes) -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    return path


def _jwks(*keys: dict[str, Any]) -> str:
    return json.dumps({"keys": list(keys)})


def test_jwks_with_both_key_types_loads(tmp_path: Any) -> None:
    keys = load_jwks(_write(tmp_path, "jwks.json", _jwks(ED_JWK, EC_JWK)))
    assert sorted(k.kid for k in keys) == ["ec-1", "ed-1"]
    assert keys.get("ed-1") is not None and keys.get("ed-1").alg == "EdDSA"  # type: ignore[union-attr]
    assert keys.get("ec-1").alg == "ES256"  # type: ignore[union-attr]
    assert "ed-1" in keys and "nobody" not in keys and len(keys) == 2


def test_public_jwk_has_no_private_member() -> None:
    pairs: list[tuple[PrivateKey, str]] = [(ED_KEY, "OKP"), (EC_KEY, "EC")]
    for key, kty in pairs:
        jwk = public_jwk(key, "k")
        assert "d" not in jwk and jwk["kty"] == kty and jwk["use"] == "sig" and jwk["kid"] == "k"
        assert public_jwk(key.public_key(), "k") == jwk


@pytest.mark.parametrize("text, where, problem", [
    ("not json", "", "not valid JSON"),
    ("[]", "", "JWKS object"),
    ('{"keys": {}}', "", "JWKS object"),
    ('{"keys": []}', "keys", "no keys"),
    ('{"keys": [5]}', "keys[0]", "JWK object"),
    (_jwks({**ED_JWK, "kid": ""}), "keys[0].kid", "kid"),
    (_jwks({k: v for k, v in ED_JWK.items() if k != "kid"}), "keys[0].kid", "kid"),
    (_jwks(ED_JWK, {**EC_JWK, "kid": "ed-1"}), "keys[1].kid", "duplicate kid 'ed-1'"),
    (_jwks({**ED_JWK, "d": "AAAA"}), "keys[0].d", "private key"),
    (_jwks(EC_JWK, {**EC_JWK, "kid": "x", "d": "AAAA"}), "keys[1].d", "must not be able to mint"),
    (_jwks({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}), "keys[0]", "kty='oct'"),
    (_jwks({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"}), "keys[0]", "kty='RSA'"),
    (_jwks({**EC_JWK, "crv": "P-384"}), "keys[0]", "crv='P-384'"),
    (_jwks({**ED_JWK, "crv": "Ed448"}), "keys[0]", "crv='Ed448'"),
    (_jwks({**ED_JWK, "alg": "ES256"}), "keys[0].alg", "not 'ES256'"),
    (_jwks({**ED_JWK, "alg": "HS256"}), "keys[0].alg", "not 'HS256'"),
    (_jwks({**ED_JWK, "use": "enc"}), "keys[0].use", "use='enc'"),
    (_jwks({**ED_JWK, "x": "!!!"}), "keys[0]", "not a valid OKP public key"),
    (_jwks({**EC_JWK, "y": EC_JWK["x"]}), "keys[0]", "not a valid EC public key"),  # a point off the curve
])
def test_bad_jwks_is_one_config_error(tmp_path: Any, text: str, where: str, problem: str) -> None:
    path = _write(tmp_path, "jwks.json", text)
    with pytest.raises(ConfigError) as caught:
        load_jwks(path)
    assert caught.value.file == path and caught.value.key == where
    assert problem in caught.value.problem
    assert "\n" not in str(caught.value) and str(caught.value).startswith(path)


def test_missing_jwks_file(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cannot read the JWKS file"):
        load_jwks(os.path.join(str(tmp_path), "nope.json"))


def test_private_key_pem_round_trip(tmp_path: Any) -> None:
    for alg in ("EdDSA", "ES256"):
        key = generate_private_key(alg)
        path = os.path.join(str(tmp_path), f"{alg}.pem")
        write_private_key(path, key)
        assert os.stat(path).st_mode & 0o777 == 0o600
        loaded = load_private_key(path)
        assert key_alg(loaded) == alg
        assert public_jwk(loaded, "k") == public_jwk(key, "k")
        with pytest.raises(FileExistsError):
            write_private_key(path, key)


def _pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.parametrize("data, problem", [
    (b"hello", "not a PEM private key"),
    (b"", "not a PEM private key"),
    (ED_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
     "public key"),
    (ED_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.BestAvailableEncryption(b"pw")), "encrypted"),
    (_pem(rsa.generate_private_key(65537, 2048)), "RSA key cannot sign tokens"),
    (_pem(ec.generate_private_key(ec.SECP384R1())), "EC secp384r1 key cannot sign tokens"),
    (_pem(ed448.Ed448PrivateKey.generate()), "Ed448 key cannot sign tokens"),
])
def test_bad_private_key_file(tmp_path: Any, data: bytes, problem: str) -> None:
    path = _write(tmp_path, "key.pem", data)
    with pytest.raises(ConfigError) as caught:
        load_private_key(path)
    assert caught.value.file == path and problem in caught.value.problem


def test_missing_private_key_file(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cannot read the key file"):
        load_private_key(os.path.join(str(tmp_path), "nope.pem"))


def test_keyset_of_key_objects() -> None:
    keys = KeySet.of({"a": ED_KEY, "b": EC_KEY.public_key()})
    assert keys.get("a").alg == "EdDSA" and keys.get("b").alg == "ES256"  # type: ignore[union-attr]


# mint: the alg follows from the key; what mint makes, verify takes

@pytest.mark.parametrize("key, kid, alg", [(ED_KEY, "ed-1", "EdDSA"), (EC_KEY, "ec-1", "ES256")])
def test_mint_chooses_the_alg_from_the_key(key: Any, kid: str, alg: str) -> None:
    token = mint(key, kid, issuer="oca-control", scope=title_scope("81239481"), lifetime=600, now=NOW + 0.7)
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": kid, "typ": "JWT"}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {"iss": "oca-control", "nbf": int(NOW), "exp": int(NOW) + 600, "cdniv": 1,
                       "cdniuc": "regex:^/titles/81239481/"}
    assert verifier().verify(token, PATH, CLIENT).alg == alg


@pytest.mark.parametrize("client_ip, claim", [("192.0.2.7", "192.0.2.7"), ("192.0.2.7/32", "192.0.2.7"),
                                              ("10.1.2.3/8", "10.0.0.0/8"), ("2001:db8::/32", "2001:db8::/32")])
def test_mint_binds_a_client_address(client_ip: str, claim: str) -> None:
    token = mint(ED_KEY, "ed-1", issuer="oca-control", scope=title_scope("81239481"), lifetime=600, now=NOW,
                 client_ip=client_ip)
    assert jwt.decode(token, options={"verify_signature": False})["cdniip"] == claim


@pytest.mark.parametrize("change, problem", [
    ({"scope": "regex:(("}, "does not compile"),
    ({"scope": "/titles/1/"}, "neither"),
    ({"client_ip": "somewhere"}, "not an IP address"),
    ({"lifetime": 0}, "at least 1 s"),
    ({"lifetime": float("inf")}, "at least 1 s"),
    ({"kid": ""}, "kid"),
    ({"issuer": ""}, "issuer"),
    ({"private_key": EC_KEY.public_key()}, "private key"),
    ({"private_key": ec.generate_private_key(ec.SECP384R1())}, "secp384r1"),
])
def test_mint_refuses_what_no_box_would_accept(change: dict[str, Any], problem: str) -> None:
    args: dict[str, Any] = {"private_key": ED_KEY, "kid": "ed-1", "issuer": "oca-control",
                            "scope": title_scope("1"), "lifetime": 600.0, "now": NOW, **change}
    with pytest.raises(BadRequest, match=problem):
        mint(**args)


def test_private_key_pem_is_pkcs8() -> None:
    assert private_key_pem(Ed25519PrivateKey.generate()).startswith(b"-----BEGIN PRIVATE KEY-----")
