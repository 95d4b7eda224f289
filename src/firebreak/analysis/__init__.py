"""Layer 8: production checks of a workflow and its deployment, and failure analysis.

`check` lints a workflow against the production checklist (rules ``FB001`` ...; see
`firebreak.analysis.rules`); `analyze` gives each agent's blast radius and the run's
success estimate with and without retries and degradation. The CLI commands are
``firebreak check MODULE:WORKFLOW`` and ``firebreak analyze MODULE:WORKFLOW``.

>>> from firebreak.analysis import DeploymentConfig, check
>>> report = check(wf, DeploymentConfig(store="postgresql://db/x", metrics="prometheus",
...                                       dlq="store"))
>>> report.ok
True
"""

from __future__ import annotations

from firebreak.analysis.analyze import Analysis, Estimate, analyze, load_rates
from firebreak.analysis.check import CheckReport, check
from firebreak.analysis.config import CONFIG_FILE, DeploymentConfig, load_config
from firebreak.analysis.markers import calls_service, moves_money
from firebreak.analysis.rules import RULES, Finding, Rule, Severity, error_types, kebab

__all__ = [
    "CONFIG_FILE",
    "RULES",
    "Analysis",
    "CheckReport",
    "DeploymentConfig",
    "Estimate",
    "Finding",
    "Rule",
    "Severity",
    "analyze",
    "calls_service",
    "check",
    "error_types",
    "kebab",
    "load_config",
    "load_rates",
    "moves_money",
]
