"""Where the shipped deploy files are, and the metric names the exporter really produces."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Metric

from firebreak.observability import PrometheusMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "firebreak.json"
RUNBOOKS = ROOT / "docs" / "runbooks"

# Metric-like names of ours in PromQL: firebreak_... or recording rules firebreak:...
NAME = re.compile(r"\bfirebreak[_:][A-Za-z0-9_:]*")

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series_names() -> set[str]:
    """Every series name a `PrometheusMetrics` exposes (counters' _total, histograms' parts)."""
    families: list[Metric] = list(PrometheusMetrics().registry.collect())
    return {f"{family.name}{suffix}" for family in families for suffix in _SUFFIXES[family.type]}


def names_in(promql: str) -> set[str]:
    """The firebreak metric and recording-rule names a PromQL expression uses."""
    return set(NAME.findall(promql))
