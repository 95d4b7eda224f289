"""One drive of one run: the scheduling loop, and what happens at its end.

`Engine` (orchestrator.py) takes the lease and hands the run to `Drive`: it starts every
step whose dependencies are settled, settles each outcome (commit, degrade, review,
pause, fail), and at the end records the outcome — or fails the run: skips what never
ran, compensates completed steps in reverse and dead-letters it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from firebreak._fastinit import fast_new
from firebreak.engine.codec import (
    NotStorable,
    decode_output,
    encode,
    encode_output,
    error_to_dict,
    live_output,
    safe_text,
)
from firebreak.engine.context import CompensationContext
from firebreak.engine.executor import Executor, StepCall, StepOutcome, new_step_call
from firebreak.engine.result import RunResult
from firebreak.events import QueueChanged, RunStateChanged, StepStateChanged, emit, hub
from firebreak.resilience import Timeout
from firebreak.store import Lease, ReviewItem, RunRecord, RunStatus, StepRecord, StepStatus
from firebreak.workflow import AgentSpec, Workflow

if TYPE_CHECKING:
    from firebreak.engine.orchestrator import Engine

__all__ = ["Drive"]

log = logging.getLogger("firebreak.engine")


async def _named(name: str, executor: Executor, call: StepCall) -> tuple[str, StepOutcome]:
    return name, await executor.execute(call)


_OK = (StepStatus.SUCCEEDED, StepStatus.DEGRADED)  # settled so that dependents may run
_FAILING = (StepStatus.SKIPPED, StepStatus.COMPENSATED)  # only a failing run writes these
# Positional, for the commit of every successful step.
_new_record = fast_new(
    StepRecord, "run_id agent status output attempts error degraded_reason seq completed_at"
)


def _question(rec: StepRecord) -> tuple[str, list[Any]]:
    """The reason and suggestions of a step committed as waiting for review."""
    error = rec.error or {}
    kind = str(error.get("type", "")).rpartition(".")[2]
    message = error.get("message", "needs review")
    attrs = error.get("attrs") or {}
    return (f"{kind}: {message}" if kind else message), list(attrs.get("suggestions") or [])


class Graph:
    """A workflow's schedule, as each drive of it starts: computed once per workflow."""

    __slots__ = ("_after", "_roots", "_waits", "dependents")

    def __init__(self, workflow: Workflow) -> None:
        agents = workflow.agents
        self._after = {name: spec.after for name, spec in agents.items()}
        self.dependents: dict[str, list[str]] = {name: [] for name in agents}
        """Direct dependents of each agent."""
        for name, after in self._after.items():
            for dep in after:
                self.dependents[dep].append(name)
        self._waits = {name: len(after) for name, after in self._after.items()}
        self._roots = [name for name, count in self._waits.items() if count == 0]

    def start(self, settled: Mapping[str, StepStatus]) -> tuple[dict[str, int], list[str]]:
        """How many dependencies each unsettled agent still waits for, and those at 0.

        Copies of the figures computed once when nothing has settled yet (a new run).
        """
        if not settled:
            return self._waits.copy(), self._roots.copy()
        blocked = {
            name: sum(settled.get(dep) not in _OK for dep in after)
            for name, after in self._after.items()
            if name not in settled
        }
        return blocked, [name for name, count in blocked.items() if count == 0]


class Drive:
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
        self.agents = workflow.agents  # one read-only view (the property makes one per use)
        self._last = len(self.agents) - 1  # settled agents when the last one commits
        self.name = workflow.name
        self.record = record
        self.run_id = record.run_id
        self.lease = lease
        self.run_input = run_input
        self.resumed = resumed
        self.outputs: dict[str, Any] = {}
        self.stored: dict[str, Any] = {}  # the outputs as committed (JSON), for the result
        self.settled: dict[str, StepStatus] = {}
        self.missing: dict[str, str] = {}
        self.reviews: list[str] = []
        self.executed: list[str] = []
        self.failure: tuple[str, dict[str, Any]] | None = None  # agent, error
        self.pause_until: float | None = None
        self.waiting: set[str] = set()  # paused agents, not committed
        self.pause_error: dict[str, Any] | None = None  # what paused the run, and where
        self.ended = False  # the outcome is recorded and the lease released

    async def drive(self, *, load: bool) -> RunResult:
        """Run every step that can run, settle each, and record how the run ended.

        `load`: take over what earlier drives committed (a resume); a new run has nothing.
        """
        if load:
            await self._load()
        self._announce_start()
        limit = self.workflow.deadline
        deadline = None if limit is None else self.engine.clock.now() + limit
        graph = self.engine._graph(self.workflow)  # noqa: SLF001 - the engine's cache
        dependents = graph.dependents
        blocked, ready = graph.start(self.settled)
        running: set[asyncio.Task[tuple[str, StepOutcome]]] = set()
        done: list[asyncio.Task[tuple[str, StepOutcome]]] = []
        wake = asyncio.Event()

        def finished(task: asyncio.Task[tuple[str, StepOutcome]]) -> None:
            done.append(task)
            wake.set()

        def unblock(name: str) -> None:  # once `name` has settled: what it made ready
            if self.settled.get(name) in _OK:
                for dependent in dependents[name]:
                    # Not in `blocked`: it settled in an earlier drive, before the
                    # workflow's code gave it this dependency.
                    if dependent in blocked:
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
                    call = self._call(self.agents[name], deadline)
                    await self._settle(name, await executor.execute(call))
                    unblock(name)
                    continue
                while ready:
                    spec = self.agents[ready.pop()]
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
                    name, outcome = task.result()
                    await self._settle(name, outcome)
                    unblock(name)
        finally:
            for task in running:  # only when we are cancelled or the store failed
                task.cancel()
        return await self._finish()

    def _announce_start(self) -> None:
        if hub.active:
            emit(
                RunStateChanged(
                    source=self.name, run_id=self.run_id, status="running", resumed=self.resumed
                )
            )

    async def _load(self) -> None:
        """Take over what earlier drives committed."""
        steps = await self.store.get_steps(self.run_id)
        resolved, asked = await self._reviews(steps)
        unasked = []
        gone = [name for name in steps if name not in self.agents]
        if gone:  # the workflow's code changed since the run began: say so, go on
            log.warning(
                "run %r has committed steps of agents workflow %r no longer has (%s): "
                "ignored; the run goes on with the workflow as it is now",
                self.run_id,
                self.name,
                ", ".join(gone),
            )
        for name, rec in steps.items():
            if name not in self.agents:
                continue
            if rec.status == StepStatus.NEEDS_REVIEW and name in resolved:
                self._adopt(await self._apply_review(rec, resolved[name]))
            else:
                self._adopt(rec)
                if rec.status == StepStatus.NEEDS_REVIEW and name not in asked:
                    unasked.append(rec)
        # Parked, but the drive stopped before writing the review item (the step is
        # committed first): ask now, once every input of the question is loaded.
        for rec in unasked:
            await self._open_review(self.agents[rec.agent], *_question(rec))

    def _adopt(self, rec: StepRecord) -> None:
        """Take a committed step as this drive's own: its output, or why it is missing."""
        name = rec.agent
        spec = self.agents[name]
        status = rec.status
        if status == StepStatus.COMPENSATION_FAILED:  # its effect stands: so does its output
            status = StepStatus.SUCCEEDED
        if status in (StepStatus.SUCCEEDED, StepStatus.DEGRADED):
            self.outputs[name] = decode_output(spec, rec.output)
            self.stored[name] = rec.output
            if status == StepStatus.DEGRADED:
                self.missing[name] = rec.degraded_reason or "degraded"
        self.settled[name] = status
        if status == StepStatus.FAILED:  # we crashed while failing the run: finish that
            self.failure = (name, rec.error or {"message": f"{name} failed"})
        elif status in _FAILING and self.failure is None:
            # The run was failing, but the workflow's code no longer has the agent that
            # failed (a FAILED step of a current agent replaces this): it fails still, and
            # never "succeeds" without the outputs of the steps it skipped or undid.
            because = rec.degraded_reason or f"{name} was {status.value}"
            self.failure = (name, {"type": "Skipped", "message": because})

    async def _reviews(
        self, steps: Mapping[str, StepRecord]
    ) -> tuple[dict[str, ReviewItem], set[str]]:
        """This run's resolved review items by agent, and the agents with an open one.

        The open items are noted in `reviews`.
        """
        resolved: dict[str, ReviewItem] = {}
        asked: set[str] = set()
        if any(rec.status == StepStatus.NEEDS_REVIEW for rec in steps.values()):
            for item in await self.store.review_of_run(self.run_id):
                if item.status == "resolved":
                    resolved[item.agent] = item
                else:
                    asked.add(item.agent)
                    self.reviews.append(item.id)
        return resolved, asked

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
        missing = self.missing
        return new_step_call(
            self.name,
            spec,
            self.run_id,
            self.run_input,
            spec.call_kwargs(self.run_input, self.outputs),
            {d: missing[d] for d in spec.after if d in missing} if missing else {},
            deadline,
            self.lease,
        )

    async def _commit(self, rec: StepRecord, attempts: int, reason: str = "") -> bool:
        """Commit `rec`; ``False`` when another record was there first and was adopted.

        A commit that settles the run records the run's outcome in the same write where
        the store can (`SupportsCommitAndFinish`): one fsync for both on a durable store.
        """
        store = self.store
        ending = self._ending(rec) if len(self.settled) == self._last else None
        if ending is not None:
            status, result = ending
            first = await store.commit_step_and_finish(  # type: ignore[attr-defined]
                self.lease, rec, status, result=result
            )
            self.ended = first
        else:
            first = await store.commit_step(self.lease, rec)
        if not first:
            # Someone committed this step first (a worker, a replaced orchestrator): the
            # stored result is the truth, so dependents get that one, not ours.
            stored = (await store.get_steps(self.run_id)).get(rec.agent)
            if stored is not None:
                self._adopt(stored)
                self._announce(stored, stored.attempts, stored.degraded_reason or "")
                return False
        self.settled[rec.agent] = rec.status
        if hub.active:
            self._announce(rec, attempts, reason)
        return True

    def _ending(self, rec: StepRecord) -> tuple[RunStatus, dict[str, Any]] | None:
        """The run's outcome and result if committing `rec` settles it, else ``None``.

        `_commit` asks once all agents but one have settled. Only for a store that records
        both in one write, and only when nothing can follow: `rec` is that last agent, none
        failed (no compensation to come), none waits for a review or is paused. Built as
        `_finish` builds it once `_settle` has applied `rec`.
        """
        if not (
            self.engine._commit_and_finish  # noqa: SLF001 - the engine's store capability
            and rec.status in _OK
            and self.failure is None
            and self.pause_until is None
            and rec.agent not in self.settled
            and StepStatus.NEEDS_REVIEW not in self.settled.values()
        ):
            return None
        missing = self.missing
        if rec.status == StepStatus.DEGRADED:
            missing = {**missing, rec.agent: rec.degraded_reason or "degraded"}
        status = RunStatus.DEGRADED if missing else RunStatus.SUCCEEDED
        outputs = {**self.stored, rec.agent: rec.output}
        return status, {"missing": missing, "reviews": self.reviews, "outputs": outputs}

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
        spec = self.agents[name]
        if outcome.committed is not None:  # the executor's worker committed it already
            rec = outcome.committed
            self._adopt(rec)
            self._announce(rec, rec.attempts, rec.degraded_reason or "")
            if rec.status == StepStatus.NEEDS_REVIEW:
                await self._open_review(spec, *_question(rec))
            return
        if outcome.status == "succeeded":
            try:
                stored = encode_output(name, outcome.output)
            except NotStorable as exc:
                outcome = StepOutcome(status="failed", attempts=outcome.attempts, error=exc)
            else:
                rec = _new_record(self.run_id, name, StepStatus.SUCCEEDED, stored, outcome.attempts)
                if await self._commit(rec, outcome.attempts):
                    output = outcome.output  # a plain value is its own checkpoint: no call
                    self.outputs[name] = (
                        output if output is stored else live_output(spec, output, stored)
                    )
                    self.stored[name] = stored
                return
        error = outcome.error
        # For people to read, and stored as the degraded reason: no store may refuse it.
        reason = safe_text(f"{type(error).__name__}: {error}") if error is not None else "failed"
        if outcome.status == "failed" and spec.on_exhausted == "pause" and outcome.transient:
            self._pause(name, outcome)
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
                output=encode_output(name, default, "default"),
                attempts=outcome.attempts,
                error=error_dict,
                degraded_reason=reason,
            )
            if await self._commit(rec, outcome.attempts, reason):
                # Read back from its record: a copy of its own for every run (a list default
                # is one object, shared), as a resume would give it.
                self.outputs[name] = decode_output(spec, rec.output)
                self.stored[name] = rec.output
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

    def _pause(self, name: str, outcome: StepOutcome) -> None:
        """Leave `name` uncommitted; the run pauses until the outage may have passed."""
        wait = outcome.retry_after if outcome.retry_after is not None else self.engine.pause_for
        until = self.store.clock() + wait
        self.pause_until = max(self.pause_until or until, until)
        self.waiting.add(name)
        if self.pause_error is None and outcome.error is not None:  # the first: people see it
            self.pause_error = {
                **error_to_dict(outcome.error),
                "agent": name,
                "attempts": outcome.attempts,
            }

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
            reason=safe_text(reason),  # for people to read: no store may refuse it (see safe_text)
            suggestions=safe_text(encoded),
            context=safe_text(context),
        )
        self.reviews.append(item_id)
        emit(QueueChanged(source=self.name, queue="review", run_id=self.run_id, delta=1))

    async def _finish(self) -> RunResult:
        if self.failure is not None:
            return await self._fail(*self.failure)
        result: dict[str, Any] = {"missing": self.missing, "reviews": self.reviews}
        error = None
        if self.pause_until is not None:
            status = RunStatus.PAUSED
            reason = f"waiting for {', '.join(sorted(self.waiting))}"
            error = self.pause_error
        elif StepStatus.NEEDS_REVIEW in self.settled.values():
            status, reason = RunStatus.NEEDS_REVIEW, "waiting for review"
        elif len(self.settled) < len(self.agents):  # settled holds only this workflow's agents
            unsettled = [a for a in self.agents if a not in self.settled]
            raise RuntimeError(f"run {self.run_id!r}: agents {unsettled} could not start")
        else:
            status = RunStatus.DEGRADED if self.missing else RunStatus.SUCCEEDED
            reason = f"degraded: {', '.join(self.missing)}" if self.missing else ""
            # As committed: encoded once, when each step committed (or as loaded).
            result["outputs"] = self.stored
        if not self.ended:  # else the last step's commit recorded it (`_ending`)
            await self.engine._end(  # noqa: SLF001 - the engine's own helper
                self.lease, status, result=result, error=error, resume_at=self.pause_until
            )
            self.ended = True
        if hub.active:
            emit(
                RunStateChanged(
                    source=self.name, run_id=self.run_id, status=status.value, reason=reason
                )
            )
        return RunResult(
            run_id=self.run_id,
            workflow=self.name,
            status=status,
            outputs=self.outputs,  # not copied: the drive ends here
            missing=self.missing,
            error=error,
            resume_at=self.pause_until,
            reviews=tuple(self.reviews),
            resumed=self.resumed,
            executed=tuple(self.executed),
        )

    async def _fail(self, agent: str, error: dict[str, Any]) -> RunResult:
        because = f"{agent} failed"
        for name in self.agents:
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
        # The dead letter first: a run stopped between the two writes (kill -9, a full
        # disk) is still running, and its resume fails it again into the queue. The other
        # order left it "failed", finished, with no entry to replay it from.
        reason = f"agent {agent!r} failed: {error.get('message', '')}"
        await self.store.dlq_put(
            run_id=self.run_id,
            workflow=self.name,
            reason=reason,
            error=error,
            input=self.record.input,
            steps=await self.store.get_steps(self.run_id),
        )
        await self.engine._end(  # noqa: SLF001 - the engine's own helper
            self.lease, RunStatus.FAILED, result=result, error=error
        )
        self.ended = True
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
            reviews=tuple(self.reviews),  # still open: a replay of the run uses their answers
            resumed=self.resumed,
            executed=tuple(self.executed),
        )

    async def _compensate(self) -> list[str]:
        """Undo completed steps in reverse completion order; a failure is recorded, not fatal."""
        steps = await self.store.get_steps(self.run_id)
        by_seq = sorted(steps.values(), key=lambda rec: rec.seq, reverse=True)
        done = [rec for rec in by_seq if rec.status == StepStatus.SUCCEEDED]
        # Undone by an earlier drive that stopped while compensating: in the list too.
        undone = [rec.agent for rec in by_seq if rec.status == StepStatus.COMPENSATED]
        for rec in done:
            spec = self.agents.get(rec.agent)
            if spec is None or spec.compensate is None:
                continue
            call = new_step_call(
                self.name, spec, self.run_id, self.run_input, {}, {}, None, self.lease
            )
            ctx = CompensationContext(call, 1, self.store, self.engine.clock)
            output = (
                self.outputs[spec.name]
                if spec.name in self.outputs
                else decode_output(spec, rec.output)
            )
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
