"""Reliability math: independent failures, retries, degradation."""

from __future__ import annotations

from typing import Any

import pytest

from firebreak.errors import ConfigError
from firebreak.resilience import Retry
from firebreak.workflow import Workflow


def star(
    n: int, *, attempts: int | None = None, optional: frozenset[int] = frozenset()
) -> Workflow:
    """A root s0 and n - 1 agents s1, s2, ... taking its output (shape does not matter here)."""
    wf = Workflow("star")
    retry = Retry(attempts=attempts) if attempts else None

    async def first(ctx: Any, data: Any) -> Any: ...

    async def leaf(ctx: Any, s0: Any) -> Any: ...

    wf.add(first, name="s0", retry=retry)
    for i in range(1, n):
        if i in optional:
            wf.add(leaf, name=f"s{i}", after=["s0"], retry=retry, critical=False, default=None)
        else:
            wf.add(leaf, name=f"s{i}", after=["s0"], retry=retry)
    return wf


def test_five_agents_at_95_percent_succeed_77_percent_of_the_time() -> None:
    r = star(5).reliability(0.95)
    assert r.success == pytest.approx(0.774, abs=0.001)
    assert r.complete == pytest.approx(r.success)
    assert r.failed == pytest.approx(1 - 0.7738, abs=0.001)


def test_retries_raise_each_agents_effective_rate() -> None:
    r = star(5, attempts=3).reliability(0.95)
    assert r.agents["s0"] == pytest.approx(1 - 0.05**3)
    assert r.success == pytest.approx((1 - 0.05**3) ** 5)
    assert r.success > 0.999


def test_retries_can_be_left_out_of_the_estimate() -> None:
    r = star(5, attempts=3).reliability(0.95, with_retries=False)
    assert r.success == pytest.approx(0.95**5)


def test_optional_agents_drop_out_of_the_success_probability() -> None:
    r = star(5, optional=frozenset({3, 4})).reliability(0.95)
    assert r.success == pytest.approx(0.95**3)
    assert r.complete == pytest.approx(0.95**5)
    assert r.degraded == pytest.approx(0.95**3 - 0.95**5)


def test_without_degradation_optional_agents_count_as_critical() -> None:
    r = star(5, optional=frozenset({3, 4})).reliability(0.95, with_degradation=False)
    assert r.success == pytest.approx(0.95**5)


def test_per_agent_rates_are_used() -> None:
    rates = {"s0": 0.5, "s1": 0.8}
    assert star(2).reliability(rates).success == pytest.approx(0.4)


def test_empty_workflow_always_succeeds() -> None:
    r = Workflow("empty").reliability(0.5)
    assert (r.success, r.complete) == (1.0, 1.0)


def test_missing_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match="s1"):
        star(2).reliability({"s0": 0.9})


def test_rate_for_unknown_agent_is_refused() -> None:
    with pytest.raises(ConfigError, match="ghost"):
        star(1).reliability({"s0": 0.9, "ghost": 0.9})


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan"), True, "0.9"])
def test_rate_outside_zero_one_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigError, match="rate"):
        star(1).reliability(bad)


def test_agent_rates_are_read_only() -> None:
    r = star(1).reliability(0.9)
    with pytest.raises(TypeError):
        r.agents["s0"] = 1.0  # type: ignore[index]
