"""configs/prometheus: `promtool check rules` on the alert rules and `promtool test rules` on their unit tests,
which make each alert fire on synthetic series (and look-alikes not fire)."""

from __future__ import annotations

import os
from typing import Any

import yaml

from tests.observability.promtool import ROOT, RULES_DIR, run

ALERTS = os.path.join(RULES_DIR, "alerts.yml")
ALERTS_TEST = os.path.join(RULES_DIR, "alerts_test.yml")
# the reference architecture's alert table (netflix-architecture.txt, "Observability Checklist") as OCA has it
RUNBOOKS = "https://github.com/oca-cdn/oca/blob/main/docs/runbooks.md"  # the repository of the systemd units' docs
REFERENCE = {"OCAStartupTimeP99High", "OCARebufferRatioHigh", "OCACacheHitRatioLow", "OCAActiveStreamsLow"}


def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in _load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules() -> None:
    result = run("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = run("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_shown_firing_and_the_reference_table_is_covered() -> None:
    rules = alert_rules()
    assert set(rules) >= REFERENCE
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in _load(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", ()):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == set(rules), f"alerts never shown firing: {sorted(set(rules) - fired)}"
    assert quiet >= REFERENCE  # each reference alert also has a look-alike that must not fire
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name



def test_every_alert_has_a_runbook_section() -> None:
    with open(os.path.join(ROOT, "docs", "runbooks.md"), encoding="utf-8") as fh:
        sections = {line[3:].strip() for line in fh if line.startswith("## ")}
    rules = alert_rules()
    assert sections == set(rules)
    for name, rule in rules.items():
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOKS}#{name.lower()}", name


def test_licence_latency_is_said_not_to_apply() -> None:
    with open(ALERTS, encoding="utf-8") as fh:
        text = fh.read()
    assert "License latency" in text and "not applicable" in text
