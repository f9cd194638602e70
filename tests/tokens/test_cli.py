"""`oca token keygen|mint|verify`: in-process with CliRunner, and as the real command for exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import jwt
from click.testing import CliRunner

from oca.cli.token import token
from tests.conftest import OCA

TITLE_PATH = "/titles/81239481/720p/seg00001.m4s"


def _run(*args: str) -> Any:
    result = CliRunner().invoke(token, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _oca(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCA, "token", *args], capture_output=True, text=True, timeout=60)


def test_keygen_writes_a_private_pem_and_a_jwks(tmp_path: Any) -> None:
    out = os.path.join(str(tmp_path), "keys")
    _run("keygen", "--out-dir", out, "--kid", "k1")
    _run("keygen", "--out-dir", out, "--kid", "k2", "--alg", "ES256")
    assert os.stat(os.path.join(out, "k1.pem")).st_mode & 0o777 == 0o600
    with open(os.path.join(out, "jwks.json")) as file:
        keys = json.load(file)["keys"]
    assert [(k["kid"], k["alg"]) for k in keys] == [("k1", "EdDSA"), ("k2", "ES256")]
    assert all("d" not in k for k in keys)


def test_keygen_without_kid_names_one(tmp_path: Any) -> None:
    out = str(tmp_path)
    result = _run("keygen", "--out-dir", out)
    kid = result.output.split()[1]
    assert kid.startswith("eddsa-") and os.path.exists(os.path.join(out, f"{kid}.pem"))


def test_mint_then_verify_with_rotated_keys(tmp_path: Any) -> None:
    out = str(tmp_path)
    _run("keygen", "--out-dir", out, "--kid", "old")
    _run("keygen", "--out-dir", out, "--kid", "new", "--alg", "ES256")
    jwks = os.path.join(out, "jwks.json")
    for kid in ("old", "new"):
        minted = _run("mint", "--key", os.path.join(out, f"{kid}.pem"), "--title", "81239481", "--ttl", "10m",
                      "--ip", "192.0.2.0/24").output.strip()
        assert jwt.get_unverified_header(minted)["kid"] == kid
        shown = json.loads(_run("verify", "--jwks", jwks, "--ip", "192.0.2.9", minted, TITLE_PATH).output)
        assert shown["kid"] == kid and shown["client_ip"] == "192.0.2.0/24"
        assert shown["claims"]["exp"] - shown["claims"]["nbf"] == 600
        assert shown["scope"] == "regex:^/titles/81239481/"


def test_mint_with_a_bare_scope_pattern_and_explicit_kid(tmp_path: Any) -> None:
    out = str(tmp_path)
    _run("keygen", "--out-dir", out, "--kid", "k1")
    minted = _run("mint", "--key", os.path.join(out, "k1.pem"), "--kid", "k1", "--scope", "^/titles/",
                  "--issuer", "lab").output.strip()
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert claims["cdniuc"] == "regex:^/titles/" and claims["iss"] == "lab"


def test_real_command_exit_codes(tmp_path: Any) -> None:
    out = str(tmp_path)
    assert _oca("keygen", "--out-dir", out, "--kid", "k1").returncode == 0
    minted = _oca("mint", "--key", os.path.join(out, "k1.pem"), "--title", "81239481")
    assert minted.returncode == 0, minted.stderr
    jwks = os.path.join(out, "jwks.json")
    rejected = _oca("verify", "--jwks", jwks, minted.stdout.strip(), "/titles/81239482/a.m4s")
    assert rejected.returncode == 1
    assert rejected.stderr.startswith("oca: token rejected: out-of-scope:")
    wrong_issuer = _oca("verify", "--jwks", jwks, "--issuer", "other", minted.stdout.strip(), TITLE_PATH)
    assert wrong_issuer.returncode == 1 and "bad-issuer" in wrong_issuer.stderr
    again = _oca("keygen", "--out-dir", out, "--kid", "k1")
    assert again.returncode == 1 and "already has a key 'k1'" in again.stderr


def test_real_command_config_errors(tmp_path: Any) -> None:
    out = str(tmp_path)
    assert _oca("keygen", "--out-dir", out, "--kid", "k1").returncode == 0
    private_jwks = os.path.join(out, "private.json")
    with open(private_jwks, "w") as file:
        json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA", "kid": "p"}]}, file)
    refused = _oca("verify", "--jwks", private_jwks, "a.b.c", TITLE_PATH)
    assert refused.returncode == 2
    assert refused.stderr == f"oca: {private_jwks}: keys[0].d: key 'p' is a private key: a box's JWKS holds " \
                             "public keys only (a box must not be able to mint tokens)\n"
    not_a_key = _oca("mint", "--key", private_jwks, "--title", "1")
    assert not_a_key.returncode == 2 and "not a PEM private key" in not_a_key.stderr
    bad_ttl = _oca("mint", "--key", os.path.join(out, "k1.pem"), "--title", "1", "--ttl", "soon")
    assert bad_ttl.returncode == 2 and "--ttl" in bad_ttl.stderr
