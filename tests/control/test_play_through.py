"""End to end: a player asks the control plane for a title, follows the signed URLs to a box that requires
tokens, and the box fills the playlists and segments from the origin. Real processes, real sockets."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import m3u8
import pytest

from oca.tokens import generate_private_key, public_jwk, write_private_key
from tests.conftest import Box, free_port
from tests.control.fixtures import box_entry, package_files, write_control_config, write_package
from tests.control.test_live import Control
from tests.upstream.origin import Origin

TITLE = "42"


@pytest.fixture
def played(tmp_path: Any, box_factory: Callable[..., Box]) -> Iterator[tuple[Control, Box, Origin]]:
    key = generate_private_key("EdDSA")
    write_private_key(str(tmp_path / "control.pem"), key)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key, "c1")]}))
    with Origin() as origin:
        for rel, data in package_files().items():
            origin.add(f"titles/{TITLE}/{rel}", data)
        box = box_factory(box={"id": "b1", "site": "lab"},
                          tokens={"required": True, "jwks_file": str(tmp_path / "jwks.json"),
                                  "issuers": ["oca-control"]},
                          fetch={"sources": [{"name": "origin", "url": origin.url, "kind": "origin"}]})
        port = free_port()
        (tmp_path / "operator.token").write_text("op\n")
        path = write_control_config(str(tmp_path), [box_entry("b1", box.port, box.admin_port)],
                                    listen=f"127.0.0.1:{port}", origin_url=origin.url,
                                    tokens={"signing_key_file": str(tmp_path / "control.pem"), "kid": "c1"},
                                    auth={"operator_token_file": "operator.token"})
        control = Control(path, port, str(tmp_path))
        control.start()
        try:
            env_cli = control.cli("catalog", "ingest", write_package(str(tmp_path / "package")), TITLE,
                                  "--control", control.url, "--token-file", str(tmp_path / "operator.token"))
            assert env_cli.returncode == 0, env_cli.stderr
            yield control, box, origin
        finally:
            control.kill()


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_player_plays_through_the_control_plane_and_a_box_that_requires_tokens(
        played: tuple[Control, Box, Origin]) -> None:
    control, box, origin = played
    status, text = fetch(f"{control.url}/v1/play/{TITLE}/master.m3u8")
    assert status == 200
    master = m3u8.loads(text.decode())
    ours = [p for p in master.playlists if p.uri.startswith(box.url)]
    assert ours, text.decode()
    variant_url = ours[0].uri
    assert "/t/" in variant_url
    status, body = fetch(variant_url)  # the box fills the media playlist from the origin
    assert status == 200, body
    media = m3u8.loads(body.decode())
    segment_url = urllib.parse.urljoin(variant_url, media.segments[0].uri)  # relative: inherits the token
    assert "/t/" in segment_url
    status, body = fetch(segment_url)
    rel = urllib.parse.urlsplit(segment_url).path.split(f"/titles/{TITLE}/", 1)[1]
    assert (status, body) == (200, package_files()[rel])
    assert origin.count(f"titles/{TITLE}/{rel}") == 1
    # the same token is no key to another title, and a token the control plane did not sign is refused
    token = variant_url.split("/t/", 1)[1].split("/", 1)[0]
    assert fetch(f"{box.url}/t/{token}/titles/43/360p/index.m3u8")[0] == 403
    assert fetch(segment_url.replace(token, token[:-4] + "AAAA"))[0] == 403
    assert fetch(f"{box.url}/titles/{TITLE}/{rel}")[0] == 403
