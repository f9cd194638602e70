"""CMSD (CTA-5006) on every answer of a real box over a real socket, read with an RFC 8941 parser (http-sfv).

- Every answer (hits, ranges, 304, HEAD, errors, the preflight, /healthz) carries one CMSD-Dynamic item
  naming the box, with its throughput estimate `etp` (kbps, from the connection's TCP_INFO); answers with an
  object carry CMSD-Static (`ot` where the name says it, `sf` for playlists, `st=v`). Both are exposed to
  scripts of other origins (Access-Control-Expose-Headers), as players need.
- A draining box is in duress: CMSD-Dynamic adds `du` and `mb`; undrained, they go (told by the master to
  its workers within a housekeeping tick).
- With `http.cmsd: false` no CMSD header is sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import http_sfv
import pytest

from tests.conftest import (
    Box,
    import_dir,
    kill_box,
    raw_exchange,
    start_box,
    status_of,
    write_box_config,
    write_objects,
)

OBJECTS = {
    "titles/1/master.m3u8": b"#EXTM3U\n",
    "titles/1/720p/init.mp4": os.urandom(800),
    "titles/1/720p/seg_00001.m4s": os.urandom(4000),
    "titles/1/audio/seg_00001.cmfa": os.urandom(1000),
}
SEG = "/titles/1/720p/seg_00001.m4s"


def _box(tmp_path_factory: Any, **http: Any) -> Iterator[Box]:
    workdir = str(tmp_path_factory.mktemp("cmsd"))
    config = write_box_config(workdir, box={"id": "a1", "site": "s"}, http=http)
    content = os.path.join(workdir, "content")
    write_objects(content, OBJECTS)
    assert import_dir(config, content).returncode == 0
    handle = start_box(config, workdir)
    yield handle
    kill_box(handle)


@pytest.fixture(scope="module")
def box(tmp_path_factory: Any) -> Iterator[Box]:
    yield from _box(tmp_path_factory, duress_max_bitrate="2Mbps")


def heads(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return {name.lower(): value for name, value in (line.split(": ", 1) for line in head.split("\r\n")[1:])}


def dynamic(headers: dict[str, str]) -> tuple[object, dict[str, object]]:
    field = http_sfv.List()
    field.parse(headers["cmsd-dynamic"].encode())
    assert len(field) == 1, field  # one hop: the box, the edge (the last item of the list)
    return field[0].value, dict(field[0].params)


def static(headers: dict[str, str]) -> dict[str, object]:
    field = http_sfv.Dictionary()
    field.parse(headers["cmsd-static"].encode())
    return {key: item.value for key, item in field.items()}


def get(box: Box, target: str, extra: bytes = b"", method: str = "GET") -> bytes:
    return raw_exchange(box.port, f"{method} {target} HTTP/1.1\r\nHost: x\r\n".encode() + extra
                        + b"Connection: close\r\n\r\n", timeout=3.0, reset_ok=True)


CASES: dict[str, tuple[str, bytes, str, int, str | None]] = {
    # name: (method, extra headers, target, status, expected `ot` or "" when CMSD-Static is absent)
    "hit": ("GET", b"", SEG, 200, None),
    "head": ("HEAD", b"", SEG, 200, None),
    "range": ("GET", b"Range: bytes=0-9\r\n", SEG, 206, None),
    "multi-range": ("GET", b"Range: bytes=0-9,100-109\r\n", SEG, 206, None),
    "not-modified": ("GET", b"If-None-Match: *\r\n", SEG, 304, None),
    "cmcd": ("GET", b"", SEG + "?CMCD=ot%3Dv%2Csid%3D%22s%22", 200, None),
    "playlist": ("GET", b"", "/titles/1/master.m3u8", 200, "m"),
    "init": ("GET", b"", "/titles/1/720p/init.mp4", 200, "i"),
    "audio": ("GET", b"", "/titles/1/audio/seg_00001.cmfa", 200, "a"),
    "preflight": ("OPTIONS", b"Access-Control-Request-Method: GET\r\n", SEG, 204, ""),
    "healthz": ("GET", b"", "/healthz", 200, ""),
    "not-found": ("GET", b"", "/titles/1/720p/missing.m4s", 404, ""),
    "bad-path": ("GET", b"", "/titles/../etc/passwd", 400, ""),
    "unsatisfiable": ("GET", b"Range: bytes=999999-\r\n", SEG, 416, ""),
}


@pytest.mark.parametrize("name", CASES)
def test_every_answer_carries_cmsd(box: Box, name: str) -> None:
    method, extra, target, status, ot = CASES[name]
    raw = get(box, target, extra, method)
    assert status_of(raw) == status, raw[:300]
    headers = heads(raw)
    server, params = dynamic(headers)
    assert server == "oca-a1" and isinstance(server, str) and not isinstance(server, http_sfv.Token)
    assert isinstance(params.get("etp"), int) and params["etp"] > 0, params  # loopback: TCP_INFO has a cwnd/RTT
    assert "du" not in params and "mb" not in params  # a healthy box
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert {"cmsd-static", "cmsd-dynamic"} <= exposed
    if ot == "":
        assert "cmsd-static" not in headers
        return
    fields = static(headers)
    assert fields.get("ot") == ot and fields["st"] == "v", fields
    assert all(isinstance(v, http_sfv.Token) for v in fields.values())


def test_a_draining_box_is_in_duress_until_undrained(box: Box) -> None:
    box.admin("/drain", method="POST")
    try:
        params = _wait_params(box, lambda p: "du" in p)
        assert params["du"] is True and params["mb"] == 2000, params  # duress_max_bitrate 2Mbps, in kbps
    finally:
        box.admin("/undrain", method="POST")
    params = _wait_params(box, lambda p: "du" not in p)
    assert "mb" not in params


def _wait_params(box: Box, wanted: Any, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        params = dynamic(heads(get(box, SEG)))[1]
        if wanted(params) or time.monotonic() > deadline:
            return params
        time.sleep(0.1)


def test_cmsd_can_be_turned_off(tmp_path_factory: Any) -> None:
    for off in _box(tmp_path_factory, cmsd=False):
        headers = heads(get(off, SEG))
        assert "cmsd-static" not in headers and "cmsd-dynamic" not in headers
