"""Player-aware prefetch on a running box that requires tokens (issue 18): a CMCD `nor` hint fetches the next
object so the next request is a hit, and never an object the request's token does not cover."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from oca.tokens import public_jwk, title_scope
from tests.conftest import Box
from tests.tokens.helpers import ED_KEY, ISSUER, claims, sign
from tests.upstream.origin import Origin

TITLE = "81239481"


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        for i in range(1, 4):
            server.add(f"titles/{TITLE}/720p/seg{i}.m4s", size=50_000 + i)
        server.add("titles/55/720p/seg1.m4s", size=1000)
        yield server


@pytest.fixture
def box(box_factory: Callable[..., Box], origin: Origin, tmp_path: Any) -> Box:
    jwks = str(tmp_path / "jwks.json")
    with open(jwks, "w") as fh:
        json.dump({"keys": [public_jwk(ED_KEY, "ed-1")]}, fh)
    return box_factory(tokens={"required": True, "jwks_file": jwks, "issuers": [ISSUER]},
                       fetch={"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}]})


def _token() -> str:
    now = int(time.time())
    return sign(claims(nbf=now - 5, exp=now + 600, cdniuc=title_scope(TITLE)))


def _cmcd(**members: str) -> str:
    return "CMCD=" + urllib.parse.quote(",".join(f'{k}="{v}"' for k, v in members.items()), safe="")


def _metric(box: Box, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}" + (rf"\{{{re.escape(selector)}\}}" if selector else "") + r" (\S+)$"
    match = re.search(pattern, box.admin("/metrics"), re.M)
    return float(match.group(1)) if match else 0.0


def _held(box: Box, key: str) -> bool:
    try:
        box.admin(f"/cache/objects/{key}")
    except urllib.error.HTTPError:
        return False
    return True


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_hint_makes_the_next_request_a_hit_within_the_token_only(box: Box, origin: Origin) -> None:
    token = _token()
    base = f"/t/{token}/titles/{TITLE}/720p"
    status, headers, _ = box.get(f"{base}/seg1.m4s?{_cmcd(nor='seg2.m4s', sid='s1')}")
    assert status == 200 and "fwd=uri-miss" in headers["cache-status"]
    assert _eventually(lambda: _held(box, f"titles/{TITLE}/720p/seg2.m4s"))  # fetched with no client waiting
    # and the lookahead: seg2 follows seg1, so seg3 is fetched too, once seg2's fill is stored
    assert _eventually(lambda: _held(box, f"titles/{TITLE}/720p/seg3.m4s"))
    assert _eventually(lambda: _metric(box, "oca_player_prefetch_started_total") == 2)
    assert _metric(box, "oca_player_prefetch_guessed_total") == 1
    status, headers, _ = box.get(f"{base}/seg2.m4s?{_cmcd(sid='s1')}")
    assert status == 200 and headers["cache-status"].startswith("oca; hit"), headers
    assert _eventually(lambda: _metric(box, "oca_player_prefetch_used_total") == 1)

    # inside the token's path segment but outside its scope; and out of the token segment altogether
    for nor in ("../../55/720p/seg1.m4s", "../../../../../titles/55/720p/seg1.m4s"):
        assert box.get(f"{base}/seg2.m4s?{_cmcd(nor=urllib.parse.quote(nor, safe=''), sid='s1')}")[0] == 200
    assert _eventually(lambda: _metric(box, "oca_player_prefetch_dropped_total", reason="token") == 2)
    time.sleep(0.3)
    assert not any("/55/720p/seg1.m4s" in r.path for r in origin.requests)
    assert _metric(box, "oca_player_prefetch_started_total") == 2
    # a hint for what the box holds already starts nothing
    assert box.get(f"{base}/seg2.m4s?{_cmcd(nor='seg1.m4s', sid='s1')}")[0] == 200
    time.sleep(0.3)
    assert _metric(box, "oca_player_prefetch_started_total") == 2
    log = os.path.join(box.workdir, "access.log")

    def logged() -> list[dict[str, Any]]:  # the workers write the access log in batches
        with open(log, encoding="utf-8") as fh:
            return [e for e in map(json.loads, fh) if e["key"].endswith(f"{TITLE}/720p/seg1.m4s")]

    assert _eventually(lambda: bool(logged()))
    first = logged()[0]
    assert first["miss"] == "first" and first["cmcd"]["nor"] == "seg2.m4s"
