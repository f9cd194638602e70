"""Loads configs/control.yaml into ControlConfig (service settings) and a model.Fleet (sites, boxes, coverage).

Rules kept here, as for the box's config:
- Unknown keys, wrong types and impossible values are rejected with one ConfigError naming the file, the
  dotted key path (`fleet.boxes[2].admin_url`) and the problem.
- The settings are read by oca.config.settings, as the box's are: sizes, durations and listen addresses as
  in oca.config.units; relative paths resolve against the file that names them.
- The fleet is inline under `fleet:` or in its own file (`fleet: {file: fleet.yaml}`); the coverage file is
  CSV (`prefix,lat,lon,country`) or YAML (a list of mappings with those keys). See control/fleet.py. The
  announced-prefix file (`fleet.prefixes_file`) is only located here: control.prefix_data reads it when
  the steering index is built (control.preflight), so a bad line is a start-up problem all the same.
- `state:` is `sqlite:PATH` (the default, /var/lib/oca-control/state.db), `postgresql://USER@HOST:PORT/DB`,
  or the older mapping `{path: PATH}` (SQLite). A PostgreSQL URL never carries a password: one in it is
  refused at load (exit 2); the password comes from `state_password_file`, PGPASSWORD or PGPASSFILE.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field

from control.fleet import load_fleet
from control.model import Fleet
from control.store import POSTGRES_SCHEMES
from oca.config.settings import build_settings, read_yaml, resolve_path, setting
from oca.errors import ConfigError
from oca.wire.window import Window


@dataclass(frozen=True)
class StateConfig:
    """Where the durable state lives (control/store/): SQLite at `path`, or the PostgreSQL database at `url`."""

    path: str = setting("/var/lib/oca-control/state.db", unit="path")  # SQLite; also where bundles/ goes by default
    url: str | None = field(default=None, metadata={"internal": True})  # postgresql://... from `state: postgresql://`

    def target(self) -> str:
        """What control.store.open_store opens: the PostgreSQL URL, else sqlite:PATH."""
        return self.url if self.url is not None else f"sqlite:{self.path}"


@dataclass(frozen=True)
class HealthConfig:
    interval: float = setting(2.0, unit="duration", min=0.05, max=3600)
    timeout: float = setting(1.0, unit="duration", min=0.01, max=600)
    down_after: int = setting(2, min=1, max=100)  # k: failed polls in a row before a healthy box is marked down
    up_after: int = setting(2, min=1, max=100)  # m: good polls in a row before a down box is marked up
    inventory_timeout: float = setting(5.0, unit="duration", min=0.01, max=600)
    concurrency: int = setting(256, min=1, max=100_000)  # polls in flight at once (control/health.py)


@dataclass(frozen=True)
class SteeringConfig:
    ttl: float = setting(10.0, unit="duration", min=1, max=86400)
    overload_threshold: float = setting(0.9, min=0.01, max=10)
    max_pathways: int = setting(4, min=0, max=64)  # boxes offered per session (the origin comes after them)
    default_site: str | None = setting(None)  # where clients matching no prefix go; None = origin only
    max_sessions: int = setting(200_000, min=1, max=100_000_000)  # sessions whose steering memory is kept
    client_ip_header: str | None = setting(None)  # e.g. X-Forwarded-For behind a load balancer: its last address


@dataclass(frozen=True)
class TokenConfig:
    signing_key_file: str | None = setting(None, unit="path")  # PEM private key (ES256 or EdDSA); None = no tokens
    kid: str = setting("control-1")
    issuer: str = setting("oca-control")
    lifetime: float = setting(6 * 3600.0, unit="duration", min=1, max=30 * 86400)
    bind_client_ip: bool = setting(False)


@dataclass(frozen=True)
class AuthConfig:
    operator_token_file: str | None = setting(None, unit="path")
    box_token_file: str | None = setting(None, unit="path")
    read_token_file: str | None = setting(None, unit="path")  # read-only: status, metrics, fleet, catalog... (GET)


@dataclass(frozen=True)
class InvalidationConfig:
    push_timeout: float = setting(2.0, unit="duration", min=0.01, max=600)
    retry_interval: float = setting(1.0, unit="duration", min=0.01, max=3600)
    push_concurrency: int = setting(256, min=1, max=2048)  # pushes in flight at once (control/invalidation.py)


@dataclass(frozen=True)
class PopularityConfig:
    half_life: float = setting(3600.0, unit="duration", min=1)
    snapshot_interval: float = setting(60.0, unit="duration", min=0.1)


@dataclass(frozen=True)
class FillConfig:
    """The nightly fill plans (control/fill_plan.py) and the window the boxes' fill runners keep to."""

    head_share: float = setting(0.5, min=0, max=1)  # share of a site's popularity whose titles go on every box
    replication: int = setting(2, min=1, max=64)  # boxes of a site holding each title outside the head
    headroom: float = setting(0.1, min=0, max=0.9)  # share of every tier the plan leaves free
    pin: bool = setting(True)  # planned files stay pinned until the next plan
    window: str | None = setting("02:00-14:00")  # boxes' local time; "always" or null = no window


@dataclass(frozen=True)
class RolloutConfig:
    """Firmware roll-outs (control/rollout/): where bundles are kept, what the control plane checks before
    starting one, and the health gate each box passes after its bake."""

    bundles_dir: str | None = setting(None, unit="path")  # null = `bundles/` beside the SQLite state file
    trusted_keys_file: str | None = setting(None, unit="path")  # check signatures at submit; null = the boxes do
    max_bundle_size: int = setting(256 << 20, unit="size", min=1)
    max_error_rate: float = setting(0.01, min=0, max=1)  # share of 5xx since the new release started
    max_restarts: int = setting(0, min=0, max=1000)  # worker restarts since the new release started
    request_timeout: float = setting(180.0, unit="duration", min=1, max=3600)  # an upload or a switch on a box


@dataclass(frozen=True)
class ReplicaConfig:
    """Several replicas on one PostgreSQL state (README: Running several control-plane replicas)."""

    id: str | None = setting(None)  # this replica's name (leases, popularity); null = <hostname>:<listen port>
    refresh_interval: float = setting(1.0, unit="duration", min=0.05, max=600)  # memory <- the state store
    lease: float = setting(10.0, unit="duration", min=1, max=3600)  # the roll-out leader's lease, renewed at 1/3


@dataclass(frozen=True)
class LogConfig:
    level: str = setting("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class LabPageConfig:
    """The lab's /lab page (oca/lab/page), served only when `lab:` is set (by `oca lab up`)."""

    page_dir: str = setting("", unit="path")  # the page's files: index.html, lab.js, lab.css
    api_url: str | None = setting(None)  # the lab process's API (boxes, stop/start); the page calls it
    node_modules: str | None = setting(None, unit="path")  # hls.js and dashjs from npm (`make`); null = none


@dataclass(frozen=True)
class ControlConfig:
    listen: tuple[str, int] = setting(("127.0.0.1", 8090), unit="listen")
    public_url: str | None = setting(None)  # base URL players reach us at; default http://<listen>
    coverage_file: str | None = setting(None, unit="path")
    prefixes_check_interval: float = setting(10.0, unit="duration", min=0, max=86400)  # 0 = on SIGHUP only
    state: StateConfig = field(default_factory=StateConfig, metadata={"internal": True})  # read by _state()
    state_password_file: str | None = setting(None, unit="path")  # the PostgreSQL password; null = libpq's env
    health: HealthConfig = field(default_factory=HealthConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    invalidation: InvalidationConfig = field(default_factory=InvalidationConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    fill: FillConfig = field(default_factory=FillConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    lab: LabPageConfig | None = field(default=None)  # the lab page at /lab; null = no /lab route
    fleet: Fleet = field(default_factory=lambda: Fleet({}, {}, (), ""), metadata={"internal": True})
    prefixes_file: str | None = field(default=None, metadata={"internal": True})  # fleet.prefixes_file, resolved
    source: str = field(default="<defaults>", metadata={"internal": True})

    def bundles_dir(self) -> str:
        return self.rollout.bundles_dir or os.path.join(os.path.dirname(os.path.abspath(self.state.path)), "bundles")

    def replica_id(self) -> str:
        return self.replica.id or f"{socket.gethostname()}:{self.listen[1]}"

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.listen
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def load_control_config(path: str) -> ControlConfig:
    """Read, validate and resolve a control-plane config file with its fleet and coverage."""
    problems: list[ConfigError] = []
    config = control_config_problems(read_yaml(path), path, problems)
    if problems:
        raise problems[0]
    return config


def control_config_problems(raw: dict[str, object], path: str, problems: list[ConfigError]) -> ControlConfig:
    """The config, with every problem appended to `problems` (`oca check-config`); what could not be read
    keeps its default (an empty fleet when the fleet could not be read)."""
    raw = dict(raw)
    fleet_raw = raw.pop("fleet", None)
    state_raw = raw.pop("state", None)
    base = os.path.dirname(os.path.abspath(path))
    config = build_settings(ControlConfig, raw, path, "", base, problems)
    try:
        state = _state(state_raw, path, base)
    except ConfigError as exc:
        problems.append(exc)
        state = StateConfig()
    if config.state_password_file is not None and state.url is None:
        problems.append(ConfigError(path, "state_password_file", "is set but state is not a postgresql:// URL"))
    fleet, prefixes_file = Fleet({}, {}, (), ""), None
    if fleet_raw is None:
        problems.append(ConfigError(path, "fleet", "is required (inline sites/boxes/origin_url, or file: PATH)"))
    else:
        try:
            fleet, prefixes_file = load_fleet(fleet_raw, path, config.coverage_file)
        except ConfigError as exc:
            problems.append(exc)
    if config.public_url is not None and not config.public_url.startswith(("http://", "https://")):
        problems.append(ConfigError(path, "public_url", f"expected an http(s) URL, got {config.public_url!r}"))
    if config.lab is not None and not config.lab.page_dir:
        problems.append(ConfigError(path, "lab.page_dir", "is required when lab is set"))
    if config.fill.window is not None:
        try:
            Window.parse(config.fill.window)
        except ValueError as exc:
            problems.append(ConfigError(path, "fill.window", str(exc)))
    return dataclasses.replace(config, state=state, fleet=fleet, prefixes_file=prefixes_file, source=path)


def _state(raw: object, path: str, base: str) -> StateConfig:
    """`state:` as sqlite:PATH, a postgresql:// URL without a password, or the mapping {path: PATH}."""
    if raw is None:
        return StateConfig()
    if not isinstance(raw, str):
        return build_settings(StateConfig, raw, path, "state", base)
    if raw.startswith("sqlite:"):
        try:
            return StateConfig(path=resolve_path(raw.removeprefix("sqlite:"), base))
        except ValueError:
            raise ConfigError(path, "state", "sqlite: needs a path (sqlite:/var/lib/oca-control/state.db)") from None
    if raw.startswith(POSTGRES_SCHEMES):
        from control.store.postgres import describe, has_password

        try:
            password = has_password(raw)
        except ValueError as exc:
            raise ConfigError(path, "state", str(exc)) from None
        if password:
            raise ConfigError(path, "state", f"a password in the URL is refused ({describe(raw)}); put it in "
                              "state_password_file, or in PGPASSWORD or PGPASSFILE")
        return StateConfig(url=raw)
    scheme = raw.split(":", 1)[0] + ":" if ":" in raw else raw  # the rest may hold a password: never shown
    raise ConfigError(path, "state", f"expected sqlite:PATH or postgresql://USER@HOST:PORT/DB, got {scheme!r}...")
