"""`Worker`: runs the step tasks of a bus with each agent's full pipeline (`firebreak worker`).

For every task: read the run's lease and the step (one read where the store offers
`SupportsLeaseAndStep`, else the run and its steps, two reads in flight together) and drop
the task, acked, if its step is already committed or its lease is no longer the run's (a
redelivered duplicate or re-sent copy, or a task of an orchestrator that was replaced);
else run the agent through `LocalExecutor`, commit the record the orchestrator would
commit, fenced by the lease the task carries (first commit wins: the real guarantee; the
check before only spares side effects), reply to the orchestrator, and only then ack. A
crash anywhere before the ack redelivers the task; the commit makes the redelivery
harmless. Copies of one step reaching one worker together run one after the other.
While a step runs its task is touched, so a slow step is not taken for abandoned; a task
taken late (past its ``held_after``) or touched also sends its orchestrator a ``held``
note, so it does not send the task again.

When the store offers `SupportsCommitThen` on the bus's own server (a Redis store and a
Redis bus), a first commit carries the reply and the ack in the same write: one round
trip instead of two, and the same order (nothing is replied or acked without the commit).
A duplicate commit sends nothing, and the worker replies and acks as above.

`stop()` is the graceful end (SIGTERM): take no more work, let held steps finish for up to
`drain` seconds, hand the rest back to the bus. Cancelling `run()` instead abandons what
the worker holds; the bus redelivers it after its visibility timeout, as after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from firebreak.bus import Consumer, Delivery, TaskBus
from firebreak.bus.base import is_reply_queue
from firebreak.clock import Clock, system_clock
from firebreak.engine.bus_executor import (
    TASK_VERSION,
    WORKER_GROUP,
    PoisonTask,
    record_for,
    record_to_json,
    task_queue,
)
from firebreak.engine.codec import decode_output, error_to_dict
from firebreak.engine.executor import LocalExecutor, StepCall, StepOutcome
from firebreak.engine.orchestrator import validate_input
from firebreak.errors import StaleLease, StoreError
from firebreak.resilience import BreakerRegistry, breakers
from firebreak.store import (
    CheckpointStore,
    Lease,
    StepRecord,
    SupportsCommitThen,
    SupportsLeaseAndStep,
)
from firebreak.workflow import Workflow

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("firebreak.worker")


@dataclass(slots=True)
class WorkerStats:
    """What a worker did, counted since it started."""

    executed: int = 0
    """Steps it ran."""
    committed: int = 0
    """Step results it committed first."""
    duplicates: int = 0
    """Tasks whose step was already committed (redelivered duplicates), dropped."""
    stale: int = 0
    """Tasks of a replaced orchestrator (their lease is no longer the run's), dropped."""
    paused: int = 0
    """Steps that ended in a transient outage with nothing to commit (the run pauses)."""
    dead: int = 0
    """Tasks that went to the dead letters (poison or unreadable)."""
    released: int = 0
    """Tasks handed back unfinished at shutdown."""


class _BadTask(ValueError):
    """A task this worker cannot run (unknown workflow or agent, newer format)."""


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Consumes the tasks of some agents of some workflows and runs them.

    Example:
        >>> async with open_bus(url) as bus, open_store(store_url) as store:
        ...     worker = Worker([invoice], bus=bus, store=store, concurrency=8)
        ...     await worker.run()          # until worker.stop()

    Args:
        workflows: the workflows whose tasks it runs (their code decodes the inputs).
        bus: the task bus (set up by the caller).
        store: where step results are committed (set up by the caller).
        agents: only these agents' queues (names; default every agent).
        concurrency: steps run at once; the bus never hands it more.
        name: its consumer name; default ``host:pid:random``.
        drain: seconds `stop()` lets held steps finish before handing them back.
        registry: breakers of the agents' services (share them through Redis to make
            every worker see the same breaker).
        clock: monotonic time for the pipelines.
    """

    def __init__(
        self,
        workflows: Workflow | Sequence[Workflow],
        *,
        bus: TaskBus,
        store: CheckpointStore,
        agents: Collection[str] | None = None,
        concurrency: int = 8,
        name: str | None = None,
        drain: float = 30.0,
        registry: BreakerRegistry = breakers,
        clock: Clock = system_clock,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        flows = [workflows] if isinstance(workflows, Workflow) else list(workflows)
        self.workflows: dict[str, Workflow] = {}
        for workflow in flows:
            workflow.freeze()
            self.workflows[workflow.name] = workflow
        wanted = None if agents is None else set(agents)
        self.queues = [
            task_queue(workflow.name, agent)
            for workflow in self.workflows.values()
            for agent in workflow.agents
            if wanted is None or agent in wanted
        ]
        known = {a for w in self.workflows.values() for a in w.agents}
        if wanted is not None and (unknown := wanted - known):
            raise ValueError(f"no agent(s) {', '.join(sorted(unknown))} in the workflows given")
        if not self.queues:
            raise ValueError("the worker has no agents to serve")
        self.bus = bus
        self.store = store
        self.concurrency = concurrency
        self.name = name or _default_name()
        self.drain = drain
        self.retry_pause = 1.0
        """Seconds to wait before handing back a task the store failed on."""
        self.clock = clock
        self.executor = LocalExecutor(store, registry=registry, clock=clock)
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._held: dict[asyncio.Task[None], Delivery] = {}
        self._running: dict[tuple[str, str], asyncio.Event] = {}  # steps running, by run/agent
        self._check = store.get_lease_and_step if isinstance(store, SupportsLeaseAndStep) else None
        # A store on the bus's own server commits, replies and acks in one write.
        self._commit_then: Callable[[Lease, StepRecord, Any], Awaitable[bool]] | None = None
        if isinstance(store, SupportsCommitThen) and store.same_server(getattr(bus, "url", "")):
            self._commit_then = store.commit_step_then

    def stop(self) -> None:
        """Stop taking work; `run` returns once held steps are finished or handed back."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume and run tasks until `stop()`."""
        consumer = self.bus.consumer(
            self.queues, group=WORKER_GROUP, name=self.name, max_in_flight=self.concurrency
        )
        log.info("worker %s serving %s", self.name, ", ".join(self.queues))
        try:
            while not self._stopping.is_set():
                delivery = await consumer.get(0.25)
                if delivery is None:
                    continue
                task = asyncio.create_task(self._handle(consumer, delivery))
                self._held[task] = delivery
                task.add_done_callback(self._done)
            await self._shutdown(consumer)
        except asyncio.CancelledError:
            for task in list(self._held):  # abandoned, as if the process had died
                task.cancel()
            raise
        finally:
            await consumer.close()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._held.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task failed, left for redelivery: %r", exc, exc_info=exc)

    async def _shutdown(self, consumer: Consumer) -> None:
        if not self._held:
            return
        tasks = list(self._held)
        _, pending = await asyncio.wait(tasks, timeout=self.drain)
        for task in pending:
            delivery = self._held.get(task)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if delivery is not None:
                await consumer.release(delivery)
                self.stats.released += 1

    async def _touching(
        self,
        consumer: Consumer,
        delivery: Delivery,
        first: float | None = None,
        note: tuple[str, dict[str, Any], str] | None = None,
    ) -> None:
        """Touch the task every third of the visibility timeout while its step runs.

        With `note` (reply queue, body, key), each touch also tells the orchestrator the
        task is held, so a step running past its budget is not sent again.
        """
        every = self.bus.policy.visibility / 3
        while True:
            await asyncio.sleep(every if first is None else first)
            first = None
            try:
                await consumer.touch(delivery)
                if note is not None:
                    await self.bus.publish(note[0], note[1], key=note[2])
            except Exception as exc:  # noqa: BLE001 - the next touch may work
                log.warning("could not touch task %s: %s", delivery.id, exc)

    async def _handle(self, consumer: Consumer, delivery: Delivery) -> None:
        if delivery.dead:
            await self._poisoned(delivery)
            return
        try:
            call, lease, reply_to = self._decode(delivery.body)
        except (_BadTask, KeyError, TypeError, ValueError) as exc:
            log.exception("rejecting unreadable task %s", delivery.id)
            await consumer.reject(delivery, f"unreadable task: {type(exc).__name__}: {exc}")
            self.stats.dead += 1
            return
        # The toucher starts only once a step has run for a touch interval: most steps end
        # sooner, and a timer costs far less than a task per step.
        toucher: list[asyncio.Task[None]] = []
        note = None
        if reply_to and delivery.body.get("held_after") is not None:
            note = (reply_to, self._reply_body(call, delivery, {"kind": "held"}), call.run_id)
        timer = asyncio.get_running_loop().call_later(
            self.bus.policy.visibility / 3,
            lambda: toucher.append(
                asyncio.create_task(self._touching(consumer, delivery, 0, note))
            ),
        )
        try:
            reply = await self._run_step(call, lease, delivery, reply_to, consumer)
        except (StoreError, OSError) as exc:
            # The store is out of reach: hand the task back (not counted as a delivery)
            # after a pause, so a short outage costs no dead letter and no busy loop.
            log.warning("store failed on task %s, handing it back: %s", delivery.id, exc)
            await asyncio.sleep(self.retry_pause)
            await consumer.release(delivery)
            return
        except Exception as exc:  # a bug in this task's handling: never lose it silently
            log.exception("task %s failed; dead-lettering it", delivery.id)
            await consumer.reject(delivery, f"worker error: {type(exc).__name__}: {exc}")
            await self._poisoned(dataclasses.replace(delivery, reason=str(exc)))
            return
        finally:
            timer.cancel()
            for task in toucher:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if reply is None:  # replied and acked with the commit
            return
        settle = getattr(consumer, "reply_and_ack", None)
        if reply_to and settle is not None:
            body = self._reply_body(call, delivery, reply)
            try:  # the reply and the ack in one round trip, when the bus can
                await settle(delivery, reply_to, body, key=call.run_id)
            except Exception as exc:  # noqa: BLE001 - fall back to a reply, then an ack
                log.debug("combined reply and ack failed for %s: %s", delivery.id, exc)
            else:
                return
        await self._reply(reply_to, call, delivery, reply)
        await consumer.ack(delivery)

    async def _run_step(
        self,
        call: StepCall,
        lease: Lease,
        delivery: Delivery,
        reply_to: str | None,
        consumer: Consumer,
    ) -> dict[str, Any] | None:
        """Run and commit one step; the reply for its orchestrator (``None``: sent, and acked)."""
        run_id, agent = call.run_id, call.spec.name
        # Copies of one step's task (sent again by the orchestrator, or redelivered) that
        # reach this worker together run one at a time: the later ones then find it committed.
        key = (run_id, agent)
        while (running := self._running.get(key)) is not None:
            await running.wait()
        done = self._running[key] = asyncio.Event()
        try:
            return await self._run_once(call, lease, delivery, reply_to, consumer)
        finally:
            del self._running[key]
            done.set()

    async def _run_once(
        self,
        call: StepCall,
        lease: Lease,
        delivery: Delivery,
        reply_to: str | None,
        consumer: Consumer,
    ) -> dict[str, Any] | None:
        run_id, agent = call.run_id, call.spec.name
        # Before anything runs: the step and the lease, read together. A committed step is a
        # redelivered duplicate or a copy the orchestrator sent again; a lease that is no
        # longer the run's is a replaced orchestrator's task. The fenced commit below stays
        # the guarantee; this only spares the side effects.
        current, stored = await self._read(run_id, agent)
        if stored is not None:
            self.stats.duplicates += 1
            log.info(
                "task %s: step %s/%s is already committed, dropped", delivery.id, run_id, agent
            )
            return {"kind": "committed", "step": record_to_json(stored)}
        if current is None or (current.owner, current.token) != (lease.owner, lease.token):
            self.stats.stale += 1
            log.info(
                "task %s of %s/%s carries a stale lease (token %d; the run's: %s), dropped",
                delivery.id,
                run_id,
                agent,
                lease.token,
                "none" if current is None else f"{current.owner} token {current.token}",
            )
            return {"kind": "stale", "token": lease.token}
        held_after = delivery.body.get("held_after")
        if reply_to and held_after is not None and self.store.clock() >= float(held_after):
            # Taken late: the orchestrator may be about to send it again; tell it we have it.
            await self._reply(reply_to, call, delivery, {"kind": "held"})
        outcome = await self.executor.execute(call)
        self.stats.executed += 1
        settle = (consumer, delivery, reply_to) if reply_to else None
        return await self._commit(call, lease, outcome, settle)

    async def _read(self, run_id: str, agent: str) -> tuple[Lease | None, StepRecord | None]:
        """The run's current lease (``None``: gone or released) and the agent's step."""
        if self._check is not None:
            return await self._check(run_id, agent)
        # Both reads in flight at once (one task, not gather's two).
        reading = asyncio.ensure_future(self.store.get_run(run_id))
        try:
            steps = await self.store.get_steps(run_id)
        except BaseException:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
            raise
        run = await reading
        if run is None or run.lease_owner is None:
            return None, steps.get(agent)
        current = Lease(
            run_id=run_id,
            owner=run.lease_owner,
            token=run.lease_token,
            expires_at=run.lease_expires or 0.0,
        )
        return current, steps.get(agent)

    async def _commit(
        self,
        call: StepCall,
        lease: Lease,
        outcome: StepOutcome,
        settle: tuple[Consumer, Delivery, str] | None = None,
    ) -> dict[str, Any] | None:
        """Commit the step's record; the reply for its orchestrator.

        With `settle` (the consumer, the delivery, the reply queue) and a store on the bus's
        server, a first commit also replies and acks, in the same write: ``None`` then.
        """
        rec = record_for(call.spec, call.run_id, outcome)
        if rec is None:
            self.stats.paused += 1
            return {
                "kind": "paused",
                "attempts": outcome.attempts,
                "error": None if outcome.error is None else error_to_dict(outcome.error),
                "retry_after": outcome.retry_after,
            }
        reply = {"kind": "committed", "step": record_to_json(rec)}
        together: Awaitable[bool] | None = None
        if settle is not None and self._commit_then is not None:
            consumer, delivery, reply_to = settle
            in_write = getattr(consumer, "reply_and_ack_in", None)
            if in_write is not None:
                together = in_write(
                    delivery,
                    reply_to,
                    self._reply_body(call, delivery, reply),
                    key=call.run_id,
                    write=functools.partial(self._commit_then, lease, rec),
                )
        try:
            if together is not None:
                if await together:
                    self.stats.committed += 1
                    return None
                first = False  # a duplicate: nothing was sent
            else:
                first = await self.store.commit_step(lease, rec)
        except (StaleLease, KeyError):  # the run is no longer this lease's (or is gone)
            self.stats.stale += 1
            return {"kind": "stale", "token": lease.token}
        if not first:
            self.stats.duplicates += 1
            rec = (await self.store.get_steps(call.run_id)).get(call.spec.name, rec)
            return {"kind": "committed", "step": record_to_json(rec)}
        self.stats.committed += 1
        return reply

    async def _reply(
        self, reply_to: str | None, call: StepCall, delivery: Delivery, reply: Mapping[str, Any]
    ) -> None:
        if not reply_to:
            return
        body = self._reply_body(call, delivery, reply)
        try:
            await self.bus.publish(reply_to, body, key=call.run_id)
        except Exception as exc:  # noqa: BLE001 - the orchestrator also polls the store
            log.warning("could not reply for %s/%s: %s", call.run_id, call.spec.name, exc)

    @staticmethod
    def _reply_body(call: StepCall, delivery: Delivery, reply: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "task": delivery.body.get("task"),
            "run_id": call.run_id,
            "agent": call.spec.name,
            **reply,
        }

    async def _poisoned(self, delivery: Delivery) -> None:
        """A task went to the dead letters: fail its step, so its run does not wait forever."""
        self.stats.dead += 1
        try:
            call, lease, reply_to = self._decode(delivery.body)
        except (_BadTask, KeyError, TypeError, ValueError):
            log.exception("dead-lettered an unreadable task %s (%s)", delivery.id, delivery.reason)
            return
        log.error(
            "task %s (%s/%s) dead-lettered: %s",
            delivery.id,
            call.run_id,
            call.spec.name,
            delivery.reason,
        )
        error = PoisonTask(f"task dead-lettered: {delivery.reason}", deliveries=delivery.deliveries)
        outcome = StepOutcome(status="failed", error=error)
        reply = await self._commit(call, lease, outcome)
        if reply is not None:  # without `settle`, always
            await self._reply(reply_to, call, delivery, reply)

    def _decode(self, body: Mapping[str, Any]) -> tuple[StepCall, Lease, str | None]:
        """The step call, the orchestrator's lease and the reply queue of a task message."""
        version = int(body.get("v", 0))
        if version > TASK_VERSION:
            raise _BadTask(f"task format v{version} is newer than this worker's v{TASK_VERSION}")
        workflow = self.workflows.get(str(body["workflow"]))
        if workflow is None:
            raise _BadTask(f"no workflow {body['workflow']!r} in this worker")
        spec = workflow.agents.get(str(body["agent"]))
        if spec is None:
            raise _BadTask(f"workflow {workflow.name!r} has no agent {body['agent']!r}")
        run_input = validate_input(workflow, body["run_input"])
        outputs = {
            dep: decode_output(workflow.agents[dep], value)
            for dep, value in dict(body.get("outputs") or {}).items()
        }
        deadline = body.get("deadline")
        if deadline is not None and not math.isfinite(float(deadline)):
            raise _BadTask(f"deadline {deadline!r} is not a time")
        call = StepCall(
            workflow=workflow.name,
            spec=spec,
            run_id=str(body["run_id"]),
            run_input=run_input,
            inputs=spec.call_kwargs(run_input, outputs),
            degraded=dict(body.get("degraded") or {}),
            deadline=(
                None
                if deadline is None
                else self.clock.now() + float(deadline) - self.store.clock()
            ),
        )
        raw = body["lease"]
        lease = Lease(
            run_id=call.run_id,
            owner=str(raw["owner"]),
            token=int(raw["token"]),
            expires_at=float(raw.get("expires_at") or 0.0),
        )
        reply_to = body.get("reply_to")
        if reply_to is not None and not is_reply_queue(str(reply_to)):
            # A reply sent there would land on a task queue, as a task for some worker.
            raise _BadTask(f"reply_to {reply_to!r} is not a reply queue")
        return call, lease, None if reply_to is None else str(reply_to)
