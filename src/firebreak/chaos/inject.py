"""Fault injection: a copy of a workflow whose agents pass through the faults first.

`inject` wraps each agent's function (and, when a fault says so, its fallbacks) in a
function with the same signature that looks up the faults hitting this attempt; the
copy is an ordinary `Workflow`, run by an ordinary `Engine`. `AuditingExecutor` wraps
the engine's executor to count steps that run again after they were committed (a
duplicated side effect: must never happen).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firebreak.chaos.faults import ChaosPermanent, ChaosTransient, Fault, ServiceDown
from firebreak.clock import Clock
from firebreak.engine import Context, Executor, StepCall, StepOutcome
from firebreak.store import CheckpointStore
from firebreak.workflow import AgentSpec, Workflow

__all__ = ["AuditingExecutor", "Injector", "corrupt_value", "inject"]

_OPTIONS = (
    "timeout",
    "retry",
    "breaker",
    "bulkhead",
    "critical",
    "compensate",
    "validate",
    "on_exhausted",
)


def corrupt_value(value: Any, rng: random.Random) -> Any:
    """A mangled copy of `value`: a field dropped, nulled or turned to garbage."""
    if isinstance(value, Mapping) and value:
        out = dict(value)
        key = rng.choice(sorted(out, key=str))
        how = rng.randrange(3)
        if how == 0:
            del out[key]
        elif how == 1:
            out[key] = None
        else:
            out[key] = "\x00garbage\ufffd"
        return out
    if isinstance(value, list) and value:
        return value[: rng.randrange(len(value))]
    if isinstance(value, str):
        return value[::-1] + "\ufffd"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return -value - 1
    return None


@dataclass(slots=True)
class Injector:
    """The faults of one scenario, their seed and clock, and what they did."""

    faults: tuple[Fault, ...]
    """The faults."""
    seed: int
    """Seed of every draw."""
    clock: Clock
    """The engine's clock: fault windows are measured on it."""
    start: float = 0.0
    """Clock time the scenario started (fault windows are relative to it)."""
    injected: Counter[str] = field(default_factory=Counter)
    """Faults applied, by `Fault.label`."""
    hits: list[tuple[float, str]] = field(default_factory=list)
    """(clock time, agent) of every fault applied, contention excepted."""
    _active: Counter[str] = field(default_factory=Counter)

    def _hits(self, fault: Fault, index: int, ctx: Context) -> bool:
        if not fault.active(self.clock.now() - self.start):
            return False
        if fault.probability >= 1.0:
            return True
        draw = random.Random(f"{self.seed}/{index}/{ctx.run_id}/{ctx.agent}/{ctx.attempt}")
        return draw.random() < fault.probability

    def wrap(
        self, fn: Callable[..., Awaitable[Any]], faults: list[tuple[int, Fault]], key: str
    ) -> Callable[..., Awaitable[Any]]:
        """`fn` behind `faults` (with their indexes); `key` names the contention counter."""
        if not faults:
            return fn

        @functools.wraps(fn)
        async def chaotic(ctx: Context, /, **kwargs: Any) -> Any:
            corrupt: random.Random | None = None
            contended = False
            try:
                for index, fault in faults:
                    if not self._hits(fault, index, ctx):
                        continue
                    kind = fault.kind
                    if kind == "contention":
                        self._active[key] += 1
                        contended = True
                        excess = self._active[key] - fault.capacity
                        if excess > 0:
                            self.injected[fault.label] += 1
                            await self.clock.sleep(fault.delay * excess)
                        continue
                    self.injected[fault.label] += 1
                    self.hits.append((self.clock.now(), ctx.agent))
                    if kind == "latency":
                        await self.clock.sleep(fault.delay)
                    elif kind == "timeout":
                        await self.clock.sleep(fault.delay)
                        raise ChaosTransient(f"chaos: {ctx.agent} hung {fault.delay:g}s")
                    elif kind == "error":
                        error = ChaosTransient if fault.error == "transient" else ChaosPermanent
                        raise error(f"chaos: injected {fault.error} error in {ctx.agent}")
                    elif kind == "outage":
                        raise ServiceDown(f"chaos: {fault.service or ctx.agent} is down")
                    else:  # corrupt
                        corrupt = random.Random(f"{self.seed}/{index}/{ctx.run_id}/{ctx.agent}")
                output = await fn(ctx, **kwargs)
            finally:
                if contended:
                    self._active[key] -= 1
            return output if corrupt is None else corrupt_value(output, corrupt)

        return chaotic


def _options(spec: AgentSpec) -> dict[str, Any]:
    options: dict[str, Any] = {name: getattr(spec, name) for name in _OPTIONS}
    options["name"] = spec.name
    options["after"] = list(spec.after)
    options["fallbacks"] = list(spec.fallbacks)
    if spec.has_default:
        options["default"] = spec.default
    return options


def inject(
    workflow: Workflow,
    injector: Injector | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    input_schema: Callable[[Any], Any] | None = None,
    around: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]] | None = None,
) -> Workflow:
    """A copy of `workflow` with `injector`'s faults in front of its agents.

    Args:
        workflow: the workflow (left unchanged).
        injector: the faults; ``None``: none (a plain copy, e.g. with overrides).
        overrides: per agent, options to set on the copy (``{"archive": {"bulkhead": 20}}``)
            — a scenario's stand-in for configuration the workflow lacks; reports list them.
        input_schema: an input schema for the copy when the workflow has none.
        around: wraps every agent function and fallback outside the faults (an audit,
            e.g. the side-effect ledger of the process scenarios).
    """
    overrides = overrides or {}
    if unknown := sorted(set(overrides) - set(workflow.agents)):
        raise KeyError(f"workflow {workflow.name!r} has no agents {unknown}")
    copy = Workflow(
        workflow.name,
        deadline=workflow.deadline,
        defaults=workflow.defaults,
        input=workflow.input_schema or input_schema,
    )
    for spec in workflow:
        options = _options(spec) | dict(overrides.get(spec.name, {}))
        fn = spec.fn
        if injector is not None:
            hits = [
                (i, f)
                for i, f in enumerate(injector.faults)
                if f.targets(spec.name, options.get("breaker"))
            ]
            key = spec.breaker or spec.name
            fn = injector.wrap(fn, hits, key)
            fallback_hits = [(i, f) for i, f in hits if f.fallbacks]
            options["fallbacks"] = [
                injector.wrap(alt, fallback_hits, key) for alt in options["fallbacks"]
            ]
        if around is not None:
            fn = around(fn)
            options["fallbacks"] = [around(alt) for alt in options["fallbacks"]]
        copy.add(fn, **options)
    return copy


class AuditingExecutor:
    """An executor that counts steps started again although already committed.

    The engine never runs a committed step again; a count above zero here is a bug
    (a duplicated side effect). Costs one store read per step.
    """

    def __init__(self, inner: Executor, store: CheckpointStore) -> None:
        self.inner = inner
        self.store = store
        self.duplicated: list[tuple[str, str]] = []
        """(run, agent) of every step that ran after its result was committed."""
        self.executions: Counter[tuple[str, str]] = Counter()
        """Executions per (run, agent)."""

    async def execute(self, call: StepCall) -> StepOutcome:
        """Check the store, then run the step with the inner executor."""
        key = (call.run_id, call.spec.name)
        committed = await self.store.get_steps(call.run_id)
        rec = committed.get(call.spec.name)
        if rec is not None and rec.status.value in ("succeeded", "degraded"):
            self.duplicated.append(key)
        self.executions[key] += 1
        return await self.inner.execute(call)


def uncovered(faults: Iterable[Fault], workflow: Workflow) -> list[str]:
    """Labels of faults that hit no agent of `workflow` (a typo in a fault file)."""
    return [
        f.label
        for f in faults
        if f.kind != "kill" and not any(f.targets(s.name, s.breaker) for s in workflow)
    ]
