"""`check`: run every production rule over a workflow and its deployment config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from firebreak.analysis.config import DeploymentConfig
from firebreak.analysis.rules import RULES, Finding, Severity
from firebreak.workflow import Workflow

__all__ = ["CheckReport", "check"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    """What `check` found, errors first."""

    workflow: str
    """The workflow's name."""
    findings: tuple[Finding, ...]
    """Every finding, errors before warnings, then by code and agent."""

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Findings of severity error."""
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Findings of severity warning."""
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        """Whether nothing of severity error was found."""
        return not self.errors

    def codes(self) -> set[str]:
        """The codes of the rules that found something."""
        return {f.code for f in self.findings}

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "workflow": self.workflow,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.as_dict() for f in self.findings],
        }


def check(
    workflow: Workflow,
    config: DeploymentConfig | None = None,
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> CheckReport:
    """Check `workflow` deployed as `config` against the production checklist.

    Example:
        >>> report = check(wf, DeploymentConfig(store="memory://"))
        >>> [f.code for f in report.errors]
        ['FB006', 'FB008', 'FB009']

    Args:
        workflow: the workflow.
        config: its deployment (default: nothing configured).
        select: only these rule codes (default: all).
        ignore: not these rule codes (added to the config's ``[check] ignore``).
    """
    config = config or DeploymentConfig()
    chosen = None if select is None else {code.upper() for code in select}
    skipped = {code.upper() for code in ignore} | config.ignore
    found: list[Finding] = []
    for rule in RULES:
        if (chosen is not None and rule.code not in chosen) or rule.code in skipped:
            continue
        found.extend(rule.check(rule, workflow, config))
    order = {Severity.ERROR: 0, Severity.WARNING: 1}
    found.sort(key=lambda f: (order[f.severity], f.code, f.agent or ""))
    return CheckReport(workflow=workflow.name, findings=tuple(found))
