"""Every client command of `oca`, enumerated from the click group (a new command cannot be forgotten): against a
closed port and against a server that accepts and never answers (exit 3 within --timeout), against a server
that refuses the token (exit 2, naming where the token comes from), and with --json against a server that
answers (valid JSON on stdout)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
import pytest

from oca.cli import cli
from oca.errors import OK, UNREACHABLE, USAGE
from oca.wire.fill import BoxPlan, FillSettings, PlannedFile, PlanReply, Source
from tests.conftest import OCA, free_port, write_box_config
from tests.control.fixtures import write_package

# Commands that talk to no server (or run one): they are exempt from --timeout and from this table.
NOT_CLIENTS = {
    "serve", "sample", "control serve", "control migrate", "content make", "lab up", "token keygen", "token mint",
    "token verify", "firmware keygen", "firmware build", "check-config",
}

# Which server a command talks to ("control": --control URL; "box": the admin API of --config; "fill": the
# control plane, then the box) and its arguments. {file}, {dir}, {pkg} are filled in per test.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fleet status": ("control", ()),
    "fleet drain": ("control", ("b1",)),
    "fleet undrain": ("control", ("b1",)),
    "invalidate": ("control", ("--title", "42")),
    "steer explain": ("control", ("--ip", "127.0.1.10", "--title", "42")),
    "catalog ls": ("control", ()),
    "catalog ingest": ("control", ("{pkg}", "42")),
    "fill plan": ("control", ("b1",)),
    "fill run": ("fill", ("--dry-run",)),
    "firmware status": ("control", ()),
    "firmware roll": ("control", ("{file}", "--bake", "1s")),
    "firmware abort": ("control", ("r1",)),
    "firmware install": ("box", ("{file}",)),
    "cache import": ("box", ("{dir}",)),
    "cache ls": ("box", ()),
    "cache stat": ("box", ("titles/1/f0",)),
    "cache evict": ("box", ("titles/1/f0",)),
    "cache why": ("box", ("titles/1/f0",)),
    "top": ("box", ("--once", "--interval", "0.1")),
    "audit": ("control", ("--action", "drain", "--since", "1h")),
}

# Other ways of running a command that reach another server or another route: (command, kind, arguments).
VARIANTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("fleet status", "control", ("--titles",)),
    ("top", "control", ("--fleet", "--once", "--interval", "0.1")),  # the fleet, from the control plane
    ("firmware status", "box", ()),  # with --config: the box's own releases, from its admin API
    ("firmware status", "control", ("r1", "--watch")),
    ("invalidate", "control", ("--title", "42", "--wait", "--wait-timeout", "1")),  # waits --timeout + 1 s
]
CASES = [(name, kind, args) for name, (kind, args) in sorted(CLIENTS.items())] + VARIANTS
IDS = [" ".join((name, *args)) for name, _, args in CASES]

# --timeout defaults: 10 s, except where the answer itself takes long (documented in README).
LONG_TIMEOUTS = {"cache import": 600.0, "firmware install": 300.0, "fill run": 30.0, "catalog ingest": 60.0}

PLAN = BoxPlan("b1", "s", (), (), (PlannedFile("titles/1/f0", "1", 100, "d0", "hdd", False, True, ("origin",)),),
               (), {"origin": Source("origin", "http://o", "origin")})
ROLL = {"id": "r1", "version": "0.2.0", "state": "done", "steps_done": 1, "steps_total": 1, "operator": "t",
        "waves": [], "boxes": []}
OBJECT = {"key": "titles/1/f0", "size": 100, "tier": "hdd", "pinned": False}

# What the fake server answers, by method and path prefix (first match wins).
ANSWERS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/fleet/titles", {"boxes": [], "titles": []}),
    ("GET", "/v1/fleet", {"boxes": [], "last_invalidation_seq": 0}),
    ("POST", "/v1/fleet/", {"id": "b1", "drained": True}),
    ("POST", "/v1/invalidations", {"invalidation": {"seq": 1, "scope": "title", "value": "42"}, "created": True,
                                   "complete": True, "pending": [], "boxes": {}}),
    ("GET", "/v1/steering/explain", {"note": "client 127.0.1.10 in site-a", "status": 200,
                                     "pathways": [{"id": "a1", "data_url": "http://127.0.0.11:8080"}],
                                     "candidates": [{"box": "a1", "site": "site-a", "tier": "site",
                                                     "reason": "live, healthy"}]}),
    ("GET", "/v1/catalog", {"titles": [{"id": "42", "renditions": 4, "files": 22, "size": 3_250_586, "hls": True,
                                        "dash": True, "countries": []}]}),
    ("POST", "/v1/catalog/", {"id": "42"}),
    ("GET", "/v1/fill-plans/", PlanReply(PLAN, None, 0.0, FillSettings()).to_json()),
    ("GET", "/v1/rollouts/", ROLL),
    ("GET", "/v1/rollouts", {"rollouts": [ROLL]}),
    ("POST", "/v1/rollouts/r1/abort", ROLL),
    ("POST", "/v1/rollouts", ROLL),
    ("GET", "/v1/audit", {"entries": [{"id": 1, "time": 0.0, "operator": "t@h", "action": "drain", "subject": "b1",
                                       "detail": {}}]}),
    ("GET", "/status", {"box": "b1", "pid": 1}),
    ("GET", "/metrics", b"# TYPE oca_requests_total counter\noca_requests_total 1\n"),  # raw text, not JSON
    ("GET", "/inventory", {"objects": [OBJECT]}),
    ("GET", "/firmware", {"version": "0.2.0", "previous_version": "0.1.0", "releases": ["0.2.0", "0.1.0"],
                          "firmware": {"state": "idle"}}),
    ("POST", "/firmware", {"version": "0.2.0", "previous_version": "0.1.0", "releases": ["0.2.0", "0.1.0"],
                           "firmware": {"state": "ok"}}),
    ("POST", "/cache/import-batch", {"results": [OBJECT]}),  # the content dir holds one file
    ("POST", "/cache/import", OBJECT),
    ("GET", "/cache/objects/", OBJECT),
    ("DELETE", "/cache/objects/", {"evicted": 1}),
    ("GET", "/cache/why/", {"key": "titles/1/f0", "held": None, "stale": False, "sliced": None, "filling": False,
                            "would_miss_as": "first", "events": [], "remembered": "bounded"}),
]


def leaf_commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from leaf_commands(command, path + " ")
        else:
            yield path, command


COMMANDS = dict(leaf_commands(cli))


class _Handler(BaseHTTPRequestHandler):
    refuse = False

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body_read = self.rfile.read(length) if length else b""
        if self.refuse:
            status, answer = 401, {"error": "missing or wrong bearer token"}
        else:
            path = self.path.split("?")[0]
            found = [a for m, p, a in ANSWERS if m == self.command and path.startswith(p)]
            if path == "/v1/invalidations" and b"99999" in body_read:
                found = [{**found[0], "warning": "title '99999' is not in the catalog: the boxes may hold "
                                                 "nothing under it"}]
            status, answer = (200, found[0]) if found else (404, {"error": f"no {path}"})
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Servers:
    closed: str  # nothing listens
    refusing: str  # answers 401 to everything
    answering: str  # answers as the control plane and the box would


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    refusing_handler = type("Refusing", (_Handler,), {"refuse": True})
    http = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (refusing_handler, _Handler)]
    for server in http:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Servers(f"http://127.0.0.1:{free_port()}",
                  f"http://127.0.0.1:{http[0].server_port}", f"http://127.0.0.1:{http[1].server_port}")
    for server in http:
        server.shutdown()
        server.server_close()


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    seconds: float


def run(tmp_path: Any, name: str, target: str, servers: Servers, *extra: str, token: str = "right",
        box: str | None = None, args: tuple[str, ...] | None = None, kind: str | None = None) -> Run:
    """`oca <name>` against `target`, with --timeout 1; the box's config names `box` (default: target) as its
    admin API and holds its storage lock, so cache commands go to the admin API."""
    default_kind, default_args = CLIENTS[name]
    args = default_args if args is None else args
    kind = default_kind if kind is None else kind
    work = tmp_path / "-".join((*name.split(), *(a.strip("-").replace("/", "_") for a in args)))
    work.mkdir(exist_ok=True)
    (work / "token").write_text(token + "\n")
    (work / "bundle").write_bytes(b"not a bundle: the client only uploads it")
    (work / "content" / "titles" / "1").mkdir(parents=True, exist_ok=True)
    (work / "content" / "titles" / "1" / "f0").write_bytes(b"x" * 100)
    pkg = str(work / "pkg") if (work / "pkg").exists() else write_package(str(work / "pkg"))
    admin = (box if box is not None else target if kind == "box" else servers.answering).removeprefix("http://")
    config = write_box_config(str(work), box={"id": "b1", "site": "s"},
                              admin={"listen": admin, "token_file": str(work / "token")},
                              control={"url": target, "credential_file": str(work / "token")})
    filled = [a.format(file=work / "bundle", dir=work / "content", pkg=pkg) for a in args]
    argv = [OCA, *name.split(), *filled, "--timeout", "1", *extra]
    if kind in ("box", "fill"):
        argv += ["--config", config]
    if kind in ("control", "fill"):
        argv += ["--control", target]
    env = {**os.environ, "OCA_CONTROL_TOKEN": token, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    os.makedirs(work / "state", exist_ok=True)
    with open(work / "state" / "owner.lock", "a+") as lock:  # the box "runs": cache commands use its admin API
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        return Run(result, time.monotonic() - started)


def test_every_command_is_classified_and_has_timeout_and_json() -> None:
    assert set(COMMANDS) == NOT_CLIENTS | set(CLIENTS), "classify the new command in CLIENTS or NOT_CLIENTS"
    for name in CLIENTS:
        params = {p.name: p for p in COMMANDS[name].params}
        assert "timeout" in params and "as_json" in params, name
        assert params["timeout"].default == LONG_TIMEOUTS.get(name, 10.0), name


@pytest.mark.parametrize(("name", "kind", "args"), CASES, ids=IDS)
def test_unreachable_exits_3(tmp_path: Any, servers: Servers, name: str, kind: str, args: tuple[str, ...]) -> None:
    done = run(tmp_path, name, servers.closed, servers, args=args, kind=kind)
    assert done.result.returncode == UNREACHABLE, done.result.stderr
    lines = done.result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oca: ") and "cannot reach" in lines[0], lines


class _Silent:
    """Accepts connections and never answers, noting when the first one arrived: the command's wait is timed
    from its first connection, not from its start, so the interpreter's start-up on a loaded machine (seconds
    at load 20) is not charged to --timeout."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self.first: float | None = None
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:  # closed: the test is over
                return
            if self.first is None:
                self.first = time.monotonic()
            self._held.append(conn)

    def close(self) -> None:
        self._socket.close()
        for conn in self._held:
            conn.close()


@pytest.mark.parametrize(("name", "kind", "args"), CASES, ids=IDS)
def test_a_server_that_never_answers_exits_3_within_the_timeout(tmp_path: Any, servers: Servers, name: str,
                                                                kind: str, args: tuple[str, ...]) -> None:
    silent = _Silent()
    try:
        done = run(tmp_path, name, silent.url, servers, args=args, kind=kind)
        ended = time.monotonic()
    finally:
        silent.close()
    assert done.result.returncode == UNREACHABLE, done.result.stderr
    assert re.search(r"no answer within [12]s\b", done.result.stderr), done.result.stderr
    assert silent.first is not None, "the command never connected"
    # --timeout 1 (2 s for `invalidate --wait`, which waits --timeout + 1 s), then the exit itself
    waited = ended - silent.first
    assert waited < 4.5, f"{name} waited {waited:.1f}s after connecting, with --timeout 1"


@pytest.mark.parametrize(("name", "kind", "args"), CASES, ids=IDS)
def test_a_wrong_token_exits_2_naming_the_token_options(tmp_path: Any, servers: Servers, name: str, kind: str,
                                                        args: tuple[str, ...]) -> None:
    done = run(tmp_path, name, servers.refusing, servers, token="wrong", args=args, kind=kind)
    assert done.result.returncode == USAGE, done.result.stderr
    line = done.result.stderr.strip()
    assert "\n" not in line and "401" in line, line
    options = {"control": ("--token-file", "$OCA_CONTROL_TOKEN"), "box": ("admin.token_file",),
               "fill": ("control.credential_file",)}[kind]
    assert all(option in line for option in options), line


@pytest.mark.parametrize(("name", "kind", "args"), CASES, ids=IDS)
def test_json_is_valid_json(tmp_path: Any, servers: Servers, name: str, kind: str, args: tuple[str, ...]) -> None:
    done = run(tmp_path, name, servers.answering, servers, "--json", args=args, kind=kind)
    assert done.result.returncode == OK, done.result.stderr
    json.loads(done.result.stdout)


def test_the_box_unreachable_during_a_fill_exits_3(tmp_path: Any, servers: Servers) -> None:
    done = run(tmp_path, "fill run", servers.answering, servers, box=servers.closed)
    assert done.result.returncode == UNREACHABLE, done.result.stderr
    assert "cannot reach the box's admin API" in done.result.stderr


def test_invalidating_a_title_not_in_the_catalog_warns_and_exits_0(tmp_path: Any, servers: Servers) -> None:
    done = run(tmp_path, "invalidate", servers.answering, servers)
    assert done.result.returncode == OK and done.result.stderr == ""
    unknown = run(tmp_path, "invalidate", servers.answering, servers, args=("--title", "99999"))
    assert unknown.result.returncode == OK, unknown.result.stderr
    assert unknown.result.stderr == "oca: warning: title '99999' is not in the catalog: the boxes may hold nothing " \
                                    "under it\n"
