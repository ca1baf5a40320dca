"""Renders deploy/prometheus/alerts.yml as a Prometheus Operator `PrometheusRule`.

`make gen` writes deploy/kubernetes/monitoring/prometheus-rule.yaml with it; a unit test fails
when that file is stale. The rules themselves are written once, in alerts.yml, where promtool
checks and tests them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
OUT = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheus-rule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/alerts.yml by tools/prometheus_rule.py (`make gen`);"
    " do not edit.\n"
)


def render() -> str:
    """The PrometheusRule document, as text."""
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text())
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "paymesh-alerts",
            "labels": {"app.kubernetes.io/part-of": "paymesh"},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100)


def main() -> None:
    """Writes the file (or the path given)."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(render())
    sys.stdout.write(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}\n")


if __name__ == "__main__":
    main()
