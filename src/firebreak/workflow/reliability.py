"""End-to-end success probability of a workflow from per-agent success rates.

The model assumes every attempt of every agent fails independently of all others, with
the agent's rate as its success probability. Real failures are often correlated (a
provider outage fails every retry), so read the figures as an upper bound that shows
which patterns matter, not as a promise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from firebreak.errors import ConfigError
from firebreak.workflow.spec import AgentSpec

__all__ = ["Reliability", "estimate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reliability:
    """Estimated outcome probabilities of one run (see `estimate`).

    Example:
        >>> r = Reliability(success=0.9, complete=0.8, agents={})
        >>> round(r.degraded, 3), round(r.failed, 3)
        (0.1, 0.1)
    """

    success: float
    """Probability the run does not fail: every critical agent succeeds."""
    complete: float
    """Probability the run succeeds with no agent degraded: every agent succeeds."""
    agents: Mapping[str, float] = field(hash=False)
    """Effective success probability of each agent, retries included when counted."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", MappingProxyType(dict(self.agents)))

    @property
    def failed(self) -> float:
        """Probability the run fails."""
        return 1.0 - self.success

    @property
    def degraded(self) -> float:
        """Probability the run succeeds but at least one optional agent degraded."""
        return self.success - self.complete


def _check_rate(name: str, rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise ConfigError("rates", f"rate of {name!r} must be a number in [0, 1], got {rate!r}")
    return float(rate)


def estimate(
    specs: Iterable[AgentSpec],
    rates: Mapping[str, float] | float,
    *,
    with_retries: bool = True,
    with_degradation: bool = True,
) -> Reliability:
    """Estimate a run's outcome probabilities from each agent's success rate.

    Failures are assumed independent (see the module docstring). An agent with success
    rate ``p`` and a retry policy of ``n`` attempts succeeds with ``1 - (1 - p) ** n``;
    fallbacks are not counted (their rates are unknown), so the estimate is conservative
    there. The run succeeds when every critical agent does; optional agents degrade
    instead of failing the run, so they only lower `Reliability.complete`.

    Example:
        5 agents at 95% each, no resilience patterns: ``0.95 ** 5 ~= 0.774``.

    Args:
        specs: the agents (e.g. ``wf.agents.values()``).
        rates: one success rate for every agent, or a rate per agent name (all of them).
        with_retries: count each agent's retry attempts.
        with_degradation: let optional agents degrade; if false every agent is critical.

    Raises:
        ConfigError: a rate is missing, outside [0, 1], or names no agent.
    """
    specs = list(specs)
    names = {spec.name for spec in specs}
    if isinstance(rates, Mapping):
        if missing := sorted(names - rates.keys()):
            raise ConfigError("rates", f"no success rate for agents {missing}")
        if unknown := sorted(set(rates) - names):
            raise ConfigError("rates", f"rates given for unknown agents {unknown}")
        base = {spec.name: _check_rate(spec.name, rates[spec.name]) for spec in specs}
    else:
        rate = _check_rate("every agent", rates)
        base = dict.fromkeys(names, rate)
    effective: dict[str, float] = {}
    for spec in specs:
        p = base[spec.name]
        attempts = spec.retry.attempts if with_retries and spec.retry is not None else 1
        effective[spec.name] = 1.0 - (1.0 - p) ** attempts
    complete = math.prod(effective.values())
    success = math.prod(
        effective[spec.name] for spec in specs if spec.critical or not with_degradation
    )
    return Reliability(success=success, complete=complete, agents=effective)
