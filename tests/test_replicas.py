"""Control-plane replicas as clients see them (oca.replicas): the order they are tried in, and the blocking
operator client trying the next one when a replica cannot answer (real sockets, no mocks)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from oca.replicas import Replicas
from oca.wire.control_client import ControlClient, ControlError
from tests.upstream.origin import closed_port


def test_the_replica_that_answered_last_is_asked_first_then_the_others_in_order() -> None:
    replicas = Replicas(["http://a/", "http://b", "http://c"])
    assert list(replicas) == ["http://a", "http://b", "http://c"]
    replicas.answered("http://c/")
    assert list(replicas) == ["http://c", "http://a", "http://b"]
    assert Replicas.split(" http://a , http://b,") == ("http://a", "http://b")
    with pytest.raises(ValueError):
        Replicas([])


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = json.dumps({"boxes": [], "served_by": self.server.server_address[1]}  # type: ignore[index]
                          if self.status == 200 else {"error": "state store unreachable"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> tuple[http.server.HTTPServer, str]:
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def replicas() -> Iterator[tuple[str, str, str]]:
    up, up_url = _serve(200)
    busy, busy_url = _serve(503)
    yield up_url, busy_url, f"http://127.0.0.1:{closed_port()}"
    up.shutdown()
    busy.shutdown()


def test_the_operator_client_skips_replicas_that_cannot_answer(replicas: tuple[str, str, str]) -> None:
    up, busy, dead = replicas
    client = ControlClient(f"{dead},{busy},{up}", None, timeout=5)
    assert client.fleet()["served_by"] == int(up.rsplit(":", 1)[1])
    assert client.base_url == up  # the next request goes straight to it
    with pytest.raises(ControlError) as caught:
        ControlClient([dead, busy], None, timeout=5).fleet()
    assert caught.value.status == 503 and "state store unreachable" in str(caught.value)
    with pytest.raises(ControlError, match="must start with http"):
        ControlClient("http://a,ftp://b", None)


class _Log(http.server.BaseHTTPRequestHandler):
    """A control plane's invalidation log with one entry (what a box pulls)."""

    def do_GET(self) -> None:
        entry = {"seq": 1, "scope": "title", "value": "77", "soft": False, "reason": "test", "operator": "t",
                 "time": 0.0}
        body = json.dumps({"invalidations": [entry], "last_seq": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_box_pulls_invalidations_from_the_next_replica_when_one_is_down(box_factory: Any) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dead = f"http://127.0.0.1:{closed_port()}"
        box = box_factory(control={"url": [dead, f"http://127.0.0.1:{server.server_address[1]}"],
                                   "poll_interval": "200ms"})
        deadline = time.monotonic() + 10
        while box.admin("/status")["invalidation_seq"] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert box.admin("/status")["invalidation_seq"] == 1
        assert "Traceback" not in box.log()
    finally:
        server.shutdown()
