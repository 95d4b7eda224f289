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
import functools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from firebreak._eager import await_rest
from firebreak.clock import Cancellable, Clock, system_clock
from firebreak.engine._owners import default_owner, gone
from firebreak.engine.codec import (
    NotStorable,
    apply_check,
    decode_output,
    encode,
    error_to_dict,
    is_model,
    summary,
)
from firebreak.engine.drive import Drive, Graph
from firebreak.engine.executor import Executor, LocalExecutor
from firebreak.engine.result import RunResult
from firebreak.errors import (
    ConfigError,
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
    emit,
)
from firebreak.resilience import BreakerRegistry, breakers
from firebreak.store import (
    CheckpointStore,
    DeadLetter,
    Lease,
    ReviewItem,
    ReviewStatus,
    RunRecord,
    RunStatus,
    StepStatus,
    SupportsBeginFinish,
    SupportsCommitAndFinish,
    find_dead_letter,
    open_store,
)
from firebreak.workflow import Workflow

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
_CACHED = 256  # workflows whose schedule an engine keeps; the oldest goes first
_BREAKS = 3  # leases of gone processes broken for one run before taking it, at most
_T = TypeVar("_T")
_SWEEP = 100_000  # runs of one status a sweep for `resume_due` reads: far more than run at once


def validate_input(workflow: Workflow, value: Any) -> Any:
    """Check a run input against the workflow's schema; raise `InvalidInput` if it fails."""
    schema = workflow.input_schema
    if schema is None:
        return value
    try:
        if is_model(schema):
            return value if isinstance(value, schema) else schema.model_validate(value)
        return apply_check(schema, value)
    except Exception as exc:
        raise InvalidInput(f"workflow {workflow.name!r}: {summary(exc)}") from exc


def _replayable_input(workflow: Workflow, entry: DeadLetter) -> None:
    """Raise `InvalidInput` if `entry`'s run cannot be replayed on its stored input."""
    error = entry.error or {}
    if str(error.get("type", "")).endswith(".InvalidInput"):
        detail = (error.get("attrs") or {}).get("detail") or error.get("message")
        raise InvalidInput(
            f"run {entry.run_id!r} was rejected for its input ({detail}); "
            "replay it with a corrected input"
        )
    try:
        validate_input(workflow, entry.input)
    except InvalidInput as exc:  # the workflow's schema changed since the run began
        raise InvalidInput(
            f"run {entry.run_id!r}'s stored input no longer passes the workflow's schema "
            f"({exc.detail}); replay it with a corrected input"
        ) from exc


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
        owner: this orchestrator's id in leases; default ``host:pid:random:place``, whose
            lease a process on the same machine takes over at once once this one is gone
            (an id you give is waited out: see `firebreak.engine._owners`).
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
        self._owner = owner  # None: a default id, made for the process that uses it
        self._default_owner = (0, "")  # (pid, id)
        self.lease_ttl = lease_ttl
        self.pause_for = pause_for
        self._begin_finish = isinstance(self.store, SupportsBeginFinish)
        self._commit_and_finish = isinstance(self.store, SupportsCommitAndFinish)
        self._inflight: dict[str, asyncio.Future[RunResult]] = {}
        if max_in_flight is not None and max_in_flight < 1:
            raise ConfigError("max_in_flight", f"must be >= 1 or None, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self._graphs: dict[int, tuple[Workflow, Graph]] = {}

    @property
    def owner(self) -> str:
        """This orchestrator's id in leases: the one given, or ``default_owner()``.

        A default id names the process using it, made again in a process forked from the
        one that built the engine (a daemon's double fork): with the parent's PID in it, the
        child's leases would look abandoned once the parent exits (`_owners.gone`).
        """
        if self._owner:
            return self._owner
        pid, made = self._default_owner
        if pid != os.getpid():
            made = default_owner()
            self._default_owner = (os.getpid(), made)
        return made

    async def __aenter__(self) -> Engine:
        if self._owns_store:
            await self.store.setup()
        if self._bus_executor is not None:
            from firebreak.bus.base import setup_bus  # noqa: PLC0415 - layer 5, only when asked

            await setup_bus(self._bus_executor.bus)
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
        if run_id is None:
            run_id = uuid.uuid4().hex
        elif not run_id.strip():  # a blank id from a template, not a request for a new one
            raise ValueError(f"run_id must not be blank, got {run_id!r}")
        inflight = self._inflight.get(run_id)
        if inflight is not None:
            try:
                return await asyncio.shield(inflight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():  # this caller was cancelled
                    raise
            # The caller whose drive this was got cancelled, and its drive with it (its
            # lease is given up): this caller was not, so it drives the run itself.
            return await self.run(workflow, input, run_id=run_id)
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
                if isinstance(exc, NotStorable):  # an input no store can keep is invalid
                    exc = InvalidInput(f"workflow {workflow.name!r}: {exc}")
                return await self._reject(workflow, value, run_id, exc)
        record, created, lease = await self._begin(run_id, workflow.name, stored)
        if not created and validated is not _NO_INPUT and stored != record.input:
            log.warning(
                "run %r exists with another input: its own stands (a run id names "
                "one run; give a new id to run on this input)",
                run_id,
            )
        if lease is None:
            if record.workflow != workflow.name:
                raise ValueError(f"run {run_id!r} belongs to workflow {record.workflow!r}")
            return stored_result(workflow, record)
        if not created or validated is _NO_INPUT:  # a resume: the stored input is the input
            validated = validate_input(workflow, record.input)
        return await self._drive(workflow, record, lease, validated, created=created)

    def _graph(self, workflow: Workflow) -> Graph:
        """What a drive schedules by, computed once per workflow object."""
        cached = self._graphs.get(id(workflow))
        if cached is not None and cached[0] is workflow:
            return cached[1]
        graph = Graph(workflow)
        graphs = self._graphs
        if len(graphs) >= _CACHED:  # workflows built per request or per tenant: bounded
            del graphs[next(iter(graphs))]
        graphs[id(workflow)] = (workflow, graph)
        return graph

    async def _begin(
        self, run_id: str, workflow: str, stored: Any
    ) -> tuple[RunRecord, bool, Lease | None]:
        """Get or create the run, lease it and mark it running (one write where supported).

        A lease held by an orchestrator whose process is gone from this machine (killed,
        not yet expired) is broken first (`_take_over`).
        """
        try:
            return await self._begin_once(run_id, workflow, stored)
        except LeaseHeld as held:
            take = functools.partial(self._begin_once, run_id, workflow, stored)
            return await self._take_over(run_id, held, take)

    async def _acquire(self, run_id: str) -> Lease:
        """Lease `run_id` as this engine, breaking first a lease whose process is gone."""
        take = functools.partial(self.store.acquire_lease, run_id, self.owner, self.lease_ttl)
        try:
            return await take()
        except LeaseHeld as held:
            return await self._take_over(run_id, held, take)

    async def _take_over(
        self, run_id: str, held: LeaseHeld, take: Callable[[], Awaitable[_T]]
    ) -> _T:
        """`take()` again, which leases `run_id`, once the lease `held` is broken.

        Only a lease whose process is gone from this machine is broken; else `held` is
        raised. A few times: another process of this machine breaking the same lease holds it
        under the dead owner's id for a moment, which is no reason to give up.
        """
        for _ in range(_BREAKS):
            if not gone(held.owner):
                raise held
            await self._break_lease(run_id, held.owner)
            try:
                return await take()
            except LeaseHeld as again:
                held = again
        raise held

    async def _break_lease(self, run_id: str, owner: str) -> None:
        """Take the lease of a dead `owner` and give it up, so that anyone may lease the run.

        Taken under the dead owner's own id (an owner may re-enter its lease), which gives
        the next fencing token: whatever the dead process left unsent is refused.
        """
        stale = await self.store.acquire_lease(run_id, owner, self.lease_ttl)
        await self.store.release_lease(stale)
        log.warning(
            "run %r was leased by %s, a process gone from this machine: its lease is "
            "broken and the run taken over",
            run_id,
            owner,
        )

    async def _begin_once(
        self, run_id: str, workflow: str, stored: Any
    ) -> tuple[RunRecord, bool, Lease | None]:
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
        self, workflow: Workflow, value: Any, run_id: str, exc: InvalidInput
    ) -> RunResult:
        """Record a run whose input is invalid as failed and dead-letter it; run nothing.

        An input with no JSON form is kept as its ``repr`` for people to read; `replay`
        never runs it (the entry's error is `InvalidInput`: a replay needs a new input).
        """
        try:
            stored = encode(value, what="run input")
        except NotStorable:
            stored = {"unstorable": repr(value)[:10_000]}
        await self.store.create_run(run_id, workflow.name, stored)
        lease = await self._acquire(run_id)
        error = error_to_dict(exc)
        try:  # the dead letter first, as `Drive._fail` does
            await self.store.dlq_put(
                run_id=run_id, workflow=workflow.name, reason=str(exc), error=error, input=stored
            )
            await self.store.set_run_status(lease, RunStatus.FAILED, error=error)
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
        run = Drive(self, workflow, record, lease, run_input, resumed=not created)
        keeper = None
        try:
            try:
                driving = run.drive(load=not created)
                # The lease needs renewing only if the run waits: a run that ends before its
                # first suspension (agents that answer at once) arms no renewal timer.
                try:
                    first = driving.send(None)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                keeper = _LeaseKeeper(self, lease)
                return await await_rest(driving, first)
            finally:  # no renewal once the drive is over, nor during the release below
                if keeper is not None:
                    keeper.stop()
        except BaseException as exc:
            if not run.ended:  # cancelled or the store failed: free the run for a resume
                # A lease we cannot release expires by itself; never hide the run's error.
                with contextlib.suppress(StoreError, KeyError):
                    await self.store.release_lease(lease)
                # Said, so that whoever follows the drive (a span, a log) sees it end.
                emit(
                    RunStateChanged(
                        source=workflow.name,
                        run_id=record.run_id,
                        status="interrupted",
                        reason=f"{type(exc).__name__}: {exc}".rstrip(": "),
                    )
                )
            raise

    async def resume(self, workflow: Workflow, run_id: str) -> RunResult:
        """Continue run `run_id` from its checkpoints (a finished run is returned as stored)."""
        return await self.run(workflow, run_id=run_id)

    async def resume_due(
        self,
        workflows: Mapping[str, Workflow],
        *,
        concurrency: int = 16,
        due: Sequence[RunRecord] | None = None,
    ) -> list[RunResult]:
        """Resume every run that should be going and is not, for the workflows given by name.

        That is every paused run whose time has come, every interrupted run (`interrupted`:
        its orchestrator stopped before the run ended, e.g. killed) and every run waiting
        for review with no question open any more (`answered`), at most `concurrency` at
        once: after a crash of a batch there may be hundreds, each waiting on its agents.
        One that another orchestrator took (or finished) first is left to it and not in the
        list returned; an error in one does not stop the others, and the first is raised
        once all have had their turn.

        `due`: what `due()` returned, when the caller has read it already (and reports the
        runs of other workflows itself: no warning is logged for them then).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if self.max_in_flight is not None:  # beyond it a run would be refused (Overloaded)
            concurrency = min(concurrency, self.max_in_flight)
        records = await self.due() if due is None else due
        left = [record for record in records if record.workflow not in workflows]
        if left and due is None:
            names = sorted({record.workflow for record in left})
            log.warning(
                "%d %s to resume of workflows not given (%s): left as they are",
                len(left),
                "run" if len(left) == 1 else "runs",
                ", ".join(names),
            )
        gate = asyncio.Semaphore(concurrency)

        async def resume(workflow: Workflow, run_id: str) -> RunResult | None:
            async with gate:
                try:
                    return await self.run(workflow, run_id=run_id)
                except LeaseHeld:  # another orchestrator got there first: its run, not ours
                    log.info("run %r is being resumed by another orchestrator", run_id)
                    return None

        outcomes = await asyncio.gather(
            *(
                resume(workflows[record.workflow], record.run_id)
                for record in records
                if record.workflow in workflows
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        # A run another orchestrator finished before our turn came reads back finished,
        # not resumed: it is not ours to report (two `resume --due` from cron overlapping).
        return [o for o in outcomes if isinstance(o, RunResult) and o.resumed]

    async def due(self, now: float | None = None) -> list[RunRecord]:
        """Every run `resume_due` would resume, of whatever workflow.

        Paused runs whose time has come, `interrupted` runs and `answered` ones.
        """
        now = self.store.clock() if now is None else now
        return [
            *await self.store.due_runs(now),
            *await self.interrupted(now),
            *await self.answered(),
        ]

    async def interrupted(self, now: float | None = None) -> list[RunRecord]:
        """Runs whose orchestrator stopped before they ended, oldest first.

        Running runs whose lease was given up (the drive was cancelled or lost its store),
        has expired (the process died, so nobody renews it: at most `lease_ttl` after the
        crash) or is held by a process gone from this machine (`_owners.gone`), and runs
        created but never leased, a lease's time later. Not one a
        live lease holds, even this engine's `owner`'s: an owner id given to two engines
        would have them drive one run twice. `resume_due` resumes them.
        """
        now = self.store.clock() if now is None else now
        found = []
        for status in (RunStatus.RUNNING, RunStatus.PENDING):
            for record in await self.store.list_runs(status=status, limit=_SWEEP):
                if record.run_id in self._inflight:
                    continue
                if status == RunStatus.PENDING and record.created_at > now - self.lease_ttl:
                    continue  # being begun right now, most likely
                if not record.leased(now) or gone(record.lease_owner):
                    found.append(record)
        found.sort(key=lambda record: record.created_at)
        return found

    async def answered(self) -> list[RunRecord]:
        """Runs waiting for review with no review item open any more, oldest first.

        Their questions were answered (``firebreak review resolve`` without the workflow's
        code records the answer only), or the drive stopped before writing one; a resume
        applies the answers, or asks again. `resume_due` resumes them.
        """
        waiting = await self.store.list_runs(status=RunStatus.NEEDS_REVIEW, limit=_SWEEP)
        if not waiting:
            return []
        asking = {item.run_id for item in await self.store.review_list(ReviewStatus.OPEN)}
        found = [r for r in waiting if r.run_id not in asking and r.run_id not in self._inflight]
        found.sort(key=lambda record: record.created_at)
        return found

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
        every step runs again. `entry_id` may also be the run's id (one entry per run).
        """
        entry = await find_dead_letter(self.store, entry_id)
        if entry is None:
            raise RunNotFound(f"no dead-letter entry {entry_id!r}", id=entry_id)
        if entry.workflow != workflow.name:
            raise ValueError(f"entry {entry_id!r} is a run of workflow {entry.workflow!r}")
        if from_step is not None and from_step not in workflow.agents:
            raise KeyError(f"workflow {workflow.name!r} has no agent {from_step!r}")
        if input is _NO_INPUT:
            # Checked before anything changes: a replay that cannot start keeps its entry.
            _replayable_input(workflow, entry)
        lease = await self._acquire(entry.run_id)
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
            await self.store.dlq_drop(entry.id)
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
        if workflow is not None:  # checked before anything is written
            if item.workflow != workflow.name:
                raise ValueError(
                    f"review item {item_id!r} is a question of workflow {item.workflow!r}, "
                    f"not {workflow.name!r}"
                )
            spec = workflow.agents.get(item.agent)
            if spec is None:
                raise KeyError(f"workflow {workflow.name!r} has no agent {item.agent!r}")
            from firebreak.engine.codec import validate_output  # noqa: PLC0415 - one use

            value = validate_output(spec, value)
        resolved = await self.store.review_resolve(item_id, encode(value, what="review answer"))
        emit(QueueChanged(source=item.workflow, queue="review", run_id=item.run_id, delta=-1))
        if workflow is not None:
            await self.run(workflow, run_id=item.run_id)
        return resolved


class _LeaseKeeper:
    """Renews a run's lease every third of its time to live while the run is driven.

    A timer on the engine's clock, not a task per run: most runs finish long before their
    first renewal (and a timer seconds away costs the clock's timer wheel next to nothing).
    """

    __slots__ = ("engine", "handle", "lease", "task")

    def __init__(self, engine: Engine, lease: Lease) -> None:
        self.engine = engine
        self.lease = lease
        self.task: asyncio.Task[None] | None = None
        self.handle: Cancellable | None = None
        self._arm()

    def _arm(self) -> None:
        clock = self.engine.clock
        self.handle = clock.call_at(clock.now() + self.engine.lease_ttl / 3, self._due)

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
        self._arm()

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
