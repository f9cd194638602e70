"""configs/grafana: every panel of the box and fleet dashboards (and every alert rule) reads only metrics that a
real box and a real control plane export, with labels they carry; every query parses (promtool).

The names come from scraping: a box (master + 2 workers) that served hits, a miss-free CMCD request and a
prefetch, and the control plane in process after a session; a family with no sample yet still counts (its
`# TYPE` line is there), its labels are checked once it has samples.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import Box
from tests.observability.conftest import OPERATOR, Lab
from tests.observability.exposition import exported, metric_names, selector_labels
from tests.observability.promtool import ROOT, run

DASHBOARDS = [os.path.join(ROOT, "configs", "grafana", name) for name in ("box.json", "fleet.json")]
ALERTS = os.path.join(ROOT, "configs", "prometheus", "alerts.yml")
# what Grafana puts in place of its variables before the query reaches Prometheus
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h", "$instance": ".+"}
TARGET_LABELS = {"instance", "job"}  # Prometheus adds them to every series it scrapes


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        board: dict[str, Any] = json.load(fh)
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())  # a collapsed row holds its panels


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(board):
        for target in panel.get("targets", ()):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def alert_queries() -> Iterator[tuple[str, str]]:
    with open(ALERTS, encoding="utf-8") as fh:
        for group in yaml.safe_load(fh)["groups"]:
            for rule in group["rules"]:
                yield f"alert {rule['alert']}", rule["expr"]


@pytest.fixture
def scraped(box_factory: Callable[..., Box]) -> dict[str, set[str]]:
    """Series names the box exports, with the labels seen on them."""
    key = "titles/5/720p/seg_0.m4s"
    box = box_factory({key: os.urandom(10_000)})
    box.get("/" + key)
    cmcd = urllib.parse.quote('su,bl=800,br=2000,d=4000,ot=v,sid="x1"', safe="")
    box.get(f"/{key}?CMCD={cmcd}")
    box.admin("/prefetch", "POST", {"items": [key]})  # present already: a finished item, no upstream needed
    names: dict[str, set[str]] = {}
    for _ in range(50):
        names = exported(box.admin("/metrics"))
        if names.get("oca_player_requests_total") and names.get("oca_prefetch_items_total"):
            break
        time.sleep(0.05)  # workers report every access_flush_interval
    return names


async def control_names(lab: Lab) -> dict[str, set[str]]:
    assert (await lab.client.get("/v1/play/42/master.m3u8")).status == 200
    answer = await lab.client.post("/v1/invalidations", json={"scope": "key", "value": "titles/42/a.m4s",
                                                              "wait": 5}, headers=OPERATOR)
    assert answer.status == 201
    return exported(await lab.metrics())


def test_dashboards_are_grafana_dashboards() -> None:
    for path in DASHBOARDS:
        board = load(path)
        assert board["schemaVersion"] >= 39 and board["uid"] and board["title"], path
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], f"{path}: panel {panel['title']!r} has no query"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]


async def test_every_query_reads_metrics_the_box_and_control_plane_export(
        scraped: dict[str, set[str]], lab: Lab) -> None:
    names = {**scraped, **(await control_names(lab))}
    assert "oca_player_startup_seconds_bucket" in names and "oca_control_box_up" in names
    problems = []
    everything = [(os.path.basename(p), where, expr) for p in DASHBOARDS for where, expr in queries(load(p))]
    everything += [("alerts.yml", where, expr) for where, expr in alert_queries()]
    for source, where, expr in everything:
        used = metric_names(expr)
        if not used:
            problems.append(f"{source} {where}: reads no oca_ metric: {expr}")
        for name in sorted(used - set(names)):
            problems.append(f"{source} {where}: {name} is not exported")
        for name, labels in selector_labels(expr):
            known = names.get(name)
            missing = labels - TARGET_LABELS - (known or set())
            if known and missing:
                problems.append(f"{source} {where}: {name} has no label {sorted(missing)} (has {sorted(known)})")
    assert not problems, "\n".join(problems)


def test_every_dashboard_query_parses(tmp_path: Any) -> None:
    rules: list[dict[str, str]] = []
    for path in DASHBOARDS:
        for where, expr in queries(load(path)):
            if where.startswith("variable"):
                continue  # label_values() is Grafana's, not PromQL
            for variable, stand_in in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, stand_in)
            assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
            rules.append({"record": f"dashboard:query_{len(rules)}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run("check", "rules", str(path), cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"SUCCESS: {len(rules)} rules found", result.stdout), result.stdout
