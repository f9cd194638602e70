"""Config loading: every bad input is one line naming the file, the key path and the problem."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from oca.config import load_box_config
from oca.config.units import parse_duration, parse_listen, parse_size
from oca.errors import ConfigError
from tests.conftest import OCA, ROOT

GOOD_TIERS = ("storage:\n  state_dir: st\n  tiers:\n    - {name: ssd, path: s, capacity: 1GiB}\n"
              "tokens:\n  required: false\n")


@pytest.mark.parametrize("text, value", [
    ("500GiB", 500 * 1024**3), ("64KiB", 65536), ("1.5GB", 1_500_000_000), ("10", 10), (4096, 4096),
    ("2 MiB", 2 * 1024**2), ("1TiB", 1024**4),
])
def test_sizes_take_units(text: Any, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", [("30s", 30.0), ("10m", 600.0), ("500ms", 0.5), ("1h", 3600.0), (2, 2.0)])
def test_durations_take_units(text: Any, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["12parsecs", "", "-1", True, [1], "GiB"])
def test_bad_sizes_are_rejected(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_listen_parses_ipv4_and_ipv6() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        parse_listen("8080")


def test_shipped_config_loads_with_every_section() -> None:
    config = load_box_config(os.path.join(ROOT, "configs", "oca.yaml"))
    assert [t.name for t in config.storage.tiers] == ["ssd", "hdd"]
    assert config.storage.tiers[0].capacity == 500 * 1024**3
    assert config.storage.policy == "s3fifo" and {t.admission for t in config.storage.tiers} == {"all"}
    assert config.server.listen == ("127.0.0.1", 8080)


@pytest.mark.parametrize("text, key, problem", [
    ("server:\n  workerz: 2\n" + GOOD_TIERS, "server.workerz", "unknown key"),
    ("serverr: {}\n" + GOOD_TIERS, "serverr", "unknown key"),
    ("server:\n  workers: two\n" + GOOD_TIERS, "server.workers", "expected an integer"),
    ("server:\n  workers: -1\n" + GOOD_TIERS, "server.workers", "at least 0"),
    ("server:\n  listen: localhost\n" + GOOD_TIERS, "server.listen", "HOST:PORT"),
    ("server:\n  header_timeout: soon\n" + GOOD_TIERS, "server.header_timeout", "duration"),
    ("storage:\n  tiers:\n    - {name: ssd, path: s, capacity: lots}\n", "storage.tiers[0].capacity", "size"),
    ("storage:\n  tiers:\n    - {name: ssd, path: s, capacity: 0}\n", "storage.tiers[0].capacity", "at least"),
    ("storage:\n  tiers:\n    - {name: ssd, path: s, capacity: 1GiB, speed: fast}\n", "storage.tiers[0].speed",
     "unknown key"),
    ("storage:\n  tiers:\n    - {name: a, path: s, capacity: 1GiB}\n    - {name: a, path: t, capacity: 1GiB}\n",
     "storage.tiers[1].name", "duplicate"),
    ("storage:\n  tiers: []\n", "storage.tiers", "at least one tier"),
    ("storage:\n  tiers: {}\n", "storage.tiers", "expected a list"),
    ("log:\n  level: loud\n" + GOOD_TIERS, "log.level", "one of"),
    ("storage:\n  policy: mru\n  tiers:\n    - {name: ssd, path: s, capacity: 1GiB}\n", "storage.policy", "one of"),
    ("storage:\n  tiers:\n    - {name: ssd, path: s, capacity: 1GiB, admission: some}\n",
     "storage.tiers[0].admission", "one of"),
    ("- just\n- a list\n", "", "mapping"),
    ("tokens:\n  required: true\n" + GOOD_TIERS.split("tokens:")[0], "tokens.jwks_file", "JWKS"),
    ("fetch:\n  sources:\n    - {name: o, url: ftp://x}\n" + GOOD_TIERS, "fetch.sources[0].url", "http://"),
    ("fetch:\n  sources:\n    - {name: o, url: http://x, kind: cousin}\n" + GOOD_TIERS, "fetch.sources[0].kind",
     "one of"),
    ("fetch:\n  slice_size: big\n" + GOOD_TIERS, "fetch.slice_size", "size"),
    ("server: [\n", "", "not valid YAML"),
    ("control:\n  url: [http://a:8090, ftp://b]\n" + GOOD_TIERS, "control.url[1]", "http://host"),
    ("control:\n  url: 8090\n" + GOOD_TIERS, "control.url", "expected a list"),
])
def test_bad_config_names_file_key_and_problem(tmp_path: Any, text: str, key: str, problem: str) -> None:
    path = tmp_path / "oca.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_box_config(str(path))
    message = str(info.value)
    assert message.startswith(str(path))
    assert f": {key}: " in message if key else True
    assert problem in message


def test_relative_paths_resolve_against_the_config_file(tmp_path: Any) -> None:
    path = tmp_path / "oca.yaml"
    path.write_text(GOOD_TIERS)
    config = load_box_config(str(path))
    assert config.storage.state_dir == str(tmp_path / "st")
    assert config.storage.tiers[0].path == str(tmp_path / "s")


def test_serve_with_unknown_key_exits_2_with_one_line(tmp_path: Any) -> None:
    path = tmp_path / "oca.yaml"
    path.write_text("server:\n  listen: 127.0.0.1:0\n  colour: blue\n" + GOOD_TIERS)
    result = subprocess.run([OCA, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "server.colour" in lines[0] and "unknown key" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Any) -> None:
    result = subprocess.run([OCA, "serve", "--config", str(tmp_path / "nope.yaml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "file not found" in result.stderr


def test_control_url_is_one_url_or_a_list_of_replicas(tmp_path: Any) -> None:
    path = tmp_path / "oca.yaml"
    path.write_text("control:\n  url: http://c1:8090\n" + GOOD_TIERS)
    assert load_box_config(str(path)).control.url == ("http://c1:8090",)
    path.write_text("control:\n  url: [http://c1:8090, http://c2:8090]\n" + GOOD_TIERS)
    assert load_box_config(str(path)).control.url == ("http://c1:8090", "http://c2:8090")
    path.write_text(GOOD_TIERS)
    assert load_box_config(str(path)).control.url == ()
