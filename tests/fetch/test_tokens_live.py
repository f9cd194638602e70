"""Tokens on a running box: every refusal is a 403 with its own reason (header and access log); valid tokens,
peer boxes and unsigned prefixes get content. Real clock: tokens are minted around time.time()."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from oca.tokens import public_jwk, title_scope
from tests.conftest import Box
from tests.tokens.helpers import ED_KEY, ED_OTHER, ISSUER, claims, flip, forge, hmac_token, public_pem, sign

TITLE = "81239481"
KEY = f"titles/{TITLE}/720p/seg00001.m4s"
OTHER = "titles/55/720p/seg00001.m4s"
DATA = {KEY: b"a" * 5000, OTHER: b"b" * 5000, "public/logo.png": b"p" * 100}
PEER_SECRET = "peer-secret-123"


def now_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"nbf": now - 5, "exp": now + 600}
    base.update(changes)
    return claims(**base)


def good() -> str:
    return sign(now_claims())


@pytest.fixture(scope="module")
def box(tmp_path_factory: Any) -> Any:
    from tests.conftest import import_dir, kill_box, start_box, write_box_config, write_objects

    workdir = str(tmp_path_factory.mktemp("tokens"))
    jwks = os.path.join(workdir, "jwks.json")
    with open(jwks, "w") as fh:
        json.dump({"keys": [public_jwk(ED_KEY, "ed-1")]}, fh)
    peer = os.path.join(workdir, "peer.secret")
    with open(peer, "w") as fh:
        fh.write(PEER_SECRET + "\n")
    config = write_box_config(workdir, tokens={"required": True, "jwks_file": jwks, "issuers": [ISSUER],
                                               "unsigned_prefixes": ["public/"]},
                              fetch={"peer_credential_file": peer})
    write_objects(os.path.join(workdir, "content"), DATA)
    assert import_dir(config, os.path.join(workdir, "content")).returncode == 0
    started = start_box(config, workdir)
    yield started
    kill_box(started)


CASES: dict[str, tuple[Callable[[], str | None], str, str]] = {
    "missing": (lambda: None, f"/{KEY}", "missing"),
    "malformed": (lambda: "not.a.jwt", "", "malformed"),
    "two segments": (lambda: "eyJhbGciOiJFZERTQSJ9.e30", "", "malformed"),
    "bad signature": (lambda: flip(good(), 2), "", "bad-signature"),
    "unknown kid": (lambda: sign(now_claims(), kid="nobody"), "", "unknown-kid"),
    "other key": (lambda: sign(now_claims(), key=ED_OTHER), "", "bad-signature"),
    "expired": (lambda: sign(now_claims(nbf=int(time.time()) - 7200, exp=int(time.time()) - 3600)), "", "expired"),
    "not yet valid": (lambda: sign(now_claims(nbf=int(time.time()) + 3600, exp=int(time.time()) + 7200)), "",
                      "not-yet-valid"),
    "out of scope": (lambda: sign(now_claims(cdniuc=title_scope("55"))), "", "out-of-scope"),
    "prefix trick": (lambda: sign(now_claims(cdniuc=title_scope("8123948"))), "", "out-of-scope"),
    "wrong ip": (lambda: sign(now_claims(cdniip="203.0.113.9")), "", "wrong-ip"),
    "alg none": (lambda: forge({"alg": "none", "kid": "ed-1"}, now_claims()), "", "bad-alg"),
    "hs256 with the public key": (lambda: hmac_token(public_pem(ED_KEY)), "", "bad-alg"),
    "cdniv 2": (lambda: sign(now_claims(cdniv=2)), "", "bad-version"),
    "wrong issuer": (lambda: sign(now_claims(iss="mallory")), "", "bad-issuer"),
}


@pytest.mark.parametrize("name", CASES)
def test_every_bad_token_is_403_with_its_own_reason(box: Box, name: str) -> None:
    make, path, reason = CASES[name]
    token = make()
    target = path or f"/t/{token}/{KEY}"
    status, headers, body = box.get(target)
    assert status == 403, body
    assert headers["x-oca-reason"].startswith(f"token {reason}")
    for shown in (headers["x-oca-reason"], body.decode()):  # players never see a server file path
        assert box.workdir not in shown and "jwks.json" not in shown
    assert headers["cache-control"] == "no-store"
    assert b"a" * 100 not in body


def test_the_reason_is_in_the_access_log_and_the_token_is_not(box: Box) -> None:
    token = sign(now_claims(cdniuc=title_scope("55")))
    assert box.get(f"/t/{token}/{KEY}")[0] == 403
    time.sleep(1.5)
    with open(os.path.join(box.workdir, "access.log")) as fh:
        lines = [json.loads(line) for line in fh if "out-of-scope" in line]
    assert lines and lines[-1]["status"] == 403
    assert token not in json.dumps(lines[-1])


def test_a_valid_token_gets_the_object_and_relative_paths_inherit_it(box: Box) -> None:
    token = good()
    for _ in range(3):  # the second and third are verified from the cache
        status, _headers, body = box.get(f"/t/{token}/{KEY}")
        assert (status, body) == (200, DATA[KEY])
    assert box.get(f"/t/{token}/{OTHER}")[0] == 403  # the same token on another title


def test_a_replayed_token_is_refused_once_it_expires(box: Box) -> None:
    now = time.time()
    token = sign(now_claims(nbf=int(now) - 60, exp=int(now) - 27))  # within the 30 s skew for 2-3 s more
    assert box.get(f"/t/{token}/{KEY}")[0] == 200  # verified, and now cached
    time.sleep(max(0.0, int(now) + 3.2 - time.time()))
    status, headers, _ = box.get(f"/t/{token}/{KEY}")
    assert status == 403 and headers["x-oca-reason"].startswith("token expired")


def test_a_peer_box_uses_the_fleet_credential(box: Box) -> None:
    assert box.get(f"/{KEY}", {"Authorization": f"Bearer {PEER_SECRET}"})[0] == 200
    assert box.get(f"/{KEY}", {"Authorization": "Bearer guess"})[0] == 403
    for scheme in ("bearer", "BEARER"):  # RFC 9110 §11.1: the auth scheme is case-insensitive
        assert box.get(f"/{KEY}", {"Authorization": f"{scheme} {PEER_SECRET}"})[0] == 200


def test_unsigned_prefixes_need_no_token(box: Box) -> None:
    assert box.get("/public/logo.png")[0] == 200


def test_preflight_needs_no_token(box: Box) -> None:
    assert box.get(f"/{KEY}", method="OPTIONS")[0] == 204
