"""`analyze`: what each agent's failure does to a run, and how often runs succeed.

Blast radius per agent (`Workflow.blast_radius`) and the end-to-end success estimate
(`Workflow.reliability`) with and without the configured retries and degradation, from
per-agent success rates (one rate for all, or a file of rates per agent).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firebreak.errors import ConfigError
from firebreak.workflow import BlastRadius, Reliability, Workflow

__all__ = ["Analysis", "Estimate", "analyze", "load_rates"]

DEFAULT_RATE = 0.95
"""Per-attempt success rate of every agent when no rates are given."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """One end-to-end estimate: which patterns it counts and what it gives."""

    label: str
    """``bare``, ``retries``, ``degradation`` or ``both``."""
    with_retries: bool
    """Whether the configured retry attempts are counted."""
    with_degradation: bool
    """Whether optional agents degrade instead of failing the run."""
    reliability: Reliability
    """The estimate itself."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        r = self.reliability
        return {
            "label": self.label,
            "with_retries": self.with_retries,
            "with_degradation": self.with_degradation,
            "success": r.success,
            "complete": r.complete,
            "degraded": r.degraded,
            "failed": r.failed,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """Blast radius of each agent and the success estimates of a workflow."""

    workflow: str
    """The workflow's name."""
    rates: Mapping[str, float]
    """The per-attempt success rate used for each agent."""
    blast: tuple[BlastRadius, ...]
    """Blast radius of every agent, in topological order."""
    estimates: tuple[Estimate, ...] = field(default=())
    """Bare, retries only, degradation only, both (the workflow as configured)."""

    def estimate(self, label: str) -> Estimate:
        """The estimate called `label`."""
        return next(e for e in self.estimates if e.label == label)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "workflow": self.workflow,
            "rates": dict(self.rates),
            "blast_radius": [
                {
                    "agent": b.agent,
                    "fails_run": b.fails_run,
                    "skipped": list(b.skipped),
                    "degraded": list(b.degraded),
                    "degraded_inputs": list(b.degraded_inputs),
                }
                for b in self.blast
            ],
            "estimates": [e.as_dict() for e in self.estimates],
        }


def load_rates(path: Path) -> float | dict[str, float]:
    """Read success rates from a JSON, TOML or YAML file: a number, or a table by agent.

    A table may give ``default`` for the agents it does not name.

    Raises:
        ConfigError: unreadable, or not a number / table of numbers.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("rates", f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 - optional extra (chaos), needed only for YAML

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parser's error is the same mistake
        raise ConfigError("rates", f"{path}: cannot parse: {exc}") from None
    if isinstance(data, Mapping) and isinstance(data.get("rates"), Mapping):
        data = data["rates"]
    if isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if not isinstance(data, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    ):
        raise ConfigError("rates", f"{path}: expected a number or a table of agent: rate")
    return {str(k): float(v) for k, v in data.items()}


def _per_agent(workflow: Workflow, rates: float | Mapping[str, float]) -> dict[str, float]:
    if not isinstance(rates, Mapping):
        return dict.fromkeys(workflow.agents, float(rates))
    default = rates.get("default")
    if unknown := sorted(set(rates) - set(workflow.agents) - {"default"}):
        raise ConfigError("rates", f"rates given for unknown agents {unknown}")
    out: dict[str, float] = {}
    for name in workflow.agents:
        rate = rates.get(name, default)
        if rate is None:
            raise ConfigError("rates", f"no success rate for agent {name!r} (or give default)")
        out[name] = rate
    return out


def analyze(workflow: Workflow, rates: float | Mapping[str, float] = DEFAULT_RATE) -> Analysis:
    """Blast radius of every agent and success estimates of `workflow`.

    Example:
        >>> a = analyze(wf, 0.95)
        >>> a.estimate("bare").reliability.success < a.estimate("both").reliability.success
        True
    """
    per_agent = _per_agent(workflow, rates)
    estimates = tuple(
        Estimate(
            label=label,
            with_retries=retries,
            with_degradation=degradation,
            reliability=workflow.reliability(
                per_agent, with_retries=retries, with_degradation=degradation
            ),
        )
        for label, retries, degradation in (
            ("bare", False, False),
            ("retries", True, False),
            ("degradation", False, True),
            ("both", True, True),
        )
    )
    return Analysis(
        workflow=workflow.name,
        rates=per_agent,
        blast=tuple(workflow.blast_radius(name) for name in workflow.agents),
        estimates=estimates,
    )
