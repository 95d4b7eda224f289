"""Workflow definition: a DAG of async agents, checked when it is defined.

Nothing here runs anything; the engine does. This layer says what the agents are, how
they depend on each other, and what a failure of each one would mean.

Parameter convention (checked when an agent is defined):

* the first parameter is the context, passed positionally, under any name;
* a **root agent** (no ``after=``) takes exactly one more parameter, under any name,
  which receives the run input: ``async def extract(ctx, invoice: dict) -> X``;
* an agent **with dependencies** takes, after the context, one parameter per dependency,
  named exactly as that dependency, which receives its output (or its default when it
  degraded), plus optionally a parameter named ``input`` for the run input:
  ``async def validate(ctx, extract: X, input: dict) -> Y``;
* everything after the context is passed by keyword (so may be keyword-only, not
  positional-only); ``*args``/``**kwargs`` are refused; no agent may be named ``input``.
  `AgentSpec.call_kwargs` builds the arguments: ``await spec.fn(ctx, **kwargs)``.

Dependencies are explicit (``after=``), and with `Workflow.agent`/`Workflow.add` they
must already be defined, so a workflow is valid at every moment and cannot hold a cycle.
`Workflow.from_specs` accepts specs in any order and reports a cycle if there is one.

Example:
    >>> wf = Workflow("invoice", deadline=300)
    >>> @wf.agent(timeout=30)
    ... async def extract(ctx, invoice): ...
    >>> @wf.agent(after=[extract], critical=False, default=None)
    ... async def match_po(ctx, extract): ...
    >>> @wf.agent(after=[extract, match_po])
    ... async def post(ctx, extract, match_po): ...
    >>> wf.blast_radius(match_po).degraded_inputs
    ('post',)
    >>> round(wf.reliability(0.95, with_degradation=False).success, 3)
    0.857
"""

from __future__ import annotations

from firebreak.workflow.graph import BlastRadius, Workflow
from firebreak.workflow.reliability import Reliability, estimate
from firebreak.workflow.spec import (
    MISSING,
    AgentDefaults,
    AgentFn,
    AgentOptions,
    AgentRef,
    AgentSpec,
    OnExhausted,
)

__all__ = [
    "MISSING",
    "AgentDefaults",
    "AgentFn",
    "AgentOptions",
    "AgentRef",
    "AgentSpec",
    "BlastRadius",
    "OnExhausted",
    "Reliability",
    "Workflow",
    "estimate",
]
