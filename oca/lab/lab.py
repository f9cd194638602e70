"""`Lab`: a whole CDN on loopback — origin, control plane, boxes in two sites — with its content ingested and
pre-positioned. `with Lab(LabConfig(...)) as lab:` is what `oca lab up` and the player tests run.

Rules kept here:
- Start order: content (made or reused), keys and secrets (reused), origin, lab API, [PostgreSQL], control
  plane replica(s), [HAProxy], boxes, catalog ingest, every box healthy at the control plane, fill, the
  control plane seeing the fill. Any failure stops everything started so far and raises one LabError
  naming what failed and its log file.
- One control plane (`control_replicas=1`, the default) keeps its state in SQLite (control/state.db) and
  listens on the lab's control URL itself. N >= 2 replicas share the lab's own PostgreSQL cluster
  (postgres/, reused by the next start; oca/lab/postgres.py), each on a free port with the same config but
  `listen` and `replica.id` (r1, r2, ...), and HAProxy (oca/lab/haproxy.py) listens on the control URL in
  front of them. Players, the page and the lab itself use the control URL; boxes are given the list of
  replica URLs (oca/replicas.py), so they do not depend on the load balancer.
- Stop order: the API, the boxes (SIGTERM, all at once, SIGKILL after a grace period), the control-plane
  replicas, HAProxy, PostgreSQL (pg_ctl stop -m fast), the origin. `stop()` is idempotent and safe after a
  failed start.
- Box and replica processes are replaced under a lock: the caller's thread and the API's thread may both
  stop and start them. One stopped through the lab is "down on purpose"; `check()` reports any other death
  (a lone control plane's, HAProxy's, PostgreSQL's or the origin's is a LabError: the lab cannot go on).
- A box whose master stops answering its watchdog (LabConfig.watchdog seconds without WATCHDOG=1) is
  SIGKILLed with its workers and started again, as systemd does (oca.lab.watchdog); `hang_box` stops one
  with SIGSTOP to show it.
- Nothing here prints: progress goes to the `say` callback, the CLI decides what to show.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml

from control.catalog import ingest_source, title_to_json
from oca.content import MadeContent, make_content
from oca.content.progress import ContentProgress
from oca.firmware.keys import load_signing_key, public_pem, write_keypair
from oca.lab import fill
from oca.lab.api import LabApi
from oca.lab.haproxy import CHECK_INTERVAL_MS, Replica, haproxy_config, server_states
from oca.lab.layout import (
    CLIENT_HEADER,
    HEALTH_INTERVAL,
    KID,
    SITES,
    BoxPlan,
    LabConfig,
    LabPaths,
    ReplicaPlan,
    box_config,
    box_host,
    box_sites,
    control_config,
    coverage_csv,
    default_node_modules,
    pick_port,
)
from oca.lab.postgres import ClusterError, PostgresCluster, server_bindir, server_user
from oca.lab.procs import Child, LabError, http_get
from oca.lab.watchdog import BoxWatchdog
from oca.tokens import generate_private_key, load_private_key, public_jwk, write_private_key
from oca.wire.control_client import ControlClient, ControlError

Say = Callable[[str], None]


def _oca_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "oca")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-c", "from oca.cli import main; main()"]


@dataclass
class LabBox:
    """One box of the lab: its plan, its process and its files."""

    plan: BoxPlan
    child: Child
    config_path: str
    workers: int
    stopped_on_purpose: bool = False
    reported: bool = False  # its unexpected exit has been reported by check()

    @property
    def id(self) -> str:
        return self.plan.id

    @property
    def site(self) -> str:
        return self.plan.site

    @property
    def data_url(self) -> str:
        return self.plan.data_url

    @property
    def admin_url(self) -> str:
        return self.plan.admin_url

    @property
    def log_path(self) -> str:
        return self.child.log_path

    @property
    def access_log_path(self) -> str:
        """One JSON line per request, with the player's CMCD parsed (`cmcd`)."""
        return os.path.join(os.path.dirname(self.config_path), "access.log")

    @property
    def running(self) -> bool:
        return self.child.running

    @property
    def pid(self) -> int | None:
        return self.child.pid


@dataclass
class LabReplica:
    """One control-plane replica of the lab (the only one by default): r1, r2, ..."""

    index: int  # 1, 2, ...
    port: int
    child: Child
    config_path: str
    stopped_on_purpose: bool = False
    reported: bool = False

    @property
    def name(self) -> str:
        return f"r{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return self.child.log_path

    @property
    def running(self) -> bool:
        return self.child.running


@dataclass
class Lab:
    config: LabConfig = field(default_factory=LabConfig)
    say: Say = field(default=lambda line: None)

    def __post_init__(self) -> None:
        self.paths = LabPaths(os.path.abspath(self.config.workdir))
        self.client_header = CLIENT_HEADER
        self.site_clients = {s.id: s.client for s in SITES}
        self.boxes: list[LabBox] = []
        self.titles: list[str] = []
        self.content: MadeContent | None = None
        self.placement: dict[str, list[str]] = {}  # box id -> titles pre-positioned on it
        self.file_counts: dict[str, int] = {}
        self.title_sizes: dict[str, int] = {}
        self._records: dict[str, dict[str, Any]] = {}  # title id -> its catalog record
        self.replicas: list[LabReplica] = []
        self._ports: set[tuple[str, int]] = set()  # handed out to the lab's processes
        self.control_url = self.origin_url = self.api_url = self.page_url = ""
        self.control_log_path = self.paths.control_log
        self.origin_log_path = self.paths.origin_log
        self.operator_token = ""
        self.box_token = ""
        self.node_modules = default_node_modules(self.config.node_modules)
        self._origin: Child | None = None
        self._postgres: PostgresCluster | None = None
        self._haproxy: Child | None = None
        self._api: LabApi | None = None
        self._lock = threading.RLock()
        self._stopped = False
        self.watchdog = BoxWatchdog(self.config.watchdog, self._restart_hung) if self.config.watchdog > 0 else None

    # -- context manager ----------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.config
        os.makedirs(self.paths.workdir, exist_ok=True)
        self.say(f"content: {cfg.titles} title(s) of {cfg.duration}s in {self.paths.content}")
        started = time.monotonic()
        shown = ContentProgress(cfg.titles, cfg.duration, self.say)
        self.content = make_content(self.paths.content, cfg.titles, cfg.duration, synthetic=cfg.synthetic,
                                    progress=shown.media, step=shown.step)
        self.titles = [t.spec.id for t in self.content.titles]
        reused = sum(t.reused for t in self.content.titles)
        kind = "synthetic" if self.content.synthetic else "H.264/AAC"
        self.say(f"content: {len(self.titles)} {kind} title(s), {reused} reused, in {time.monotonic() - started:.1f}s")
        self._secrets()
        self._start_origin()
        self._api = LabApi(self, port=cfg.api_port)
        self._api.start()
        self.api_url = self._api.url
        self._plan_boxes()
        self._start_control()
        if self.watchdog is not None:
            self.watchdog.start()
        self.say(f"boxes: starting {', '.join(b.id for b in self.boxes)}")
        for box in self.boxes:
            box.child.start()
        for box in self.boxes:
            self._wait_box(box)
        self._ingest()
        self.wait_healthy()
        if cfg.fill:
            self._fill()

    # -- the parts ----------------------------------------------------------------------------------------

    def _secrets(self) -> None:
        paths = self.paths
        os.makedirs(paths.keys, mode=0o700, exist_ok=True)
        if os.path.exists(paths.signing_key):
            key = load_private_key(paths.signing_key)
        else:
            key = generate_private_key("EdDSA")
            write_private_key(paths.signing_key, key)
        _write(paths.jwks, json.dumps({"keys": [public_jwk(key, KID)]}, indent=2) + "\n")
        self._firmware_key()
        for path in (paths.operator_token, paths.box_token, paths.peer_token):
            if not os.path.exists(path):
                _write(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
        with open(paths.operator_token, encoding="utf-8") as fh:
            self.operator_token = fh.read().strip()
        with open(paths.box_token, encoding="utf-8") as fh:
            self.box_token = fh.read().strip()

    def _firmware_key(self) -> None:
        """The key lab bundles are signed with, made once and kept like the token key; its public half is
        (re)written from it, so the boxes always trust the key an operator finds in keys/."""
        paths = self.paths
        if not os.path.exists(paths.firmware_key):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.firmware_public)  # a stale half would stop write_keypair
            write_keypair(paths.firmware_key)
            return
        key = load_signing_key(paths.firmware_key)
        _write(paths.firmware_public, public_pem(key.public_key()).decode())

    def _start_origin(self) -> None:
        port = pick_port("127.0.0.1", 0, self._ports)
        self.origin_url = f"http://127.0.0.1:{port}"
        self._origin = Child("origin", [sys.executable, "-m", "oca.lab.origin", self.paths.content,
                                        f"127.0.0.1:{port}"], self.paths.origin_log)
        self._origin.start()
        self._origin.wait_until(lambda: http_get(self.origin_url + "/healthz")[0] == 200, self.config.start_timeout)
        self.say(f"origin: {self.origin_url} serving {self.paths.content}")

    def _plan_boxes(self) -> None:
        cfg = self.config
        plans = []
        for i, (box_id, site) in enumerate(box_sites(cfg.boxes)):
            host = box_host(i, cfg.box_ports)
            data = pick_port(host, cfg.box_ports, self._ports)
            admin = pick_port(host, cfg.box_ports + 1 if cfg.box_ports else 0, self._ports)
            if cfg.box_ports and (data, admin) != (cfg.box_ports, cfg.box_ports + 1):
                self.say(f"box {box_id}: port {cfg.box_ports} or {cfg.box_ports + 1} on {host} is taken: "
                         f"data {data}, admin {admin}")
            plans.append(BoxPlan(box_id, site, host, data, admin))
        port = pick_port("127.0.0.1", cfg.control_port, self._ports)
        if cfg.control_port and port != cfg.control_port:
            self.say(f"control plane: port {cfg.control_port} is taken, using {port}")
        self.control_url = f"http://127.0.0.1:{port}"
        self.page_url = f"{self.control_url}/lab"
        oca = _oca_command()
        self._plan_replicas(port)
        control: str | list[str] = self.control_url
        if len(self.replicas) > 1:
            control = [r.url for r in self.replicas]
        for plan in plans:
            path = self.paths.box_config(plan.id)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write(path, yaml.safe_dump(box_config(plan, plans, self.paths, origin_url=self.origin_url,
                                                   control_url=control, workers=cfg.workers)))
            env = {**os.environ, **self.watchdog.register(plan.id)} if self.watchdog is not None else None
            child = Child(f"box {plan.id}", [*oca, "serve", "--config", path], self.paths.box_log(plan.id), env=env)
            self.boxes.append(LabBox(plan, child, path, cfg.workers))

    def _plan_replicas(self, control_port: int) -> None:
        count = self.config.control_replicas
        if count < 1:
            raise LabError(f"control_replicas must be at least 1, got {count}")
        for index in range(1, count + 1):
            if count == 1:
                port, path, log, name = control_port, self.paths.control_config, self.paths.control_log, "control plane"
            else:
                port = pick_port("127.0.0.1", 0, self._ports)
                path, log = self.paths.replica_config(index), self.paths.replica_log(index)
                name = f"control replica r{index}"
            child = Child(name, [*_oca_command(), "control", "serve", "--config", path], log)
            self.replicas.append(LabReplica(index, port, child, path))
        self.control_log_path = self.replicas[0].log_path

    def _start_control(self) -> None:
        os.makedirs(self.paths.control, exist_ok=True)
        _write(self.paths.coverage, coverage_csv())
        several = len(self.replicas) > 1
        state_url = self._start_postgres() if several else ""
        for replica in self.replicas:
            plan = None
            if several:
                assert self._postgres is not None
                plan = ReplicaPlan(replica.name, state_url, self._postgres.password_file, self.control_url)
            raw = control_config([b.plan for b in self.boxes], self.paths, port=replica.port,
                                 origin_url=self.origin_url, api_url=self.api_url, node_modules=self.node_modules,
                                 replica=plan)
            _write(replica.config_path, yaml.safe_dump(raw, sort_keys=False))
        for replica in self.replicas:
            replica.child.start()
        for replica in self.replicas:
            self._wait_replica(replica)
        if several:
            self._start_haproxy()
            self.say(f"control plane: {len(self.replicas)} replicas "
                     f"({', '.join(f'{r.name} {r.url}' for r in self.replicas)}) behind HAProxy on {self.control_url}")
        else:
            self.say(f"control plane: {self.control_url}")

    def _wait_replica(self, replica: LabReplica) -> None:
        replica.child.wait_until(lambda: http_get(replica.url + "/healthz")[0] == 200, self.config.start_timeout)

    def _start_postgres(self) -> str:
        """The lab's own PostgreSQL cluster (made once, reused), started; the control plane's state URL."""
        bindir = server_bindir()
        if bindir is None:
            raise LabError("control replicas need PostgreSQL's server binaries (initdb, pg_ctl): make system-deps "
                           "installs Debian's postgresql")
        try:
            cluster = PostgresCluster(bindir, self.paths.postgres, socket=False)
            reused = cluster.open()
            cluster.port = pick_port("127.0.0.1", cluster.remembered_port(), self._ports)
            self._postgres = cluster
            cluster.start()
            cluster.ensure_database("oca")
        except ClusterError as exc:
            raise LabError(str(exc)) from None
        except OSError as exc:
            raise LabError(f"PostgreSQL in {self.paths.postgres}: {exc}") from None
        self.say(f"postgresql: {'reused the' if reused else 'a new'} cluster in {cluster.root} on "
                 f"127.0.0.1:{cluster.port}, database oca (log: {cluster.log})")
        return cluster.url("oca")

    def _start_haproxy(self) -> None:
        binary = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
        if binary is None:
            raise LabError("control replicas need HAProxy: make system-deps installs Debian's haproxy")
        paths = self.paths
        host_port = urllib.parse.urlsplit(self.control_url)
        assert host_port.hostname is not None and host_port.port is not None
        # the stats socket's directory belongs to the user HAProxy runs as (never root: see procs)
        user = server_user() if os.geteuid() == 0 else None
        sock_dir = os.path.dirname(paths.haproxy_socket)
        os.makedirs(sock_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.haproxy_socket)
        if user is not None:
            os.chown(sock_dir, user.pw_uid, user.pw_gid)
        text = haproxy_config((host_port.hostname, host_port.port),
                              [Replica(r.name, "127.0.0.1", r.port) for r in self.replicas], paths.haproxy_socket)
        _write(paths.haproxy_config, text)
        self._haproxy = Child("haproxy", [binary, "-db", "-f", paths.haproxy_config], paths.haproxy_log, user=user)
        self._haproxy.start()
        wanted = {r.name for r in self.replicas}
        self._haproxy.wait_until(lambda: self.balancer_up() == wanted
                                 and http_get(self.control_url + "/healthz")[0] == 200,
                                 self.config.start_timeout, "seeing every replica up")

    def balancer_states(self) -> dict[str, str]:
        """Replica name -> its state at HAProxy (UP, DOWN, "DOWN 1/2" ...); {} with one control plane."""
        if self._haproxy is None:
            return {}
        try:
            return server_states(self.paths.haproxy_socket)
        except OSError:
            return {}

    def balancer_up(self) -> set[str]:
        """The replicas HAProxy sends requests to and whose last checks all passed ("UP", not "UP 1/2")."""
        return {name for name, state in self.balancer_states().items() if state == "UP"}

    def _box_ready(self, box: LabBox) -> bool:
        if http_get(box.data_url + "/healthz", timeout=1)[0] != 200:
            return False
        status, body = http_get(box.admin_url + "/status", self.box_token, timeout=1)
        return status == 200 and json.loads(body).get("workers") == box.workers

    def _wait_box(self, box: LabBox) -> None:
        box.child.wait_until(lambda: self._box_ready(box), self.config.start_timeout)

    def _ingest(self) -> None:
        client = ControlClient(self.control_url, self.operator_token, timeout=600.0, operator="oca-lab")
        records = asyncio.run(self._read_titles())
        for title_id, (record, mpd) in records.items():
            try:
                client.put_title(title_id, {"title": record, "mpd": mpd})
            except ControlError as exc:
                raise LabError(f"catalog ingest of {title_id} failed: {exc}; log: {self.control_log_path}") from None
            self.file_counts[title_id] = len(record["files"])
            self.title_sizes[title_id] = int(record["size"])
        self._records = {t: r for t, (r, _) in records.items()}
        self.say(f"catalog: ingested {', '.join(self.titles)}")

    async def _read_titles(self) -> dict[str, tuple[dict[str, Any], str | None]]:
        out = {}
        async with aiohttp.ClientSession() as session:
            for title_id in self.titles:
                root = os.path.join(self.paths.content, "titles", title_id)
                ingested = await ingest_source(root, title_id, session=session, now=time.time())
                out[title_id] = (title_to_json(ingested.title), ingested.mpd)
        return out

    def _fleet(self) -> dict[str, dict[str, Any]]:
        status, body = http_get(self.control_url + "/v1/fleet", self.operator_token)
        if status != 200:
            raise OSError(f"GET /v1/fleet: {status}")
        return {b["id"]: b for b in json.loads(body)["boxes"]}

    def wait_healthy(self, box_ids: list[str] | None = None, timeout: float | None = None) -> None:
        """Wait until the control plane steers to these boxes (all by default)."""
        wanted = set(box_ids or [b.id for b in self.boxes])
        timeout = timeout or self.config.start_timeout
        self._any_replica().child.wait_until(lambda: all(self._fleet()[b]["healthy"] for b in wanted), timeout,
                                 f"seeing boxes {', '.join(sorted(wanted))} healthy")

    def _fill(self) -> None:
        site_boxes: dict[str, list[str]] = {}
        for box in self.boxes:
            site_boxes.setdefault(box.site, []).append(box.id)
        self.placement = fill.placement(self.titles, site_boxes)
        by_id = {b.id: b for b in self.boxes}
        jobs = {box: (by_id[box].admin_url, [item for t in titles for item in fill.prefetch_items(self._records[t])])
                for box, titles in self.placement.items()}
        started = time.monotonic()
        done = fill.run_fill(jobs, self.box_token, {b.id: b.log_path for b in self.boxes}, self.config.start_timeout)
        stored = sum(p.stored for p in done.values())
        present = sum(p.present for p in done.values())
        total = sum(p.bytes for p in done.values())
        self.say(f"fill: {stored} object(s) ({fill.size(total)}) stored, {present} already present, "
                 f"in {time.monotonic() - started:.1f}s")
        # The control plane reads a box's /inventory/titles after a health poll shows a new
        # inventory_sequence; steering prefers live holders from then on. A box advances that sequence only
        # when /inventory/titles is read, so reading it here (holdings) is what lets the control plane see it.
        deadline = time.monotonic() + 10 * HEALTH_INTERVAL + 5
        while time.monotonic() < deadline:
            self.holdings()
            try:
                fleet = self._fleet()
            except (OSError, ValueError, KeyError):
                fleet = {}
            if fleet and all(fleet[b]["titles"] >= len(t) for b, t in self.placement.items()):
                return
            time.sleep(HEALTH_INTERVAL)
        self.say("fill: the control plane has not seen every box's inventory yet")

    # -- what tests and the page use ----------------------------------------------------------------------

    def box(self, box_id: str) -> LabBox:
        for box in self.boxes:
            if box.id == box_id:
                return box
        raise LabError(f"no box {box_id!r} in this lab (boxes: {', '.join(b.id for b in self.boxes)})")

    def has_box(self, box_id: str) -> bool:
        return any(b.id == box_id for b in self.boxes)

    def stop_box(self, box_id: str, how: str = "kill") -> None:
        """SIGKILL (how="kill": a box dying) or SIGTERM (how="term": a drain) the box and its workers."""
        box = self.box(box_id)
        with self._lock:
            box.stopped_on_purpose = True
            if self.watchdog is not None:
                self.watchdog.expect(box_id)
            box.child.stop(how)

    def hang_box(self, box_id: str) -> None:
        """SIGSTOP the box and its workers: a box that hangs (a stuck disk, a kernel stall) with its
        connections open. The watchdog kills and restarts it; without one it stays stopped until stop_box."""
        box = self.box(box_id)
        with self._lock:
            if box.running and box.child.process is not None:
                os.killpg(box.child.process.pid, signal.SIGSTOP)

    def _restart_hung(self, box_id: str) -> None:
        """The watchdog's action on a box that stopped pinging: SIGKILL it and its workers (their connections
        reset), start it again."""
        box = self.box(box_id)
        with self._lock:
            if box.stopped_on_purpose or self._stopped:
                return
            box.child.stop("kill")
            self.say(f"box {box_id}: no watchdog ping for {self.config.watchdog:g}s: killed, starting again")
            box.child.start()

    def spawn_box(self, box_id: str) -> None:
        """Start a stopped box again with the same config and cache; returns once spawned."""
        box = self.box(box_id)
        with self._lock:
            if not box.running:
                if self.watchdog is not None:
                    self.watchdog.expect(box_id)
                box.child.start()
                box.stopped_on_purpose, box.reported = False, False

    def start_box(self, box_id: str) -> None:
        """Start a stopped box again and wait until it serves (the control plane follows within up_after polls)."""
        self.spawn_box(box_id)
        self._wait_box(self.box(box_id))

    def replica(self, index: int) -> LabReplica:
        """Control-plane replica `index` (1, 2, ...; 1 is the lone control plane by default)."""
        if not 1 <= index <= len(self.replicas):
            raise LabError(f"no control replica {index} in this lab (replicas: 1-{len(self.replicas)})")
        return self.replicas[index - 1]

    def replica_count(self) -> int:
        return len(self.replicas)

    def _any_replica(self) -> LabReplica:
        return next((r for r in self.replicas if r.running), self.replicas[0])

    def stop_control(self, how: str = "kill", replica: int = 1) -> None:
        """SIGKILL (how="kill": a crash) or SIGTERM control-plane replica `replica`; `check()` does not report
        it until `start_control`. With one control plane, players' manifest and steering requests fail
        meanwhile (the boxes keep serving); with several, HAProxy sends them to the others."""
        target = self.replica(replica)
        with self._lock:
            target.stopped_on_purpose = True
            target.child.stop(how)

    def spawn_control(self, replica: int = 1) -> None:
        """Start a stopped replica again (same config, state and port); returns once spawned."""
        target = self.replica(replica)
        with self._lock:
            if not target.running:
                target.child.start()
                target.stopped_on_purpose, target.reported = False, False

    def start_control(self, replica: int = 1) -> None:
        """Start a stopped replica again; returns once it answers (HAProxy follows within `rise` checks)."""
        self.spawn_control(replica)
        self._wait_replica(self.replica(replica))

    def stop_state(self) -> None:
        """Stop the lab's PostgreSQL (several replicas only): the replicas serve from memory meanwhile."""
        if self._postgres is None:
            raise LabError("the lab has no PostgreSQL: start it with --control-replicas 2 or more")
        self._postgres.stop()

    def start_state(self) -> None:
        """Start the lab's PostgreSQL again: the replicas reconnect by themselves."""
        if self._postgres is None:
            raise LabError("the lab has no PostgreSQL: start it with --control-replicas 2 or more")
        self._postgres.start()

    def box_serving(self, url: str) -> str | None:
        """The id of the box whose data port `url` points at, or None (the origin, the control plane...)."""
        parts = urllib.parse.urlsplit(url)
        for box in self.boxes:
            if (parts.hostname, parts.port) == (box.plan.host, box.plan.data_port):
                return box.id
        return None

    def master_url(self, title_id: str) -> str:
        return f"{self.control_url}/v1/play/{title_id}/master.m3u8"

    def mpd_url(self, title_id: str) -> str:
        return f"{self.control_url}/v1/play/{title_id}/manifest.mpd"

    def describe(self) -> dict[str, Any]:
        """The lab as the API shows it (GET /api/lab)."""
        synthetic = {t.spec.id: t.spec.synthetic for t in self.content.titles} if self.content else {}
        return {
            "control_url": self.control_url, "origin_url": self.origin_url, "api_url": self.api_url,
            "page_url": self.page_url, "client_header": self.client_header,
            "control_replicas": self._describe_replicas(),
            "balancer": None if self._haproxy is None else {
                "kind": "haproxy", "url": self.control_url, "check_interval_ms": CHECK_INTERVAL_MS,
                "config": self.paths.haproxy_config, "log_path": self.paths.haproxy_log, "pid": self._haproxy.pid},
            "postgres": None if self._postgres is None else {
                "url": self._postgres.url("oca"), "dir": self._postgres.root, "log_path": self._postgres.log},
            "sites": [{"id": s.id, "client": s.client, "prefix": s.prefix, "parent": s.parent,
                       "boxes": [b.id for b in self.boxes if b.site == s.id]} for s in SITES],
            "boxes": [{"id": b.id, "site": b.site, "data_url": b.data_url, "admin_url": b.admin_url,
                       "running": b.running, "pid": b.pid, "log_path": b.log_path} for b in self.boxes],
            "titles": [{"id": t, "master": self.master_url(t), "mpd": self.mpd_url(t),
                        "synthetic": synthetic.get(t, False), "duration": self.config.duration,
                        "placed_on": sorted(b for b, ts in self.placement.items() if t in ts)} for t in self.titles],
        }

    def _describe_replicas(self) -> list[dict[str, Any]]:
        states = self.balancer_states()
        return [{"index": r.index, "name": r.name, "url": r.url, "running": r.running, "pid": r.child.pid,
                 "log_path": r.log_path, "config": r.config_path, "balancer": states.get(r.name)}
                for r in self.replicas]

    def holdings(self) -> dict[str, dict[str, fill.TitleHolding]]:
        """Box id -> title id -> what it holds, from every running box's admin API."""
        out: dict[str, dict[str, fill.TitleHolding]] = {}
        for box in self.boxes:
            if box.running:
                try:
                    out[box.id] = fill.holdings(box.admin_url, self.box_token, self.file_counts, self.title_sizes)
                except (OSError, ValueError):
                    out[box.id] = {}
        return out

    def table(self) -> str:
        return fill.table(self.titles, [(b.id, b.site, b.running) for b in self.boxes], self.holdings(),
                          self.file_counts)

    def check(self) -> list[str]:
        """Problems since the last check: LabError if the origin, a lone control plane, HAProxy or PostgreSQL
        died; one line per box or replica (of several) that exited without being asked to."""
        lone = self.replicas[0] if len(self.replicas) == 1 and not self.replicas[0].stopped_on_purpose else None
        for child in (self._origin, self._haproxy, lone.child if lone else None):
            if child is not None and not child.running:
                raise child.failure("exited")
        if self._postgres is not None and self._postgres.pid() is None:
            raise LabError(f"PostgreSQL exited; log: {self._postgres.log}")
        lines = []
        with self._lock:
            parts: list[LabBox | LabReplica] = [*self.boxes, *(self.replicas if lone is None else [])]
            for part in parts:
                if not part.running and not part.stopped_on_purpose and not part.reported:
                    part.reported = True
                    lines.append(str(part.child.failure("exited")))
        return lines

    # -- stopping -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._api is not None:
            self._api.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        with self._lock, concurrent.futures.ThreadPoolExecutor(max(1, len(self.boxes), len(self.replicas))) as pool:
            list(pool.map(lambda b: b.child.stop("term"), self.boxes))
            list(pool.map(lambda r: r.child.stop("term"), self.replicas))
        if self._haproxy is not None:
            self._haproxy.stop("term")
        if self._postgres is not None:
            with contextlib.suppress(ClusterError):
                self._postgres.stop()
        if self._origin is not None:
            self._origin.stop("term")


def _write(path: str, text: str, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
