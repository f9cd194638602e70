"""The lab's pure parts: sites and boxes, the configs it writes (they load), placement, the table."""

from __future__ import annotations

import os
from typing import Any

import yaml

from control.config import load_control_config
from control.steering import rendezvous_order
from oca.config import load_box_config
from oca.lab.fill import TitleHolding, placement, table
from oca.lab.layout import (
    BoxPlan,
    LabPaths,
    ReplicaPlan,
    box_config,
    box_host,
    box_sites,
    control_config,
    coverage_csv,
    fetch_sources,
)


def test_boxes_are_split_over_the_two_sites_site_a_first() -> None:
    assert box_sites(1) == [("a1", "site-a")]
    assert box_sites(3) == [("a1", "site-a"), ("a2", "site-a"), ("b1", "site-b")]
    assert box_sites(4) == [("a1", "site-a"), ("a2", "site-a"), ("b1", "site-b"), ("b2", "site-b")]
    assert [box_host(i, 8080) for i in range(3)] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert box_host(2, 0) == "127.0.0.1"


PLANS = [BoxPlan("a1", "site-a", "127.0.0.11", 8080, 8081), BoxPlan("a2", "site-a", "127.0.0.12", 8080, 8081),
         BoxPlan("b1", "site-b", "127.0.0.13", 8080, 8081)]


def test_a_box_fills_from_its_site_peers_then_the_origin() -> None:
    assert fetch_sources(PLANS[0], PLANS, "http://o") == [
        {"name": "a2", "url": "http://127.0.0.12:8080", "kind": "peer"},
        {"name": "origin", "url": "http://o", "kind": "origin"}]
    assert fetch_sources(PLANS[2], PLANS, "http://o") == [{"name": "origin", "url": "http://o", "kind": "origin"}]


def test_the_configs_the_lab_writes_load(tmp_path: Any) -> None:
    paths = LabPaths(str(tmp_path))
    os.makedirs(paths.control)
    with open(paths.coverage, "w") as fh:
        fh.write(coverage_csv())
    raw = control_config(PLANS, paths, port=8090, origin_url="http://127.0.0.1:9000", api_url="http://127.0.0.1:9001",
                         node_modules=str(tmp_path / "node_modules"))
    with open(paths.control_config, "w") as fh:
        yaml.safe_dump(raw, fh)
    config = load_control_config(paths.control_config)
    assert config.steering.client_ip_header == "X-OCA-Lab-Client"
    assert config.fleet.sites["site-b"].parent == "site-a"
    assert sorted(config.fleet.boxes) == ["a1", "a2", "b1"]
    assert [a.prefix for a in config.fleet.coverage] == ["127.0.1.0/24", "127.0.2.0/24", "127.0.0.0/8"]
    assert config.lab is not None and config.lab.api_url == "http://127.0.0.1:9001"
    assert os.path.isfile(os.path.join(config.lab.page_dir, "index.html"))
    os.makedirs(paths.box_dir("a1"))
    with open(paths.box_config("a1"), "w") as fh:
        yaml.safe_dump(box_config(PLANS[0], PLANS, paths, origin_url="http://o:1", control_url="http://c:2",
                                  workers=1), fh)
    box = load_box_config(paths.box_config("a1"))
    assert box.tokens.required and box.tokens.jwks_file == paths.jwks
    assert box.server.listen == ("127.0.0.11", 8080) and box.admin.token_file == paths.box_token
    assert [s.name for s in box.fetch.sources] == ["a2", "origin"]
    # every box takes firmware signed with the lab's key; the control plane checks that key at submit
    assert box.firmware.trusted_keys_file == paths.firmware_public == config.rollout.trusted_keys_file
    assert paths.firmware_key == os.path.join(str(tmp_path), "keys", "firmware.pem")


def test_placement_puts_each_title_on_the_first_rendezvous_box_of_every_site() -> None:
    sites = {"site-a": ["a1", "a2"], "site-b": ["b1"]}
    titles = [str(t) for t in range(1001, 1011)]
    placed = placement(titles, sites)
    for title in titles:
        holders = [box for box, ts in placed.items() if title in ts]
        assert holders == sorted([rendezvous_order(title, ["a1", "a2"])[0], "b1"])
    assert placed["a1"] and placed["a2"]  # ten titles spread over site A


def test_the_table_shows_objects_bytes_and_live() -> None:
    text = table(["1001", "1002"], [("a1", "site-a", True), ("b1", "site-b", False)],
                 {"a1": {"1001": TitleHolding(34, 3 << 20, True), "1002": TitleHolding(3, 1000, False)}},
                 {"1001": 34, "1002": 34})
    lines = text.splitlines()
    assert lines[0].split() == ["title", "a1", "(A)", "b1", "(B,", "down)"]
    assert lines[1].split() == ["1001", "34/34", "3.0", "MiB", "live", "-"]
    assert lines[2].split() == ["1002", "3/34", "1000", "B", "-"]


def test_a_replica_config_names_the_shared_postgresql_and_the_load_balancer(tmp_path: Any) -> None:
    paths = LabPaths(str(tmp_path))
    os.makedirs(paths.control)
    with open(paths.coverage, "w") as fh:
        fh.write(coverage_csv())
    password = str(tmp_path / "password")
    with open(password, "w") as fh:
        fh.write("secret\n")
    plan = ReplicaPlan("r2", "postgresql://oca@127.0.0.1:5999/oca", password, "http://127.0.0.1:8090")
    raw = control_config(PLANS, paths, port=40002, origin_url="http://o:1", api_url="http://a:2",
                         node_modules=str(tmp_path), replica=plan)
    with open(paths.replica_config(2), "w") as fh:
        yaml.safe_dump(raw, fh)
    config = load_control_config(paths.replica_config(2))
    assert config.listen == ("127.0.0.1", 40002) and config.replica_id() == "r2"
    assert config.replica.lease == 3.0  # a killed leader's roll-out moves within seconds in the lab
    assert config.state.url == "postgresql://oca@127.0.0.1:5999/oca" and config.state_password_file == password
    assert config.base_url() == "http://127.0.0.1:8090"  # players are sent back to HAProxy, not to this replica
    assert config.bundles_dir() == os.path.join(paths.control, "bundles")  # not /var/lib/oca-control
    # the same config but for listen and replica.id: what the README asks of production replicas too
    other = control_config(PLANS, paths, port=40001, origin_url="http://o:1", api_url="http://a:2",
                           node_modules=str(tmp_path), replica=ReplicaPlan("r1", plan.state_url, password,
                                                                           plan.public_url))
    assert {k: v for k, v in other.items() if k not in ("listen", "replica")} == {
        k: v for k, v in raw.items() if k not in ("listen", "replica")}
    # a box of a lab with replicas names every replica (oca/replicas.py)
    box = box_config(PLANS[0], PLANS, paths, origin_url="http://o:1", workers=1,
                     control_url=["http://127.0.0.1:40001", "http://127.0.0.1:40002"])
    os.makedirs(paths.box_dir("a1"))
    with open(paths.box_config("a1"), "w") as fh:
        yaml.safe_dump(box, fh)
    loaded = load_box_config(paths.box_config("a1"))
    assert list(loaded.control.url) == ["http://127.0.0.1:40001", "http://127.0.0.1:40002"]
