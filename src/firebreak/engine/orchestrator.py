"""The orchestrator: drives a run of a workflow to its end, checkpointing every step.

The life of a run (ARCHITECTURE.md): take the run's lease; start every step whose
dependencies are settled, concurrently; run each through its pipeline (the executor);
commit each result before any dependent starts; degrade optional failures, fail the run
on a critical one (skip dependents, compensate completed steps in reverse, dead-letter
the run), park `NeedsHuman` steps in the review queue, pause on a transient outage when
asked to. Resuming a run (same `run_id`) continues from the last committed step; a
finished run returns its stored result without running anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from firebreak.clock import Clock, system_clock
from firebreak.engine.codec import NotStorable, decode_output, encode, error_to_dict
from firebreak.engine.context import Context, SharedState
from firebreak.engine.executor import Executor, LocalExecutor, StepCall, StepOutcome
from firebreak.engine.result import RunResult
from firebreak.errors import (
    ConfigError,
    FirebreakError,
    InvalidInput,
    LeaseHeld,
    Overloaded,
    RunNotFound,
    StaleLease,
    StoreError,
)
from firebreak.events import (
    CallRejected,
    QueueChanged,
    RunStateChanged,
    StepStateChanged,
    emit,
    hub,
)
from firebreak.resilience import BreakerRegistry, Timeout, breakers
from firebreak.store import (
    CheckpointStore,
    Lease,
    ReviewItem,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    SupportsBeginFinish,
    open_store,
)
from firebreak.workflow import AgentSpec, Workflow

__all__ = ["Engine", "resume", "run", "validate_input"]

log = logging.getLogger("firebreak.engine")

TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.DEGRADED, RunStatus.FAILED})
# Steps a replay runs again: their work is not in effect.
_REDO = frozenset(
    {
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.COMPENSATED,
    }
)
_NO_INPUT: Any = object()


def default_owner() -> str:
    """An orchestrator id unique to this process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def validate_input(workflow: Workflow, value: Any) -> Any:
    """Check a run input against the workflow's schema; raise `InvalidInput` if it fails."""
    schema = workflow.input_schema
    if schema is None:
        return value
    try:
        if isinstance(schema, type) and hasattr(schema, "model_validate"):
            return value if isinstance(value, schema) else schema.model_validate(value)
        return schema(value)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"workflow {workflow.name!r}: {first}") from exc


class Engine:
    """Runs workflows against one store, with one executor.

    Use as ``async with Engine("sqlite:///runs.db") as engine: await engine.run(wf, x)``.
    A store given as an object is used as is (the caller sets it up and closes it); a URL
    (or ``None``: ``$FIREBREAK_STORE``, else SQLite under ``./.firebreak/``) is opened and
    closed by the engine.

    Args:
        store: a `CheckpointStore`, a store URL, or ``None`` for the default.
        executor: how steps run; default: in this process (`LocalExecutor`).
        bus: a task bus URL (``redis://…``, ``inproc://…``): steps are published to
            `firebreak worker` processes instead (a `BusExecutor` the engine opens and
            closes). Mutually exclusive with `executor`.
        owner: this orchestrator's id in leases; default ``host:pid:random``.
        lease_ttl: seconds a lease lasts unless renewed (renewed every third of it).
        pause_for: seconds a paused run waits when the failure named no time.
        max_in_flight: at most this many runs driven at once; a run beyond it is refused
            at once with `Overloaded` (nothing stored) instead of queueing without bound.
        clock: monotonic time for timeouts and deadlines.
        registry: where agents' breakers come from (shared per service).
    """

    def __init__(
        self,
        store: CheckpointStore | str | None = None,
        *,
        executor: Executor | None = None,
        bus: str | None = None,
        owner: str | None = None,
        lease_ttl: float = 30.0,
        pause_for: float = 60.0,
        max_in_flight: int | None = None,
        clock: Clock = system_clock,
        registry: BreakerRegistry = breakers,
    ) -> None:
        self._owns_store = store is None or isinstance(store, str)
        self.store = open_store(store) if store is None or isinstance(store, str) else store
        self.clock = clock
        if executor is not None and bus is not None:
            raise ConfigError("bus", "give an executor or a bus, not both")
        self._bus_executor: Any = None
        if bus is not None:
            from firebreak.bus import open_bus  # noqa: PLC0415 - layer 5, only when asked
            from firebreak.engine.bus_executor import BusExecutor  # noqa: PLC0415

            self._bus_executor = BusExecutor(open_bus(bus), self.store, clock=clock)
            executor = self._bus_executor
        self.executor = executor or LocalExecutor(self.store, registry=registry, clock=clock)
        self.owner = owner or default_owner()
        self.lease_ttl = lease_ttl
        self.pause_for = pause_for
        self._begin_finish = isinstance(self.store, SupportsBeginFinish)
        self._inflight: dict[str, asyncio.Future[RunResult]] = {}
        if max_in_flight is not None and max_in_flight < 1:
            raise ConfigError("max_in_flight", f"must be >= 1 or None, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self._graphs: dict[int, tuple[Workflow, dict[str, list[str]]]] = {}

    async def __aenter__(self) -> Engine:
        if self._owns_store:
            await self.store.setup()
        if self._bus_executor is not None:
            await self._bus_executor.bus.setup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._bus_executor is not None:
            await self._bus_executor.close()
            await self._bus_executor.bus.close()
        if self._owns_store:
            await self.store.close()

    async def run(
        self,
        workflow: Workflow,
        input: Any = _NO_INPUT,  # noqa: A002 - the run input, named as users say it
        *,
        run_id: str | None = None,
    ) -> RunResult:
        """Run `workflow` on `input`, or resume run `run_id` if it exists.

        Two calls for the same run on one engine share one drive: the second waits for
        the first's result instead of racing it.

        Raises:
            RunNotFound: `run_id` names no run and no input was given (a `KeyError`).
            ValueError: `run_id` belongs to another workflow.
            LeaseHeld: another orchestrator is driving this run right now.
        """
        workflow.freeze()
        run_id = run_id or uuid.uuid4().hex
        inflight = self._inflight.get(run_id)
        if inflight is not None:
            return await asyncio.shield(inflight)
        if self.max_in_flight is not None and len(self._inflight) >= self.max_in_flight:
            emit(CallRejected(source=workflow.name, kind="engine", reason="full"))
            raise Overloaded("engine", limit=self.max_in_flight, reason="runs in flight")
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        self._inflight[run_id] = future
        try:
            result = await self._run(workflow, input, run_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: only waiters, if any, should see it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[run_id]

    async def _run(self, workflow: Workflow, value: Any, run_id: str) -> RunResult:
        validated: Any = _NO_INPUT
        if value is _NO_INPUT:
            record = await self.store.get_run(run_id)
            if record is None:
                raise RunNotFound(
                    f"run {run_id!r} does not exist; give an input to start it", id=run_id
                )
            if record.status in TERMINAL and record.workflow == workflow.name:
                return stored_result(workflow, record)
            stored = record.input
        else:
            try:
                validated = validate_input(workflow, value)
                stored = encode(validated, what="run input")
            except (InvalidInput, NotStorable) as exc:
                if await self.store.get_run(run_id) is not None:  # an existing run: its own
                    return await self._run(workflow, _NO_INPUT, run_id)  # input stands
                return await self._reject(workflow, value, run_id, exc)
        record, created, lease = await self._begin(run_id, workflow.name, stored)
        if lease is None:
            if record.workflow != workflow.name:
                raise ValueError(f"run {run_id!r} belongs to workflow {record.workflow!r}")
            return stored_result(workflow, record)
        if not created or validated is _NO_INPUT:  # a resume: the stored input is the input
            validated = validate_input(workflow, record.input)
        return await self._drive(workflow, record, lease, validated, created=created)

    def _dependents(self, workflow: Workflow) -> dict[str, list[str]]:
        """Direct dependents of each agent, computed once per workflow object."""
        cached = self._graphs.get(id(workflow))
        if cached is not None and cached[0] is workflow:
            return cached[1]
        dependents: dict[str, list[str]] = {name: [] for name in workflow.agents}
        for spec in workflow.agents.values():
            for dep in spec.after:
                dependents[dep].append(spec.name)
        self._graphs[id(workflow)] = (workflow, dependents)
        return dependents

    async def _begin(
        self, run_id: str, workflow: str, stored: Any
    ) -> tuple[RunRecord, bool, Lease | None]:
        """Get or create the run, lease it and mark it running (one write where supported)."""
        store = self.store
        if self._begin_finish:
            return await store.begin_run(  # type: ignore[attr-defined, no-any-return]
                run_id, workflow, stored, owner=self.owner, ttl=self.lease_ttl
            )
        record, created = await store.create_run(run_id, workflow, stored)
        if record.status in TERMINAL or record.workflow != workflow:
            return record, created, None
        lease = await store.acquire_lease(run_id, self.owner, self.lease_ttl)
        return await store.set_run_status(lease, RunStatus.RUNNING), created, lease

    async def _end(
        self,
        lease: Lease,
        status: RunStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> None:
        """Record the run's outcome and give the lease up (one write where supported)."""
        store = self.store
        if self._begin_finish:
            await store.finish_run(  # type: ignore[attr-defined]
                lease, status, result=result, error=error, resume_at=resume_at
            )
            return
        await store.set_run_status(lease, status, result=result, error=error, resume_at=resume_at)
        with contextlib.suppress(StoreError, KeyError):
            await store.release_lease(lease)

    async def _reject(
        self, workflow: Workflow, value: Any, run_id: str, exc: FirebreakError
    ) -> RunResult:
        """Record a run whose input is invalid as failed and dead-letter it; run nothing."""
        try:
            stored = encode(value, what="run input")
        except NotStorable:
            stored = {"unstorable": repr(value)[:10_000]}
        await self.store.create_run(run_id, workflow.name, stored)
        lease = await self.store.acquire_lease(run_id, self.owner, self.lease_ttl)
        error = error_to_dict(exc)
        try:
            await self.store.set_run_status(lease, RunStatus.FAILED, error=error)
            await self.store.dlq_put(
                run_id=run_id, workflow=workflow.name, reason=str(exc), error=error, input=stored
            )
        finally:
            await self.store.release_lease(lease)
        emit(QueueChanged(source=workflow.name, queue="dlq", run_id=run_id, delta=1))
        emit(RunStateChanged(source=workflow.name, run_id=run_id, status="failed", reason=str(exc)))
        return RunResult(
            run_id=run_id, workflow=workflow.name, status=RunStatus.FAILED, error=error
        )

    async def _drive(
        self, workflow: Workflow, record: RunRecord, lease: Lease, run_input: Any, *, created: bool
    ) -> RunResult:
        keeper = _LeaseKeeper(self, lease)
        run = _Run(self, workflow, record, lease, run_input, resumed=not created)
        try:
            return await run.drive(load=not created)
        finally:
            keeper.stop()
            if not run.ended:  # cancelled or the store failed: free the run for a resume
                # A lease we cannot release expires by itself; never hide the run's error.
                with contextlib.suppress(StoreError, KeyError):
                    await self.store.release_lease(lease)

    async def resume(self, workflow: Workflow, run_id: str) -> RunResult:
        """Continue run `run_id` from its checkpoints (a finished run is returned as stored)."""
        return await self.run(workflow, run_id=run_id)

    async def resume_due(self, workflows: Mapping[str, Workflow]) -> list[RunResult]:
        """Resume every paused run whose time has come, for the workflows given by name."""
        results = []
        for record in await self.store.due_runs(self.store.clock()):
            workflow = workflows.get(record.workflow)
            if workflow is None:
                continue
            try:
                results.append(await self.run(workflow, run_id=record.run_id))
            except LeaseHeld:  # another orchestrator got there first: its run, not ours
                log.info("run %r is being resumed by another orchestrator", record.run_id)
        return results

    async def replay(
        self,
        entry_id: str,
        workflow: Workflow,
        *,
        from_step: str | None = None,
        input: Any = _NO_INPUT,  # noqa: A002 - the patched run input
    ) -> RunResult:
        """Run a dead-lettered run again from its checkpoints and take it off the queue.

        Steps that failed, were skipped or were compensated run again; so do `from_step`
        and everything after it, when given. A patched `input` replaces the stored one and
        every step runs again.
        """
        entry = await self.store.dlq_get(entry_id)
        if entry is None:
            raise RunNotFound(f"no dead-letter entry {entry_id!r}", id=entry_id)
        if entry.workflow != workflow.name:
            raise ValueError(f"entry {entry_id!r} is a run of workflow {entry.workflow!r}")
        if from_step is not None and from_step not in workflow.agents:
            raise KeyError(f"workflow {workflow.name!r} has no agent {from_step!r}")
        lease = await self.store.acquire_lease(entry.run_id, self.owner, self.lease_ttl)
        try:
            steps = await self.store.get_steps(entry.run_id)
            redo = {name for name, rec in steps.items() if rec.status in _REDO}
            if from_step is not None:
                redo |= {from_step, *workflow.dependents(from_step)}
            if input is not _NO_INPUT:
                validated = validate_input(workflow, input)
                await self.store.set_input(lease, encode(validated, what="run input"))
                redo = set(steps)
            await self.store.reset_steps(lease, sorted(redo))
            await self.store.set_run_status(lease, RunStatus.PENDING)
            await self.store.dlq_drop(entry_id)
        finally:
            with contextlib.suppress(StoreError, KeyError):
                await self.store.release_lease(lease)
        emit(QueueChanged(source=workflow.name, queue="dlq", run_id=entry.run_id, delta=-1))
        return await self.run(workflow, run_id=entry.run_id)

    async def resolve_review(
        self, item_id: str, value: Any, *, workflow: Workflow | None = None
    ) -> ReviewItem:
        """Record a person's answer to a review item; the run uses it when it resumes.

        With `workflow`, the answer is first checked with the agent's ``validate=`` and
        the run is resumed at once.
        """
        item = await self.store.review_get(item_id)
        if item is None:
            raise RunNotFound(f"no review item {item_id!r}", id=item_id)
        if workflow is not None:
            spec = workflow.agents[item.agent]
            from firebreak.engine.codec import validate_output  # noqa: PLC0415 - one use

            value = validate_output(spec, value)
        resolved = await self.store.review_resolve(item_id, encode(value, what="review answer"))
        emit(QueueChanged(source=item.workflow, queue="review", run_id=item.run_id, delta=-1))
        if workflow is not None:
            await self.run(workflow, run_id=item.run_id)
        return resolved


async def _named(name: str, executor: Executor, call: StepCall) -> tuple[str, StepOutcome]:
    return name, await executor.execute(call)


class _LeaseKeeper:
    """Renews a run's lease every third of its time to live while the run is driven.

    A timer, not a task per run: most runs finish long before their first renewal.
    """

    __slots__ = ("engine", "handle", "lease", "task")

    def __init__(self, engine: Engine, lease: Lease) -> None:
        self.engine = engine
        self.lease = lease
        self.task: asyncio.Task[None] | None = None
        self.handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            engine.lease_ttl / 3, self._due
        )

    def _due(self) -> None:
        self.handle = None
        self.task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        try:
            self.lease = await self.engine.store.renew_lease(self.lease, self.engine.lease_ttl)
        except StaleLease:
            log.warning("lost the lease of run %r: another orchestrator took it", self.lease.run_id)
            return
        except StoreError as exc:  # the next commit will say so; keep trying meanwhile
            log.warning("could not renew the lease of run %r: %s", self.lease.run_id, exc)
        self.handle = asyncio.get_running_loop().call_later(self.engine.lease_ttl / 3, self._due)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.task is not None:
            self.task.cancel()


def stored_result(
    workflow: Workflow, record: RunRecord, *, executed: tuple[str, ...] = ()
) -> RunResult:
    """The `RunResult` of a run as the store has it."""
    stored = record.result if isinstance(record.result, dict) else {}
    outputs = {
        name: decode_output(workflow.agents[name], value)
        for name, value in (stored.get("outputs") or {}).items()
        if name in workflow.agents
    }
    return RunResult(
        run_id=record.run_id,
        workflow=record.workflow,
        status=record.status,
        outputs=outputs,
        missing=dict(stored.get("missing") or {}),
        error=record.error,
        failed_agent=stored.get("failed_agent"),
        resume_at=record.resume_at,
        reviews=tuple(stored.get("reviews") or ()),
        compensated=tuple(stored.get("compensated") or ()),
        executed=executed,
    )


class _Run:
    """One drive of one run: the scheduling loop and what happens at its end."""

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        record: RunRecord,
        lease: Lease,
        run_input: Any,
        *,
        resumed: bool,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.workflow = workflow
        self.name = workflow.name
        self.record = record
        self.run_id = record.run_id
        self.lease = lease
        self.run_input = run_input
        self.resumed = resumed
        self.outputs: dict[str, Any] = {}
        self.settled: dict[str, StepStatus] = {}
        self.missing: dict[str, str] = {}
        self.reviews: list[str] = []
        self.executed: list[str] = []
        self.failure: tuple[str, dict[str, Any]] | None = None  # agent, error
        self.pause_until: float | None = None
        self.waiting: set[str] = set()  # paused agents, not committed
        self.ended = False  # the outcome is recorded and the lease released

    async def drive(self, *, load: bool) -> RunResult:
        if load:
            await self._load()
        if hub.active:
            emit(
                RunStateChanged(
                    source=self.name, run_id=self.run_id, status="running", resumed=self.resumed
                )
            )
        clock = self.engine.clock
        deadline = None if self.workflow.deadline is None else clock.now() + self.workflow.deadline
        dependents = self.engine._dependents(self.workflow)  # noqa: SLF001 - engine's cache
        ok = (StepStatus.SUCCEEDED, StepStatus.DEGRADED)
        # How many dependencies each unsettled agent still waits for; at 0 it is ready.
        blocked = {
            spec.name: sum(self.settled.get(dep) not in ok for dep in spec.after)
            for spec in self.workflow.agents.values()
            if spec.name not in self.settled
        }
        ready = [name for name, count in blocked.items() if count == 0]
        running: set[asyncio.Task[tuple[str, StepOutcome]]] = set()
        done: list[asyncio.Task[tuple[str, StepOutcome]]] = []
        wake = asyncio.Event()

        def finished(task: asyncio.Task[tuple[str, StepOutcome]]) -> None:
            done.append(task)
            wake.set()

        async def settle(name: str, outcome: StepOutcome) -> None:
            await self._settle(name, outcome)
            if self.settled.get(name) in ok:
                for dependent in dependents[name]:
                    blocked[dependent] -= 1
                    if blocked[dependent] == 0:
                        ready.append(dependent)

        executor = self.engine.executor
        try:
            while True:
                if self.failure is not None:
                    ready.clear()
                if len(ready) == 1 and not running:
                    # One step and nothing else in flight (a chain): run it inline, no task.
                    name = ready.pop()
                    spec = self.workflow.agents[name]
                    await settle(name, await executor.execute(self._call(spec, deadline)))
                    continue
                while ready:
                    spec = self.workflow.agents[ready.pop()]
                    task = asyncio.create_task(
                        _named(spec.name, executor, self._call(spec, deadline))
                    )
                    task.add_done_callback(finished)
                    running.add(task)
                if not running:
                    break
                await wake.wait()
                wake.clear()
                while done:
                    task = done.pop()
                    running.discard(task)
                    await settle(*task.result())
        finally:
            for task in running:  # only when we are cancelled or the store failed
                task.cancel()
        return await self._finish()

    async def _load(self) -> None:
        """Take over what earlier drives committed."""
        steps = await self.store.get_steps(self.run_id)
        resolved = await self._resolved_reviews(steps)
        for name, rec in steps.items():
            if name not in self.workflow.agents:
                continue
            if rec.status == StepStatus.NEEDS_REVIEW and name in resolved:
                self._adopt(await self._apply_review(rec, resolved[name]))
            else:
                self._adopt(rec)

    def _adopt(self, rec: StepRecord) -> None:
        """Take a committed step as this drive's own: its output, or why it is missing."""
        name = rec.agent
        spec = self.workflow.agents[name]
        status = rec.status
        if status == StepStatus.COMPENSATION_FAILED:  # its effect stands: so does its output
            status = StepStatus.SUCCEEDED
        if status in (StepStatus.SUCCEEDED, StepStatus.DEGRADED):
            self.outputs[name] = decode_output(spec, rec.output)
            if status == StepStatus.DEGRADED:
                self.missing[name] = rec.degraded_reason or "degraded"
        self.settled[name] = status
        if status == StepStatus.FAILED:  # we crashed while failing the run: finish that
            self.failure = (name, rec.error or {"message": f"{name} failed"})

    async def _resolved_reviews(self, steps: Mapping[str, StepRecord]) -> dict[str, ReviewItem]:
        """Resolved review items of this run by agent; open ones are noted in `reviews`."""
        resolved: dict[str, ReviewItem] = {}
        if any(rec.status == StepStatus.NEEDS_REVIEW for rec in steps.values()):
            for item in await self.store.review_list(status=None):
                if item.run_id != self.run_id:
                    continue
                if item.status == "resolved":
                    resolved[item.agent] = item
                else:
                    self.reviews.append(item.id)
        return resolved

    async def _apply_review(self, rec: StepRecord, item: ReviewItem) -> StepRecord:
        await self.store.update_step(
            self.lease, self.run_id, rec.agent, status=StepStatus.SUCCEEDED, output=item.value
        )
        emit(
            StepStateChanged(
                source=self.name,
                run_id=self.run_id,
                agent=rec.agent,
                status="succeeded",
                attempts=rec.attempts,
                reason="resolved by review",
            )
        )
        return StepRecord(
            run_id=self.run_id,
            agent=rec.agent,
            status=StepStatus.SUCCEEDED,
            output=item.value,
            attempts=rec.attempts,
            seq=rec.seq,
        )

    def _call(self, spec: AgentSpec, deadline: float | None) -> StepCall:
        self.executed.append(spec.name)
        return StepCall(
            workflow=self.name,
            spec=spec,
            run_id=self.run_id,
            run_input=self.run_input,
            inputs=spec.call_kwargs(self.run_input, self.outputs),
            degraded={d: self.missing[d] for d in spec.after if d in self.missing},
            lease=self.lease,
            deadline=deadline,
        )

    async def _commit(self, rec: StepRecord, attempts: int, reason: str = "") -> bool:
        """Commit `rec`; ``False`` when another record was there first and was adopted."""
        if not await self.store.commit_step(self.lease, rec):
            # Someone committed this step first (a worker, a replaced orchestrator): the
            # stored result is the truth, so dependents get that one, not ours.
            stored = (await self.store.get_steps(self.run_id)).get(rec.agent)
            if stored is not None:
                self._adopt(stored)
                self._announce(stored, stored.attempts, stored.degraded_reason or "")
                return False
        self.settled[rec.agent] = rec.status
        self._announce(rec, attempts, reason)
        return True

    def _announce(self, rec: StepRecord, attempts: int, reason: str) -> None:
        if hub.active:
            emit(
                StepStateChanged(
                    source=self.name,
                    run_id=self.run_id,
                    agent=rec.agent,
                    status=rec.status.value,
                    attempts=attempts,
                    reason=reason,
                )
            )

    async def _settle(self, name: str, outcome: StepOutcome) -> None:
        spec = self.workflow.agents[name]
        if outcome.committed is not None:  # the executor's worker committed it already
            rec = outcome.committed
            self._adopt(rec)
            self._announce(rec, rec.attempts, rec.degraded_reason or "")
            if rec.status == StepStatus.NEEDS_REVIEW:
                attrs = (rec.error or {}).get("attrs") or {}
                reason = (rec.error or {}).get("message", "needs review")
                await self._open_review(spec, reason, list(attrs.get("suggestions") or []))
            return
        if outcome.status == "succeeded":
            try:
                stored = encode(outcome.output, what=f"output of agent {name!r}")
            except NotStorable as exc:
                outcome = StepOutcome(status="failed", attempts=outcome.attempts, error=exc)
            else:
                rec = StepRecord(
                    run_id=self.run_id,
                    agent=name,
                    status=StepStatus.SUCCEEDED,
                    output=stored,
                    attempts=outcome.attempts,
                )
                if await self._commit(rec, outcome.attempts):
                    self.outputs[name] = outcome.output
                return
        error = outcome.error
        reason = f"{type(error).__name__}: {error}" if error is not None else "failed"
        if outcome.status == "failed" and spec.on_exhausted == "pause" and outcome.transient:
            wait = outcome.retry_after if outcome.retry_after is not None else self.engine.pause_for
            until = self.store.clock() + wait
            self.pause_until = max(self.pause_until or until, until)
            self.waiting.add(name)
            return
        error_dict = error_to_dict(error) if error is not None else None
        if outcome.status == "needs_human" or spec.on_exhausted == "review":
            rec = StepRecord(
                run_id=self.run_id,
                agent=name,
                status=StepStatus.NEEDS_REVIEW,
                attempts=outcome.attempts,
                error=error_dict,
            )
            if await self._commit(rec, outcome.attempts, reason):
                suggestions = list(getattr(error, "suggestions", []) or [])
                await self._open_review(spec, reason, suggestions)
            return
        if not spec.critical:
            default = spec.default
            rec = StepRecord(
                run_id=self.run_id,
                agent=name,
                status=StepStatus.DEGRADED,
                output=encode(default, what=f"default of agent {name!r}"),
                attempts=outcome.attempts,
                error=error_dict,
                degraded_reason=reason,
            )
            if await self._commit(rec, outcome.attempts, reason):
                self.outputs[name] = default
                self.missing[name] = reason
            return
        rec = StepRecord(
            run_id=self.run_id,
            agent=name,
            status=StepStatus.FAILED,
            attempts=outcome.attempts,
            error=error_dict,
        )
        if await self._commit(rec, outcome.attempts, reason):
            self.failure = (name, error_dict or {"message": reason})

    async def _open_review(self, spec: AgentSpec, reason: str, suggestions: list[Any]) -> None:
        """Put the step in the review queue (the store keeps one open item per step)."""
        inputs = spec.call_kwargs(self.run_input, self.outputs)
        try:
            context = encode(inputs, what="review context")
        except NotStorable:
            context = {name: repr(value)[:2000] for name, value in inputs.items()}
        try:
            encoded = encode(suggestions, what="review suggestions")
        except NotStorable:
            encoded = [repr(item)[:2000] for item in suggestions]
        item_id = await self.store.review_put(
            run_id=self.run_id,
            workflow=self.name,
            agent=spec.name,
            reason=reason,
            suggestions=encoded,
            context=context,
        )
        self.reviews.append(item_id)
        emit(QueueChanged(source=self.name, queue="review", run_id=self.run_id, delta=1))

    async def _finish(self) -> RunResult:
        if self.failure is not None:
            return await self._fail(*self.failure)
        result: dict[str, Any] = {"missing": self.missing, "reviews": self.reviews}
        if self.pause_until is not None:
            status = RunStatus.PAUSED
            reason = f"waiting for {', '.join(sorted(self.waiting))}"
        elif any(s == StepStatus.NEEDS_REVIEW for s in self.settled.values()):
            status, reason = RunStatus.NEEDS_REVIEW, "waiting for review"
        elif unsettled := [a for a in self.workflow.agents if a not in self.settled]:
            raise RuntimeError(f"run {self.run_id!r}: agents {unsettled} could not start")
        else:
            status = RunStatus.DEGRADED if self.missing else RunStatus.SUCCEEDED
            reason = f"degraded: {', '.join(self.missing)}" if self.missing else ""
            result["outputs"] = {
                name: encode(value, what=f"output of agent {name!r}")
                for name, value in self.outputs.items()
            }
        await self.engine._end(  # noqa: SLF001 - the engine's own helper
            self.lease, status, result=result, resume_at=self.pause_until
        )
        self.ended = True
        emit(
            RunStateChanged(
                source=self.name, run_id=self.run_id, status=status.value, reason=reason
            )
        )
        return RunResult(
            run_id=self.run_id,
            workflow=self.name,
            status=status,
            outputs=dict(self.outputs),
            missing=dict(self.missing),
            resume_at=self.pause_until,
            reviews=tuple(self.reviews),
            resumed=self.resumed,
            executed=tuple(self.executed),
        )

    async def _fail(self, agent: str, error: dict[str, Any]) -> RunResult:
        because = f"{agent} failed"
        for name in self.workflow.agents:
            if name not in self.settled:
                rec = StepRecord(
                    run_id=self.run_id,
                    agent=name,
                    status=StepStatus.SKIPPED,
                    attempts=0,
                    degraded_reason=because,
                )
                await self._commit(rec, 0, because)
                self.missing[name] = f"skipped: {because}"
        compensated = await self._compensate()
        result = {"missing": self.missing, "failed_agent": agent, "compensated": compensated}
        await self.engine._end(  # noqa: SLF001 - the engine's own helper
            self.lease, RunStatus.FAILED, result=result, error=error
        )
        self.ended = True
        reason = f"agent {agent!r} failed: {error.get('message', '')}"
        await self.store.dlq_put(
            run_id=self.run_id,
            workflow=self.name,
            reason=reason,
            error=error,
            input=self.record.input,
            steps=await self.store.get_steps(self.run_id),
        )
        emit(QueueChanged(source=self.name, queue="dlq", run_id=self.run_id, delta=1))
        emit(RunStateChanged(source=self.name, run_id=self.run_id, status="failed", reason=reason))
        return RunResult(
            run_id=self.run_id,
            workflow=self.name,
            status=RunStatus.FAILED,
            outputs=dict(self.outputs),
            missing=dict(self.missing),
            error=error,
            failed_agent=agent,
            compensated=tuple(compensated),
            resumed=self.resumed,
            executed=tuple(self.executed),
        )

    async def _compensate(self) -> list[str]:
        """Undo completed steps in reverse completion order; a failure is recorded, not fatal."""
        steps = await self.store.get_steps(self.run_id)
        done = sorted(
            (rec for rec in steps.values() if rec.status == StepStatus.SUCCEEDED),
            key=lambda rec: rec.seq,
            reverse=True,
        )
        undone = []
        for rec in done:
            spec = self.workflow.agents.get(rec.agent)
            if spec is None or spec.compensate is None:
                continue
            ctx = Context(
                workflow=self.name,
                run_id=self.run_id,
                agent=spec.name,
                attempt=1,
                run_input=self.run_input,
                degraded={},
                deadline=None,
                state=SharedState(self.store, self.run_id),
                clock=self.engine.clock,
            )
            output = self.outputs.get(spec.name, decode_output(spec, rec.output))
            try:
                timeout = Timeout(
                    spec.timeout, name=f"compensate {spec.name}", clock=self.engine.clock
                )
                await timeout.call(spec.compensate, ctx, output)
            except Exception as exc:  # noqa: BLE001 - recorded; the other compensations still run
                await self.store.update_step(
                    self.lease,
                    self.run_id,
                    spec.name,
                    status=StepStatus.COMPENSATION_FAILED,
                    error=error_to_dict(exc),
                )
                emit(
                    StepStateChanged(
                        source=self.name,
                        run_id=self.run_id,
                        agent=spec.name,
                        status="compensation_failed",
                        reason=str(exc),
                    )
                )
                continue
            await self.store.update_step(
                self.lease, self.run_id, spec.name, status=StepStatus.COMPENSATED
            )
            emit(
                StepStateChanged(
                    source=self.name, run_id=self.run_id, agent=spec.name, status="compensated"
                )
            )
            undone.append(spec.name)
        return undone


async def run(
    workflow: Workflow,
    input: Any = _NO_INPUT,  # noqa: A002
    *,
    run_id: str | None = None,
    store: CheckpointStore | str | None = None,
    bus: str | None = None,
    clock: Clock = system_clock,
) -> RunResult:
    """Run (or resume) a workflow once; see `Engine` for long-lived use.

    With `bus`, the steps run on `firebreak worker` processes consuming that bus.

    >>> result = await fb.run(wf, {"id": 42}, run_id="inv-42")   # SQLite under ./.firebreak/
    """
    async with Engine(store, bus=bus, clock=clock) as engine:
        return await engine.run(workflow, input, run_id=run_id)


async def resume(
    workflow: Workflow, run_id: str, *, store: CheckpointStore | str | None = None
) -> RunResult:
    """Continue run `run_id` from its checkpoints."""
    async with Engine(store) as engine:
        return await engine.resume(workflow, run_id)
