"""The alert rules (deploy/prometheus/alerts.yml): valid, each fires on its fault and not on a
healthy platform (`promtool test rules`). tests/integration/test_metrics.py checks that the
metrics they name are the ones the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is installed by `make test` (Debian's prometheus)")
    return subprocess.run([promtool, *args], cwd=RULES, capture_output=True, text=True, check=False)


def test_the_rules_are_valid() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_on_its_fault_and_not_when_healthy() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def alert_metrics() -> set[str]:
    """Every metric an alert's expression names."""
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    return {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bpaymesh_[a-z_]+", rule["expr"])
    }


def test_every_alert_is_tested() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == set(alerts), "every alert has a test in which it fires"
    for name, rule in alerts.items():
        assert re.search(r"\bpaymesh_[a-z_]+", rule["expr"]), name
        assert rule["labels"]["severity"] in {"page", "ticket"}
