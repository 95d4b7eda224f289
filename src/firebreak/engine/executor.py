"""Running one step: the resilience pipeline around an agent, behind a small interface.

The orchestrator hands each ready step to an `Executor` and gets a `StepOutcome` back.
`LocalExecutor` runs the agent in this process; a bus executor (another release) sends
the same `StepCall` to worker processes, which run it with the very same pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from firebreak.clock import Clock, system_clock
from firebreak.engine.codec import validate_output
from firebreak.engine.context import Context, SharedState
from firebreak.errors import (
    CircuitOpenError,
    DeadlineExceeded,
    FallbackExhausted,
    InvalidOutput,
    NeedsHuman,
    Rejected,
    StateConflict,
)
from firebreak.events import FallbackUsed, StepAttempted, emit
from firebreak.resilience import (
    BreakerRegistry,
    Bulkhead,
    Deadline,
    Retry,
    Timeout,
    breakers,
    current_deadline,
    is_transient,
    retry_info,
)
from firebreak.store import CheckpointStore
from firebreak.workflow import AgentSpec

__all__ = ["Executor", "LocalExecutor", "StepCall", "StepOutcome"]

# Retries of a lost compare-and-set on shared state: innermost, quick, always on.
_CONFLICT_RETRY = Retry(attempts=5, base=0.005, cap=0.05, on=StateConflict, name="state-conflict")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCall:
    """Everything needed to run one step of one run, wherever it runs."""

    workflow: str
    """The workflow's name."""
    spec: AgentSpec
    """The agent."""
    run_id: str
    """The run."""
    run_input: Any
    """The run's input."""
    inputs: dict[str, Any]
    """Keyword arguments after the context (dependency outputs, maybe the run input)."""
    degraded: dict[str, str] = field(default_factory=dict)
    """Dependencies that degraded, with the reason."""
    deadline: float | None = None
    """The run's deadline on the executor's monotonic clock."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    """How a step ended in the executor (before the orchestrator commits it)."""

    status: Literal["succeeded", "failed", "needs_human"]
    """Succeeded with `output`, failed with `error`, or raised `NeedsHuman`."""
    output: Any = None
    """The validated output (succeeded only)."""
    attempts: int = 0
    """Attempts made, fallbacks included."""
    error: BaseException | None = None
    """The final error (failed or needs_human)."""
    transient: bool = False
    """Whether the failure looks like an outage that may pass (a pause can wait it out)."""
    retry_after: float | None = None
    """Seconds the service asked to wait, or until an open breaker lets a probe through."""
    fallback_used: bool = False
    """Whether a fallback produced the output."""


class Executor(Protocol):
    """Runs one step and reports how it ended; never raises for an agent's failure."""

    async def execute(self, call: StepCall) -> StepOutcome:
        """Run the step's pipeline around its agent."""
        ...


def _outcome_name(exc: BaseException) -> Literal["error", "invalid", "timeout", "rejected"]:
    if isinstance(exc, InvalidOutput):
        return "invalid"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, Rejected):
        return "rejected"
    return "error"


class LocalExecutor:
    """Runs steps in this process with the full pipeline of each agent.

    Per agent: fallbacks → bulkhead → run deadline → retry → circuit breaker (shared per
    service through `registry`) → attempt timeout → the agent, then output validation.
    Invalid output is not retried with the same call; the fallbacks run instead.
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        registry: BreakerRegistry = breakers,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self._bulkheads: dict[tuple[str, str], Bulkhead] = {}
        self._retries: dict[int, Retry] = {}

    def _bulkhead(self, workflow: str, spec: AgentSpec) -> Bulkhead | None:
        if spec.bulkhead is None:
            return None
        key = (workflow, spec.name)
        bulkhead = self._bulkheads.get(key)
        if bulkhead is None:
            bulkhead = Bulkhead(f"{workflow}/{spec.name}", limit=spec.bulkhead, clock=self.clock)
            self._bulkheads[key] = bulkhead
        return bulkhead

    def _retry(self, spec: AgentSpec) -> Retry | None:
        """The agent's retry policy, on this executor's clock."""
        retry = spec.retry
        if retry is None or retry.clock is self.clock:
            return retry
        mine = self._retries.get(id(retry))
        if mine is None:
            mine = self._retries[id(retry)] = dataclasses.replace(retry, clock=self.clock)
        return mine

    async def execute(self, call: StepCall) -> StepOutcome:
        """Run the step; every failure becomes a `StepOutcome`, never an exception."""
        spec = call.spec
        run = _StepRun(call, SharedState(self.store, call.run_id), self.clock)
        primary = run.guarded(spec.fn)
        if spec.breaker is not None:
            primary = functools.partial(self.registry.get(spec.breaker).call, primary)
        retry = self._retry(spec)
        if retry is not None:
            primary = functools.partial(retry.call, primary)
        step = functools.partial(run.chain, primary, [run.guarded(fn) for fn in spec.fallbacks])
        if call.deadline is not None:
            step = functools.partial(self._within, call.deadline, step)
        bulkhead = self._bulkhead(call.workflow, spec)
        if bulkhead is not None:
            step = functools.partial(bulkhead.call, step)
        try:
            output = await step()
        except NeedsHuman as exc:
            return StepOutcome(status="needs_human", attempts=run.attempts, error=exc)
        except Exception as exc:  # noqa: BLE001 - every agent failure becomes an outcome
            return _failed(exc, run.attempts)
        return StepOutcome(
            status="succeeded",
            output=output,
            attempts=run.attempts,
            fallback_used=run.used_fallback,
        )

    async def _within(self, deadline: float, body: Callable[[], Awaitable[Any]]) -> Any:
        left = deadline - self.clock.now()
        if left <= 0:
            raise DeadlineExceeded("the run's deadline has passed", timeout=0.0)
        return await Deadline(left, name="run", clock=self.clock).call(body)


class _StepRun:
    """The attempts of one step: numbering, contexts, attempt events, the fallback chain."""

    __slots__ = ("attempts", "call", "clock", "state", "timeout", "used_fallback")

    def __init__(self, call: StepCall, state: SharedState, clock: Clock) -> None:
        self.call = call
        self.state = state
        self.clock = clock
        self.timeout = Timeout(call.spec.timeout, name=call.spec.name, clock=clock)
        self.attempts = 0
        self.used_fallback = False

    async def attempt(self, fn: Callable[..., Awaitable[Any]]) -> Any:
        """One call of `fn` (the agent or a fallback), validated, reported as an event."""
        call, clock = self.call, self.clock
        self.attempts += 1
        ctx = Context(
            workflow=call.workflow,
            run_id=call.run_id,
            agent=call.spec.name,
            attempt=self.attempts,
            run_input=call.run_input,
            degraded=call.degraded,
            deadline=call.deadline,
            state=self.state,
            clock=clock,
        )
        start = clock.now()
        outcome: Literal["ok", "error", "invalid", "timeout", "rejected"] = "ok"
        error_type = None
        try:
            return validate_output(call.spec, await fn(ctx, **call.inputs))
        except Exception as exc:
            outcome, error_type = _outcome_name(exc), type(exc).__name__
            raise
        except BaseException:  # cancelled: by our own timeout when its time is up
            deadline = current_deadline()
            timed_out = deadline is not None and clock.now() >= deadline
            outcome, error_type = (
                ("timeout", "StepTimeout") if timed_out else ("error", "Cancelled")
            )
            raise
        finally:
            emit(
                StepAttempted(
                    source=call.workflow,
                    run_id=call.run_id,
                    agent=call.spec.name,
                    attempt=self.attempts,
                    outcome=outcome,
                    duration=clock.now() - start,
                    error_type=error_type,
                )
            )

    def guarded(self, fn: Callable[..., Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """`fn` as one attempt under the agent's timeout, lost state races retried."""
        return functools.partial(self.timeout.call, _CONFLICT_RETRY.call, self.attempt, fn)

    async def chain(
        self,
        primary: Callable[[], Awaitable[Any]],
        alternatives: list[Callable[[], Awaitable[Any]]],
    ) -> Any:
        """The primary pipeline, then each fallback in turn; `NeedsHuman` goes straight up."""
        try:
            return await primary()
        except NeedsHuman:
            raise
        except Exception as exc:
            if not alternatives:
                raise
            errors: list[BaseException] = [exc]
        for index, alternative in enumerate(alternatives, 1):
            self.used_fallback = True
            kind = type(errors[-1]).__name__
            emit(FallbackUsed(source=self.call.spec.name, index=index, error_type=kind))
            try:
                return await alternative()
            except NeedsHuman:
                raise
            except Exception as exc:  # noqa: BLE001 - the next alternative takes over
                errors.append(exc)
        raise FallbackExhausted(errors) from errors[-1]


def _failed(exc: BaseException, attempts: int) -> StepOutcome:
    root = exc.errors[0] if isinstance(exc, FallbackExhausted) else exc
    info = retry_info(root)
    retry_after = info.retry_after if info is not None else None
    if isinstance(root, CircuitOpenError):
        retry_after = root.retry_after
    transient = isinstance(root, CircuitOpenError) or is_transient(root)
    return StepOutcome(
        status="failed",
        attempts=attempts,
        error=exc,
        transient=transient,
        retry_after=retry_after,
    )
