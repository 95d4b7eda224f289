"""What the scenarios run against: a workflow builder, its inputs, and what it lacks.

A `Target` builds its workflow on the scenario's clock, so a workflow whose services
sleep (a simulation) runs on virtual time too. `invoices` is the invoice example
(`firebreak.demos.invoice_agents`) with its background faults off, so only the injected
faults act; `of_workflow` makes a target of any workflow. On virtual time its agents must
not wait on real time (a sleep, a real call: each would time out at once as the clock
jumps ahead); a real workflow runs with ``real_time=True`` (``--real-time``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firebreak.chaos.inject import corrupt_value
from firebreak.clock import Clock
from firebreak.demos.invoice_agents import check_invoice
from firebreak.errors import ConfigError
from firebreak.workflow import Workflow

__all__ = ["Target", "check_invoice", "invoices", "of_workflow"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A workflow to put under chaos, with its inputs and scenario defaults."""

    name: str
    """For reports."""
    build: Callable[[Clock], Workflow]
    """The workflow, built on the given clock."""
    make_input: Callable[[int], Any]
    """Input of run number ``i``."""
    corrupt: Callable[[Any, random.Random], Any] = corrupt_value
    """A corrupted copy of an input (corrupted-data scenario)."""
    input_schema: Callable[[Any], Any] | None = None
    """Input schema to use when the workflow declares none."""
    timeout_agent: str | None = None
    """The agent the agent-timeout scenario slows (default: the first with a breaker)."""
    outage_agent: str | None = None
    """The agent the outage scenario takes down (default: the last with a breaker)."""
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    """Per scenario, per agent: options the workflow lacks for that scenario."""
    ref: str | None = None
    """``MODULE:ATTR`` a child process imports to rebuild the workflow: a `Target`, a
    function returning one (called with `ref_kwargs`), or a `Workflow`. The process
    scenarios (``orchestrator-kill``, ``worker-kill``) need it; inputs are passed as data."""
    ref_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of the function `ref` names (JSON data)."""


def of_workflow(
    workflow: Workflow,
    inputs: list[Any],
    *,
    overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    ref: str | None = None,
) -> Target:
    """A target of a ready-made workflow; run ``i`` takes ``inputs[i % len(inputs)]``.

    `ref` (``MODULE:ATTR`` of the workflow) lets the process scenarios rebuild it in a
    child process.
    """
    if not inputs:
        raise ConfigError("inputs", "a chaos target needs at least one input")
    return Target(
        name=workflow.name,
        build=lambda _clock: workflow,
        make_input=lambda i: inputs[i % len(inputs)],
        overrides=overrides or {},
        ref=ref,
    )


def invoices(seed: int = 7) -> Target:
    """The invoice example on a clean simulated world: only injected faults act.

    Its scenario overrides stand in for configuration the example lacks (listed in
    every report): the outage scenario pauses ``archive`` (the example fails the run),
    the saturation scenario gives every agent a bulkhead (the example has none).
    """
    from firebreak.demos.invoice_agents import (  # noqa: PLC0415 - the demo is optional
        FaultRates,
        InvoiceWorld,
        build_workflow,
    )

    clean = FaultRates(**dict.fromkeys(FaultRates.__dataclass_fields__, 0.0))
    sample = InvoiceWorld(seed, rates=clean)

    def build(clock: Clock) -> Workflow:
        return build_workflow(InvoiceWorld(seed, clock=clock, rates=clean), protected=True)

    bulkheads = {
        name: {"bulkhead": 20}
        for name in ("extract", "validate", "match_po", "post_entry", "archive")
    }
    return Target(
        name="invoices",
        build=build,
        make_input=sample.invoice,
        input_schema=check_invoice,
        timeout_agent="extract",
        outage_agent="archive",
        overrides={
            "agent-outage": {"archive": {"on_exhausted": "pause"}},
            "saturation": bulkheads,
        },
        ref="firebreak.chaos.targets:invoices",
        ref_kwargs={"seed": seed},
    )
