"""What the lab is made of, as values: its settings, sites, boxes, files, and the configs it writes. Pure
except `pick_port` and `default_node_modules`, which look at this machine.

Rules kept here:
- Two sites: site-a (clients 127.0.1.0/24) and site-b (clients 127.0.2.0/24, its parent is site-a, so a
  site-B player fails over to site A's boxes before the origin). The rest of 127/8 (a plain curl) is
  located in site A. Both sites are in NL, so every sample title plays from both.
- Boxes are split over the sites, site A first (a1, a2, b1 for three). By default each box has its own
  address, 127.0.0.11, 127.0.0.12, ..., with the data port 8080 and the admin port 8081 on it (Linux routes
  all of 127/8 to lo); `box_ports=0` puts every box on 127.0.0.1 with free ports (parallel tests).
- Lab clients cannot pick a loopback source address (browsers, ffmpeg), so they name their address in
  the CLIENT_HEADER header; the control plane reads its last entry (`steering.client_ip_header`).
- Every box requires tokens (the lab's JWKS), fills from its site's other boxes (peers), then the origin,
  and pulls invalidations from the control plane with the box credential.
- Health polls every 500 ms (down after 2 misses, up after 2 good polls) and a 2 s steering TTL make
  failover visible within a few seconds.
- With N >= 2 control-plane replicas, each gets the same config but `listen` (a free port on 127.0.0.1) and
  `replica.id` (r1, r2, ...: control/ReplicaConfig has the key; without it the id would be <host>:<port>),
  `replica.lease` REPLICA_LEASE,
  the lab's PostgreSQL as `state` with its password file, and the lab's control URL (HAProxy) as
  `public_url`, so the playlists it writes send players back to the load balancer. Boxes get the list of
  replica URLs as `control.url`.
- Every box takes firmware signed with the lab's key (`keys/firmware.pem`, public half beside it), and the
  control plane checks that signature when a roll-out is submitted, so a bundle the boxes would refuse
  never reaches one.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any

CLIENT_HEADER = "X-OCA-Lab-Client"
ISSUER = "oca-control"
KID = "lab-1"
FIRST_BOX_HOST = 11  # 127.0.0.11, 127.0.0.12, ...
HEALTH_INTERVAL = 0.5
# A release's own health gate on a box (start its workers, 3 good /healthz): a worker starts in about a
# second alone, several on a 2-core machine shared with four other boxes and the players
FIRMWARE_HEALTH_TIMEOUT = "20s"
# The roll-out leader's lease among the lab's replicas: short, so a killed leader's roll-out is resumed by
# another replica within a few seconds on the page (production keeps control.yaml's 10 s default)
REPLICA_LEASE = "3s"


@dataclass(frozen=True, slots=True)
class LabSite:
    id: str
    letter: str  # box ids are <letter><n>
    prefix: str  # client prefix located here
    client: str  # the address a lab client of this site names in CLIENT_HEADER
    latitude: float
    longitude: float
    country: str
    parent: str | None


SITES: tuple[LabSite, ...] = (
    LabSite("site-a", "a", "127.0.1.0/24", "127.0.1.10", 52.37, 4.90, "NL", None),
    LabSite("site-b", "b", "127.0.2.0/24", "127.0.2.10", 51.92, 4.48, "NL", "site-a"),
)


@dataclass(frozen=True)
class LabConfig:
    """How big the lab is and where it runs. Ports: 0 = any free port."""

    workdir: str = "run/lab"
    titles: int = 3
    boxes: int = 3
    duration: int = 30  # seconds per title
    synthetic: bool = False  # synthetic titles (no ffmpeg) even where ffmpeg is installed
    control_port: int = 8090  # on 127.0.0.1; a taken port falls back to a free one
    control_replicas: int = 1  # 1: one control plane on SQLite; N >= 2: N on the lab's PostgreSQL behind HAProxy
    box_ports: int = 8080  # data port on each box's own address, admin = +1; 0 = free ports on 127.0.0.1
    api_port: int = 0  # the lab API on 127.0.0.1
    workers: int = 1  # per box: three boxes share a 2-core machine with the player
    node_modules: str | None = None  # hls.js and dashjs (npm); None = ./node_modules, else the checkout's
    fill: bool = True  # pre-position every title on one box per site
    start_timeout: float = 60.0  # per child, and for the fill
    # seconds without a box's watchdog ping before the lab kills and restarts it (systemd's WatchdogSec;
    # oca.lab.watchdog); 0 = no watchdog
    watchdog: float = 2.0


@dataclass(frozen=True, slots=True)
class BoxPlan:
    id: str
    site: str
    host: str
    data_port: int
    admin_port: int

    @property
    def data_url(self) -> str:
        return f"http://{self.host}:{self.data_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """What differs between a lone control plane and one replica of several: the shared PostgreSQL state, the
    load balancer's URL players are given, and the replica's id (r1, r2, ...; leases and popularity)."""

    id: str
    state_url: str
    password_file: str
    public_url: str


@dataclass(frozen=True, slots=True)
class LabPaths:
    """Every file the lab writes, under its work directory."""

    workdir: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    @property
    def content(self) -> str:
        return self.path("content")

    @property
    def keys(self) -> str:
        return self.path("keys")

    @property
    def signing_key(self) -> str:
        return self.path("keys", "control.pem")

    @property
    def jwks(self) -> str:
        return self.path("keys", "jwks.json")

    @property
    def operator_token(self) -> str:
        return self.path("keys", "operator.token")

    @property
    def box_token(self) -> str:
        return self.path("keys", "box.token")

    @property
    def peer_token(self) -> str:
        return self.path("keys", "peer.token")

    @property
    def firmware_key(self) -> str:
        """The private key lab bundles are signed with (`oca firmware build --signing-key`)."""
        return self.path("keys", "firmware.pem")

    @property
    def firmware_public(self) -> str:
        """Its public half: the boxes' firmware.trusted_keys_file and the control plane's rollout one."""
        return self.path("keys", "firmware.pub.pem")

    @property
    def control(self) -> str:
        return self.path("control")

    @property
    def control_config(self) -> str:
        return self.path("control", "control.yaml")

    @property
    def coverage(self) -> str:
        return self.path("control", "coverage.csv")

    @property
    def control_log(self) -> str:
        return self.path("control", "control.log")

    def replica_config(self, index: int) -> str:
        """Replica `index`'s control.yaml (N >= 2 replicas: the same but for `listen`)."""
        return self.path("control", f"replica-{index}.yaml")

    def replica_log(self, index: int) -> str:
        return self.path("control", f"replica-{index}.log")

    @property
    def postgres(self) -> str:
        """The lab's own PostgreSQL cluster (N >= 2 replicas), reused by the next `oca lab up`."""
        return self.path("postgres")

    @property
    def haproxy_config(self) -> str:
        return self.path("control", "haproxy.cfg")

    @property
    def haproxy_log(self) -> str:
        return self.path("control", "haproxy.log")

    @property
    def haproxy_socket(self) -> str:
        return self.path("control", "haproxy.sock")

    @property
    def origin_log(self) -> str:
        return self.path("origin.log")

    def box_dir(self, box_id: str) -> str:
        return self.path("boxes", box_id)

    def box_config(self, box_id: str) -> str:
        return self.path("boxes", box_id, "oca.yaml")

    def box_log(self, box_id: str) -> str:
        return self.path("boxes", box_id, "box.log")


def box_sites(count: int) -> list[tuple[str, str]]:
    """(box id, site id) of `count` boxes: site A gets the larger half."""
    in_a = math.ceil(count / 2)
    return ([(f"a{i + 1}", "site-a") for i in range(in_a)] +
            [(f"b{i + 1}", "site-b") for i in range(count - in_a)])


def box_host(index: int, box_ports: int) -> str:
    return "127.0.0.1" if box_ports == 0 else f"127.0.0.{FIRST_BOX_HOST + index}"


def pick_port(host: str, wanted: int, taken: set[tuple[str, int]] | None = None) -> int:
    """`wanted` when it can be bound on `host`, else (or when 0) a free port there; never one in `taken`
    (ports this lab already handed out: the kernel may offer a just-released port again), which it joins."""
    taken = taken if taken is not None else set()
    candidates = [wanted] if wanted and (host, wanted) not in taken else []
    for port in [*candidates, *[0] * 20]:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            found = int(sock.getsockname()[1])
        if (host, found) not in taken:
            taken.add((host, found))
            return found
    raise OSError(f"no free port on {host}")


def default_node_modules(configured: str | None) -> str:
    if configured:
        return os.path.abspath(configured)
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for candidate in (os.path.join(os.getcwd(), "node_modules"), os.path.join(checkout, "node_modules")):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(checkout, "node_modules")


def page_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")


def coverage_csv() -> str:
    a = SITES[0]
    rows = ["prefix,lat,lon,country"]
    rows += [f"{s.prefix},{s.latitude},{s.longitude},{s.country}" for s in SITES]
    rows.append(f"127.0.0.0/8,{a.latitude},{a.longitude},{a.country}")  # anything else on loopback: site A
    return "\n".join(rows) + "\n"


def fetch_sources(box: BoxPlan, boxes: list[BoxPlan], origin_url: str) -> list[dict[str, str]]:
    """The box's site's other boxes (peers, asked only-if-cached), then the origin. Not the parent site's
    boxes: a parent fetches through and keeps what it fetched, which would blur the fill table."""
    sources = [{"name": b.id, "url": b.data_url, "kind": "peer"} for b in boxes if b.site == box.site and b != box]
    sources.append({"name": "origin", "url": origin_url, "kind": "origin"})
    return sources


def box_config(box: BoxPlan, boxes: list[BoxPlan], paths: LabPaths, *, origin_url: str,
               control_url: str | list[str], workers: int) -> dict[str, Any]:
    home = paths.box_dir(box.id)
    return {
        "box": {"id": box.id, "site": box.site},
        "server": {"listen": f"{box.host}:{box.data_port}", "workers": workers, "shutdown_timeout": "2s"},
        "admin": {"listen": f"{box.host}:{box.admin_port}", "token_file": paths.box_token},
        "storage": {
            "state_dir": os.path.join(home, "state"),
            "tiers": [{"name": "ssd", "path": os.path.join(home, "ssd"), "capacity": "256MiB"},
                      {"name": "hdd", "path": os.path.join(home, "hdd"), "capacity": "2GiB"}],
            "access_flush_interval": "250ms",
        },
        "log": {"access_log": os.path.join(home, "access.log"), "level": "info"},
        "fetch": {"sources": fetch_sources(box, boxes, origin_url), "peer_credential_file": paths.peer_token,
                  "connect_timeout": "1s", "first_byte_timeout": "3s", "between_bytes_timeout": "5s"},
        "tokens": {"required": True, "jwks_file": paths.jwks, "issuers": [ISSUER]},
        "control": {"url": control_url, "credential_file": paths.box_token, "poll_interval": "2s"},
        "firmware": {"trusted_keys_file": paths.firmware_public, "health_timeout": FIRMWARE_HEALTH_TIMEOUT},
    }


def control_config(boxes: list[BoxPlan], paths: LabPaths, *, port: int, origin_url: str, api_url: str,
                   node_modules: str, replica: ReplicaPlan | None = None) -> dict[str, Any]:
    """The control plane's config: SQLite in control/, or with `replica` one replica of several on PostgreSQL."""
    used = {b.site for b in boxes}
    state: dict[str, Any] = {"state": {"path": os.path.join(paths.control, "state.db")}}
    if replica is not None:
        state = {"public_url": replica.public_url, "state": replica.state_url,
                 "state_password_file": replica.password_file, "replica": {"id": replica.id, "lease": REPLICA_LEASE}}
    return {
        "listen": f"127.0.0.1:{port}",
        "coverage_file": paths.coverage,
        **state,
        "fleet": {
            "origin_url": origin_url,
            "sites": [{"id": s.id, "latitude": s.latitude, "longitude": s.longitude, "country": s.country,
                       "parent": s.parent if s.parent in used else None} for s in SITES],
            "boxes": [{"id": b.id, "site": b.site, "data_url": b.data_url, "admin_url": b.admin_url,
                       "egress_capacity": "1Gbps"} for b in boxes],
        },
        "health": {"interval": f"{int(HEALTH_INTERVAL * 1000)}ms", "timeout": "400ms", "down_after": 2,
                   "up_after": 2, "inventory_timeout": "2s"},
        "steering": {"ttl": "2s", "client_ip_header": CLIENT_HEADER},
        "tokens": {"signing_key_file": paths.signing_key, "kid": KID, "issuer": ISSUER},
        "auth": {"operator_token_file": paths.operator_token, "box_token_file": paths.box_token},
        "invalidation": {"retry_interval": "500ms", "push_timeout": "1s"},
        "popularity": {"snapshot_interval": "5s"},
        "rollout": {"trusted_keys_file": paths.firmware_public,
                    "bundles_dir": os.path.join(paths.control, "bundles")},
        "log": {"level": "info"},
        "lab": {"page_dir": page_dir(), "api_url": api_url, "node_modules": node_modules},
    }
