"""Alerts and the dashboard as code: the alert rules (deploy/prometheus/alerts.yml) are valid
and each fires on its fault and not on a healthy platform (`promtool test rules`); every query
of the Grafana dashboard (deploy/grafana/paymesh.json) is valid PromQL.
tests/integration/test_metrics.py checks that the metrics they name are the ones the services
export."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "paymesh.json"


def _promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is installed by `make test` (Debian's prometheus)")
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_the_rules_are_valid() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_on_its_fault_and_not_when_healthy() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_metrics() -> set[str]:
    """Every metric an alert's expression or a dashboard query names."""
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {
        name
        for expression in [*expressions, *dashboard_queries()]
        for name in re.findall(r"\bpaymesh_[a-z_]+", expression)
    }


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert queries
    # promtool parses queries as it checks rules: each query becomes a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"paymesh:dashboard_query_{n}", "expr": q}
                    for n, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    checked = _promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum(("}]}]})
    )
    assert _promtool("check", "rules", "bad.yml", cwd=tmp_path).returncode != 0


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


def test_the_prometheus_rule_is_generated_from_the_rules_and_fresh() -> None:
    # deploy/kubernetes/monitoring/prometheus-rule.yaml: `make gen` writes it (tools/).
    tool = RULES.parents[1] / "tools" / "prometheus_rule.py"
    spec = importlib.util.spec_from_file_location("prometheus_rule", tool)
    assert spec is not None and spec.loader is not None
    prometheus_rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prometheus_rule)
    assert prometheus_rule.OUT.read_text() == prometheus_rule.render(), "run `make gen`"
    rule = yaml.safe_load(prometheus_rule.OUT.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    kustomization = yaml.safe_load((prometheus_rule.OUT.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [prometheus_rule.OUT.name]
