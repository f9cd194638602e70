"""HAProxy in front of the lab's control-plane replicas (`oca lab up --control-replicas N`, N >= 2): its config,
written by a pure function, and what its stats socket says about each replica.

Rules kept here:
- One frontend on the lab's control URL (what players, the page and operators use), one backend with every
  replica, round robin. A replica is checked with `GET /healthz` (the control plane's cheap, open route)
  every CHECK_INTERVAL: down after FALL failed checks, up after RISE good ones. So a dead replica stops
  getting new requests within FALL x CHECK_INTERVAL (1 s); meanwhile a request that cannot connect to it
  is retried (`retries`) on another replica (`option redispatch 1`: every retry may change server), and an
  idempotent request (GET, HEAD) whose replica died mid-answer is retried too (`retry-on conn-failure
  empty-response`); a POST is not replayed (`http-request disable-l7-retry`).
- Timeouts: connect 1 s (loopback; a refused connection is instant anyway), client and server 310 s: the
  control plane answers long polls (`wait=`) after up to 300 s.
- HAProxy runs in the foreground (`-db`), as the lab's child; it logs to stdout (its log file): each
  replica going DOWN or UP, and only the requests that went wrong (`option dontlog-normal`: a lab under
  load would otherwise write a line per request). The lab starts it as an unprivileged user (never root).
- The stats socket (`show stat`) answers with one CSV row per server; `server_states` reads it.
"""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Sequence
from dataclasses import dataclass

CHECK_INTERVAL_MS = 500
FALL = 2
RISE = 2
BACKEND = "control"


@dataclass(frozen=True, slots=True)
class Replica:
    name: str  # r1, r2, ...
    host: str
    port: int


def haproxy_config(listen: tuple[str, int], replicas: Sequence[Replica], stats_socket: str) -> str:
    """The whole haproxy.cfg: `listen` in front of `replicas`, the admin socket at `stats_socket`."""
    host, port = listen
    servers = "".join(f"    server {r.name} {r.host}:{r.port} check\n" for r in replicas)
    return f"""# Written by oca lab up (oca/lab/haproxy.py): the lab's control URL in front of its control replicas.
global
    log stdout format raw local0 info
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 310s
    timeout server 310s
    timeout http-request 10s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend control_url
    bind {host}:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET
    default-server inter {CHECK_INTERVAL_MS}ms fall {FALL} rise {RISE}
{servers}"""


def stat_rows(text: str) -> list[dict[str, str]]:
    """`show stat` CSV as rows (pxname, svname, status, req_tot, ...)."""
    return [dict(row) for row in csv.DictReader(io.StringIO(text.lstrip("# ")))]


def parse_stat(text: str) -> dict[str, str]:
    """Server name -> status (UP, DOWN, "UP 1/2", MAINT...) from `show stat` CSV, the backend's servers only."""
    return {row["svname"]: row.get("status", "") for row in stat_rows(text)
            if row.get("pxname") == BACKEND and row.get("svname") not in ("FRONTEND", "BACKEND", None)}


def show_stat(stats_socket: str, timeout: float = 2.0) -> str:
    """`show stat` on HAProxy's stats socket. OSError when HAProxy does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(stats_socket)
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def server_states(stats_socket: str, timeout: float = 2.0) -> dict[str, str]:
    """Replica name -> status, from the stats socket. OSError when HAProxy does not answer."""
    return parse_stat(show_stat(stats_socket, timeout))


def frontend_requests(stats_socket: str) -> int:
    """HTTP requests the control URL has received since HAProxy started."""
    for row in stat_rows(show_stat(stats_socket)):
        if row.get("svname") == "FRONTEND" and row.get("pxname") == "control_url":
            return int(row.get("req_tot") or 0)
    return 0
