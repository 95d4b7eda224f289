"""Running one step: the resilience pipeline around an agent, behind a small interface.

The orchestrator hands each ready step to an `Executor` and gets a `StepOutcome` back.
`LocalExecutor` runs the agent in this process; a bus executor (another release) sends
the same `StepCall` to worker processes, which run it with the very same pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, Literal, Protocol

from firebreak._eager import await_rest
from firebreak._fastinit import fast_new
from firebreak.clock import Clock, system_clock
from firebreak.engine.codec import validate_output
from firebreak.engine.context import Context
from firebreak.errors import (
    CircuitOpenError,
    DeadlineExceeded,
    FallbackExhausted,
    InvalidOutput,
    NeedsHuman,
    Rejected,
    StateConflict,
    Transient,
)
from firebreak.events import FallbackUsed, StepAttempted, emit, hub
from firebreak.resilience import (
    BreakerRegistry,
    Bulkhead,
    Timeout,
    breakers,
    is_transient,
    retry_info,
)
from firebreak.resilience.timeout import DeadlineMark, _deadline, _Expiry
from firebreak.store import CheckpointStore, Lease, StepRecord
from firebreak.workflow import AgentSpec

__all__ = ["Executor", "LocalExecutor", "StepCall", "StepOutcome", "current_step"]

_current_step: ContextVar[StepCall | None] = ContextVar("firebreak_step", default=None)


def current_step() -> StepCall | None:
    """The step being executed in this task, if any.

    Events of layer 2 (retries, rejections, fallbacks, breaker changes) name their policy,
    not the run: subscribers use this to label them with the workflow, run and agent.
    """
    return _current_step.get()


# Attempts at a step whose shared-state write keeps losing the race (StateConflict).
_CONFLICT_ATTEMPTS = 10
_jitter = random.Random()


# Not frozen, as StepOutcome: one of each is made per step, and a frozen dataclass's
# __init__ costs three times as much (an object.__setattr__ call per field).
@dataclass(slots=True, kw_only=True)
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
    lease: Lease | None = None
    """The orchestrator's lease on the run: a remote worker commits under it (fenced)."""


@dataclass(slots=True, kw_only=True)
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
    committed: StepRecord | None = None
    """The step as already committed by whoever ran it (a bus worker), if so: the
    orchestrator adopts it instead of committing the outcome itself."""


# Positional constructors for the engine's own path of every step (see `fast_new`).
new_step_call = fast_new(StepCall, "workflow spec run_id run_input inputs degraded deadline lease")
new_outcome = fast_new(
    StepOutcome, "status output attempts error transient retry_after fallback_used committed"
)

_PLANS = 1024  # agents whose resilience layers an executor keeps; the oldest go first


def _forget_one(plans: dict[int, _Plan]) -> None:
    """Drop the oldest plan not in use: a busy bulkhead's count must outlive a rebuild."""
    for key, plan in plans.items():
        bulkhead = plan.bulkhead
        if bulkhead is None or not (bulkhead.active or bulkhead.waiting):
            del plans[key]
            return


class Executor(Protocol):
    """Runs one step and reports how it ended; never raises for an agent's failure."""

    async def execute(self, call: StepCall) -> StepOutcome:
        """Run the step's pipeline around its agent."""
        ...


def _outcome_name(
    exc: BaseException,
) -> Literal["error", "invalid", "timeout", "rejected", "needs_human"]:
    if isinstance(exc, NeedsHuman):  # a question for a person: not an error rate's business
        return "needs_human"
    if isinstance(exc, InvalidOutput):
        return "invalid"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, Rejected):
        return "rejected"
    return "error"


class _Plan:
    """What every step of one agent shares: its policies, built once per executor."""

    __slots__ = ("bare", "breaker", "bulkhead", "retry", "spec", "timeout")

    def __init__(self, executor: LocalExecutor, workflow: str, spec: AgentSpec) -> None:
        self.spec = spec
        clock = executor.clock
        self.timeout = Timeout(spec.timeout, name=spec.name, clock=clock)
        self.breaker = None if spec.breaker is None else executor.registry.get(spec.breaker)
        if self.breaker is not None:  # a half-open probe's lease follows the attempt timeout
            self.breaker.expect_attempts(spec.timeout)
        retry = spec.retry
        if retry is not None and retry.clock is not clock:
            retry = dataclasses.replace(retry, clock=clock)
        self.retry = retry
        self.bulkhead = (
            None
            if spec.bulkhead is None
            else Bulkhead(f"{workflow}/{spec.name}", limit=spec.bulkhead, clock=clock)
        )
        # Only the attempt timeout: no partials to build around it for each step.
        self.bare = (
            self.breaker is None and retry is None and self.bulkhead is None and not spec.fallbacks
        )


class LocalExecutor:
    """Runs steps in this process with the full pipeline of each agent.

    Per agent: bulkhead → run deadline → fallbacks → retry → circuit breaker (shared per
    service through `registry`) → attempt timeout → the agent, then output validation.
    Invalid output is not retried with the same call; the fallbacks run instead.

    The bulkhead is outermost, not inside the fallbacks as in a `Pipeline`: it bounds the
    agent, whose fallbacks are other ways of doing the same work (often slower ones). A
    step it sheds degrades (optional) or fails with `Overloaded` (critical); were the
    fallbacks outside it, 10x saturation would run them unbounded (the chaos scenario
    ``saturation`` measured 154 runs in flight against a bound of 110, P99 x4).
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
        self._plans: dict[int, _Plan] = {}  # by id(spec); the plan keeps its spec alive

    async def execute(self, call: StepCall) -> StepOutcome:
        """Run the step; every failure becomes a `StepOutcome`, never an exception."""
        spec = call.spec
        plan = self._plans.get(id(spec))
        if plan is None or plan.spec is not spec:
            plans = self._plans
            if len(plans) >= _PLANS:  # agents of workflows built per request: bounded
                _forget_one(plans)
            plan = plans[id(spec)] = _Plan(self, call.workflow, spec)
        run = _StepRun(call, self.store, self.clock, plan.timeout)
        token = _current_step.set(call)
        try:
            if plan.bare and call.deadline is None:  # nothing around the attempt: call it
                output = await run.attempt(spec.fn)
            else:
                output = await self._pipeline(plan, run, call)()
        except NeedsHuman as exc:
            return StepOutcome(status="needs_human", attempts=run.attempts, error=exc)
        except Exception as exc:  # noqa: BLE001 - every agent failure becomes an outcome
            return _failed(exc, run.attempts)
        finally:
            _current_step.reset(token)
        # status, output, attempts, error, transient, retry_after, fallback_used
        return new_outcome("succeeded", output, run.attempts, None, False, None, run.used_fallback)  # noqa: FBT003

    def _pipeline(self, plan: _Plan, run: _StepRun, call: StepCall) -> Callable[[], Awaitable[Any]]:
        spec = call.spec
        primary = run.guarded(spec.fn)
        if plan.breaker is not None:
            primary = functools.partial(plan.breaker.call, primary)
        if plan.retry is not None:
            primary = functools.partial(plan.retry.call, primary)
        step: Callable[[], Awaitable[Any]] = primary
        if spec.fallbacks:
            step = functools.partial(run.chain, primary, [run.guarded(f) for f in spec.fallbacks])
        if call.deadline is not None:
            # Every wait inside is cut to the time left (attempt timeouts, retry sleeps, the
            # bulkhead queue), so publishing the deadline bounds the step without a timer.
            left = call.deadline - self.clock.now()
            if left <= 0:
                raise DeadlineExceeded("the run's deadline has passed", timeout=0.0)
            step = functools.partial(DeadlineMark(left, clock=self.clock).call, step)
        if plan.bulkhead is not None:
            step = functools.partial(plan.bulkhead.call, step)
        return step


class _StepRun:
    """The attempts of one step: numbering, contexts, attempt events, the fallback chain."""

    __slots__ = ("attempts", "call", "clock", "store", "timeout", "used_fallback")

    def __init__(
        self, call: StepCall, store: CheckpointStore, clock: Clock, timeout: Timeout
    ) -> None:
        self.call = call
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.attempts = 0
        self.used_fallback = False

    async def attempt(self, fn: Callable[..., Awaitable[Any]]) -> Any:  # noqa: PLR0912, PLR0915
        """One call of `fn` (the agent or a fallback) under the agent's timeout, validated.

        Each call is reported as an event. The timeout is applied here as `Timeout.call`
        would around this coroutine (the deadline published, the timer armed only once
        the call suspends): one coroutine less on every step. A lost compare-and-set on
        shared state (`StateConflict`) is retried at once within the same limit, a few
        times with a short backoff: the write is the agent's to redo, not a failure.
        """
        call, clock, timeout = self.call, self.clock, self.timeout
        when, inherited = timeout._end()  # noqa: SLF001 - Timeout.call's own steps, inlined
        token = _deadline.set(when)
        expiry: _Expiry | None = None
        try:
            for conflicts in range(_CONFLICT_ATTEMPTS):
                self.attempts += 1
                ctx = Context(call, self.attempts, self.store, clock)
                start = clock.now()
                try:
                    aw = fn(ctx, **call.inputs)
                    if expiry is None and type(aw) is CoroutineType:
                        try:  # to its first suspension: an agent that answers at once, no timer
                            first = aw.send(None)
                        except StopIteration as done:
                            output = done.value
                        else:
                            expiry = _armed(timeout, when, aw)
                            output = await await_rest(aw, first)
                    else:
                        if expiry is None:
                            expiry = timeout._arm(when)  # noqa: SLF001
                        output = await aw
                    if call.spec.validate is not None:
                        output = validate_output(call.spec, output)
                except StateConflict as exc:
                    self._report("error", start, exc)
                    if conflicts == _CONFLICT_ATTEMPTS - 1:
                        raise
                    if expiry is None:  # the wait is bounded by the limit too
                        expiry = timeout._arm(when)  # noqa: SLF001
                    # Full jitter, so racing writers spread out instead of colliding again.
                    await clock.sleep(_jitter.uniform(0, 0.005 * 2**conflicts))
                    continue
                except Exception as exc:
                    self._report(_outcome_name(exc), start, exc)
                    raise
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is None or task.cancelling():  # a real cancel: the timeout's, the run's
                        self._report("timeout" if clock.now() >= when else "error", start, None)
                        raise
                    # Nobody cancelled this step: the agent awaited work that something else
                    # cancelled. A failure of the step like any other (it degrades, retries or
                    # fails the run), not a cancel of the whole run that left it running.
                    error = Transient(
                        f"agent {call.spec.name!r} raised CancelledError, though nothing "
                        "cancelled its step (it awaited work that something else cancelled)"
                    )
                    self._report("error", start, error)
                    raise error from exc
                except BaseException:  # KeyboardInterrupt, SystemExit
                    self._report("error", start, None)
                    raise
                if hub.active:
                    self._report("ok", start, None)
                if expiry is not None:
                    expiry.close(None)
                return output
        except BaseException as exc:
            if expiry is not None and expiry.close(exc):
                raise timeout._error(inherited=inherited) from None  # noqa: SLF001
            raise
        finally:
            _deadline.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    def _report(
        self,
        outcome: Literal["ok", "error", "invalid", "timeout", "rejected", "needs_human"],
        start: float,
        exc: BaseException | None,
    ) -> None:
        call = self.call
        emit(
            StepAttempted(
                source=call.workflow,
                run_id=call.run_id,
                agent=call.spec.name,
                attempt=self.attempts,
                outcome=outcome,
                duration=self.clock.now() - start,
                error_type=None if exc is None else type(exc).__name__,
            )
        )

    def guarded(self, fn: Callable[..., Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """`fn` as one attempt under the agent's timeout."""
        return functools.partial(self.attempt, fn)

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
        except Exception as exc:  # noqa: BLE001 - the alternatives take over
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


def _armed(timeout: Timeout, when: float, aw: Coroutine[Any, Any, Any]) -> _Expiry:
    """The timer of `timeout`, armed for a call that suspended; the call closed if it fails."""
    try:
        return timeout._arm(when)  # noqa: SLF001
    except BaseException:
        aw.close()
        raise


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
