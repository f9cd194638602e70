"""configs/control.yaml and the fleet/coverage loaders: defaults, units, and one-line errors naming the key."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
import yaml

from control.config import load_control_config
from control.fleet import load_coverage
from control.preflight import startup
from control.steering import SteeringIndex
from oca.config.units import parse_rate
from oca.errors import ConfigError
from tests.conftest import ROOT
from tests.control.fixtures import box_entry, write_control_config


def test_the_shipped_config_loads(tmp_path: Any) -> None:
    shutil.copy(os.path.join(ROOT, "configs", "control.yaml"), tmp_path / "control.yaml")
    config = load_control_config(str(tmp_path / "control.yaml"))
    assert config.health.interval == 2.0 and config.health.down_after == 2 and config.steering.ttl == 10.0
    assert config.fleet.boxes["ams1-box1"].egress_capacity == 10_000_000_000
    assert config.fleet.sites["isp-ams-1"].parent == "ix-ams"
    assert config.state.path == "/var/lib/oca-control/state.db"
    assert config.base_url() == "http://127.0.0.1:8090"


def test_test_config_resolves_paths_and_coverage(tmp_path: Any) -> None:
    path = write_control_config(str(tmp_path), [box_entry("b1", 1, 2, prefixes=["192.0.2.0/24"])])
    config = load_control_config(path)
    assert config.state.path == str(tmp_path / "state" / "control.db")
    assert [a.prefix for a in config.fleet.coverage] == ["127.0.0.0/8", "10.0.0.0/8"]
    assert config.fleet.boxes["b1"].prefixes == ("192.0.2.0/24",)
    assert config.health.interval == 0.2


def test_fleet_in_its_own_file(tmp_path: Any) -> None:
    path = write_control_config(str(tmp_path), [box_entry("b1", 1, 2)])
    raw = yaml.safe_load((tmp_path / "control.yaml").read_text())
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(raw["fleet"]))
    raw["fleet"] = {"file": "fleet.yaml"}
    (tmp_path / "control.yaml").write_text(yaml.safe_dump(raw))
    assert list(load_control_config(path).fleet.boxes) == ["b1"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(colour="red"), "control.yaml: colour: unknown key"),
    (lambda c: c["health"].update(interval="soon"), "health.interval: expected a duration"),
    (lambda c: c["health"].update(down_after=0), "health.down_after: must be at least 1"),
    (lambda c: c.update(listen="nowhere"), "listen: expected HOST:PORT"),
    (lambda c: c.pop("fleet"), "fleet: is required"),
    (lambda c: c["fleet"]["boxes"][0].update(site="mars"), "fleet.boxes[0].site: unknown site 'mars'"),
    (lambda c: c["fleet"]["boxes"][0].update(id="bad id"), "fleet.boxes[0].id: expected an id"),
    (lambda c: c["fleet"]["boxes"][0].update(id="origin"), "reserved for the origin pathway"),
    (lambda c: c["fleet"]["boxes"].append(dict(c["fleet"]["boxes"][0])), "fleet.boxes[1].id: duplicate box id"),
    (lambda c: c["fleet"]["boxes"][0].update(prefixes=["10.0.0.1/8"]), "fleet.boxes[0].prefixes[0]: not a CIDR"),
    (lambda c: c["fleet"]["boxes"][0].update(egress_capacity="fast"), "egress_capacity: expected a rate"),
    (lambda c: c["fleet"]["boxes"][0].update(admin_url="ftp://x"), "fleet.boxes[0].admin_url: expected an http"),
    (lambda c: c["fleet"]["boxes"][0].update(colour=1), "fleet.boxes[0].colour: unknown key"),
    (lambda c: c["fleet"]["sites"][0].update(parent="lab"), "parent chain of 'lab' loops"),
    (lambda c: c["fleet"]["sites"][0].update(parent="nowhere"), "fleet.sites[0].parent: unknown site 'nowhere'"),
    (lambda c: c["fleet"]["sites"][0].update(latitude=91), "fleet.sites[0].latitude: expected a number from -90"),
    (lambda c: c["fleet"]["sites"][0].update(country="NLD"), "fleet.sites[0].country: expected a two-letter"),
    (lambda c: c.update(coverage_file="missing.csv"), "missing.csv: cannot read"),
    (lambda c: c.update(public_url="ftp://x"), "public_url: expected an http(s) URL"),
])
def test_bad_values_name_the_key(tmp_path: Any, change: Any, message: str) -> None:
    path = write_control_config(str(tmp_path), [box_entry("b1", 1, 2)])
    raw = yaml.safe_load((tmp_path / "control.yaml").read_text())
    change(raw)
    (tmp_path / "control.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_control_config(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_coverage_yaml_and_csv_errors(tmp_path: Any) -> None:
    good = tmp_path / "coverage.yaml"
    good.write_text(yaml.safe_dump([{"prefix": "2001:db8::/32", "lat": 1, "lon": 2, "country": "de"}]))
    area = load_coverage(str(good))[0]
    assert (area.prefix, area.latitude, area.longitude, area.country) == ("2001:db8::/32", 1.0, 2.0, "DE")
    bad = tmp_path / "coverage.csv"
    bad.write_text("# comment\n192.0.2.0/24,1,2\n")
    with pytest.raises(ConfigError, match="line 2: expected 4 columns"):
        load_coverage(str(bad))
    bad.write_text("192.0.2.0/24,north,2,US\n")
    with pytest.raises(ConfigError, match="line 1: lat and lon must be numbers"):
        load_coverage(str(bad))


def _with_prefix_file(tmp_path: Any, rows: str, inline: list[str] | None = None) -> str:
    path = write_control_config(str(tmp_path), [box_entry("b1", 1, 2, prefixes=inline or []), box_entry("b2", 3, 4)])
    raw = yaml.safe_load((tmp_path / "control.yaml").read_text())
    raw["fleet"]["prefixes_file"] = "announced/prefixes.csv"
    (tmp_path / "control.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "announced").mkdir(exist_ok=True)
    (tmp_path / "announced" / "prefixes.csv").write_text(rows)
    return path


def _index(path: str) -> SteeringIndex:
    """The steering index as the plane builds it at start (control.preflight.startup)."""
    index = startup(load_control_config(path)).index
    assert index is not None
    return index


def test_prefixes_file_adds_each_box_its_prefixes_after_its_own(tmp_path: Any) -> None:
    path = _with_prefix_file(tmp_path, "prefix,box\n# the ISP's own\n198.51.100.0/24,b1\n\n 2001:DB8:0::/48 , b2\n"
                                       "192.0.2.7,b1\n203.0.113.0/24,b2\n", inline=["203.0.113.0/24"])
    config = load_control_config(path)
    assert config.fleet.boxes["b1"].prefixes == ("203.0.113.0/24",)  # the file's are not copied into the boxes
    index = _index(path)
    assert len(index.announced) == 4
    for address, prefix, boxes in (("198.51.100.9", "198.51.100.0/24", ("b1",)), ("192.0.2.7", "192.0.2.7/32", ("b1",)),
                                   ("2001:db8::5", "2001:db8::/48", ("b2",)),  # canonical, as inline prefixes are
                                   ("203.0.113.1", "203.0.113.0/24", ("b1", "b2"))):  # inline and file: both
        match = index.announced.lookup(address)
        assert match is not None and (match.prefix, match.value) == (prefix, boxes), address


def test_prefixes_file_by_site_announces_for_every_box_of_the_site(tmp_path: Any) -> None:
    path = _with_prefix_file(tmp_path, "prefix,site\n198.51.100.0/24,lab\n")
    match = _index(path).announced.lookup("198.51.100.1")
    assert match is not None and match.value == ("b1", "b2")  # both boxes of the fixtures' one site


@pytest.mark.parametrize(("rows", "message"), [
    ("prefix,box\n198.51.100.0/24,b1\n10.0.0.1/8,b2\n",
     "prefixes.csv: line 3: not a CIDR prefix: 10.0.0.1/8 has host bits set"),
    ("198.51.100.0/24,b9\n", "prefixes.csv: line 1: unknown box 'b9'"),
    ("# x\n198.51.100.0/24\n", "prefixes.csv: line 2: expected 2 columns (prefix,box), got 1"),
    ("198.51.100.0/24,b1,extra\n", "prefixes.csv: line 1: expected 2 columns"),
    ("prefix,pop\n198.51.100.0/24,b1\n", "prefixes.csv: line 1: expected the header prefix,box or prefix,site"),
    ("prefix,site\n198.51.100.0/24,b1\n", "prefixes.csv: line 2: unknown site 'b1'"),
])
def test_a_bad_prefix_file_line_is_one_error_naming_file_and_line(tmp_path: Any, rows: str, message: str) -> None:
    path = _with_prefix_file(tmp_path, rows)
    with pytest.raises(ConfigError) as info:
        _index(path)
    assert message in str(info.value)
    assert str(tmp_path / "announced" / "prefixes.csv") in str(info.value)
    assert "\n" not in str(info.value)


def test_prefixes_file_missing_binary_or_not_a_path(tmp_path: Any) -> None:
    path = _with_prefix_file(tmp_path, "")
    (tmp_path / "announced" / "prefixes.csv").unlink()
    with pytest.raises(ConfigError, match=r"prefixes\.csv: cannot read"):
        _index(path)
    (tmp_path / "announced" / "prefixes.csv").write_bytes(b"198.51.100.0/24,b1\n\xff\xfe,b2\n")
    with pytest.raises(ConfigError, match=r"prefixes\.csv: line 2: not UTF-8 text"):
        _index(path)
    raw = yaml.safe_load((tmp_path / "control.yaml").read_text())
    raw["fleet"]["prefixes_file"] = 7
    (tmp_path / "control.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"fleet\.prefixes_file: expected a path"):
        load_control_config(path)


def test_rates() -> None:
    assert parse_rate("10Gbps") == 10**10 and parse_rate("400Mbit") == 4 * 10**8 and parse_rate(1000) == 1000
    assert parse_rate("1.5G") == 1_500_000_000
    for bad in ("fast", "10 parsecs", True):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_every_setting_is_in_the_shipped_config() -> None:
    import dataclasses

    from control.config import ControlConfig

    with open(os.path.join(ROOT, "configs", "control.yaml"), encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)

    def walk(cls: Any, section: dict[str, Any], where: str) -> None:
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            assert f.name in section, f"{where}{f.name} is not in configs/control.yaml"
            factory = f.default_factory
            if isinstance(factory, type) and dataclasses.is_dataclass(factory):
                walk(factory, section[f.name], f"{where}{f.name}.")

    walk(ControlConfig, raw, "")
    assert set(raw["fleet"]) == {"origin_url", "prefixes_file", "sites", "boxes"}
