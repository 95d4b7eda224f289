"""Running steps on `firebreak worker` processes: the task message and `BusExecutor`.

The orchestrator side of the bus. For each step, `BusExecutor` publishes a task on the
agent's queue (``<workflow>.<agent>``) carrying the orchestrator's lease, and waits for
the step to be committed:

1. a worker runs the agent with its full pipeline, turns the outcome into the step record
   the orchestrator would have committed (`record_for`), commits it **with the lease the
   task carries** (first commit wins; a stale lease is refused), replies, then acks;
2. the reply (on the executor's own reply queue) wakes the waiting step; the store is
   still the truth: without a reply, the executor finds the commit by reading the store
   every `poll` seconds;
3. the executor hands the orchestrator a `StepOutcome` rebuilt from the committed record
   (`outcome_for`); the orchestrator's commit of it is a duplicate, so it adopts the
   stored record.

A task the broker accepted and then lost is sent again, a bounded number of times, unless
a worker has said it holds it (see `BusExecutor`). A step that stays uncommitted past the
run's deadline (plus `grace`) fails with `DeadlineExceeded`, which the orchestrator
commits itself (first commit wins, again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self

from firebreak.bus import Consumer, Delivery, TaskBus
from firebreak.bus.base import REPLY_PREFIX
from firebreak.clock import Clock, system_clock
from firebreak.engine.codec import (
    NotStorable,
    decode_output,
    encode,
    encode_output,
    error_to_dict,
)
from firebreak.engine.executor import StepCall, StepOutcome
from firebreak.errors import DeadlineExceeded, FirebreakError, PoisonTask, StaleLease
from firebreak.resilience.classify import RetryInfo, tag
from firebreak.resilience.timeout import as_seconds
from firebreak.store import CheckpointStore, Lease, StepRecord, StepStatus
from firebreak.workflow import AgentSpec

__all__ = [
    "TASK_VERSION",
    "BusExecutor",
    "PoisonTask",
    "RemoteError",
    "outcome_for",
    "record_for",
    "record_from_json",
    "record_to_json",
    "step_budget",
    "task_queue",
]

log = logging.getLogger("firebreak.engine.bus")

TASK_VERSION = 1
"""The task message format this firebreak writes (``"v"``); workers refuse newer ones."""
WORKER_GROUP = "firebreak-workers"
"""The consumer group every worker of a queue joins."""


class RemoteError(Exception):
    """An error raised in a worker, rebuilt from its stored form.

    Its class is made per original type and carries the original's module and name, so
    `error_to_dict` of it gives back the stored record, and ``type(e).__name__`` reads
    as the original's. Originals from firebreak's tree (stored with ``attrs``) are also
    `FirebreakError`s with those attributes.
    """


class _RemoteFirebreakError(RemoteError, FirebreakError):
    """A rebuilt error that was a `FirebreakError` in the worker."""


_remote_types: dict[tuple[str, bool], type[RemoteError]] = {}


def _remote(error: Mapping[str, Any] | None, fallback: str) -> RemoteError:
    data = dict(error or {})
    full = str(data.get("type") or f"{__name__}.RemoteError")
    attrs = data.get("attrs")
    ours = isinstance(attrs, dict)
    cls = _remote_types.get((full, ours))
    if cls is None:
        module, qualname = _split_type(full)
        cls = type(
            qualname.rpartition(".")[2],
            (_RemoteFirebreakError if ours else RemoteError,),
            {"__module__": module, "__qualname__": qualname},
        )
        _remote_types[full, ours] = cls
    message = str(data.get("message", fallback))
    exc = cls(message, **attrs) if isinstance(attrs, dict) else cls(message)
    retry = data.get("retry")
    if isinstance(retry, dict):
        tag(
            exc,
            RetryInfo(
                policy=str(retry.get("policy", "")),
                attempts=int(retry.get("attempts") or 0),
                reason=str(retry.get("reason", "")),
                retry_after=retry.get("retry_after"),
            ),
        )
    cause = data.get("cause")
    if isinstance(cause, dict):
        exc.__cause__ = _remote({"type": cause.get("type"), "message": cause.get("message")}, "")
    return exc


def _split_type(full: str) -> tuple[str, str]:
    """``module.Qual.Name`` into module and qualname (the module is what precedes a capital)."""
    parts = full.split(".")
    for index, part in enumerate(parts):
        if part[:1].isupper():
            return ".".join(parts[:index]) or "builtins", ".".join(parts[index:])
    return ".".join(parts[:-1]) or "builtins", parts[-1]


def task_queue(workflow: str, agent: str) -> str:
    """The queue of an agent's tasks: ``<workflow>.<agent>``."""
    return f"{workflow}.{agent}"


def record_to_json(rec: StepRecord) -> dict[str, Any]:
    """A step record as a JSON object (for replies)."""
    return {
        "run_id": rec.run_id,
        "agent": rec.agent,
        "status": rec.status.value,
        "output": rec.output,
        "attempts": rec.attempts,
        "error": rec.error,
        "degraded_reason": rec.degraded_reason,
        "seq": rec.seq,
        "completed_at": rec.completed_at,
    }


def record_from_json(data: Mapping[str, Any]) -> StepRecord:
    """The inverse of `record_to_json`."""
    return StepRecord(
        run_id=str(data["run_id"]),
        agent=str(data["agent"]),
        status=StepStatus(data["status"]),
        output=data.get("output"),
        attempts=int(data.get("attempts") or 0),
        error=data.get("error"),
        degraded_reason=data.get("degraded_reason"),
        seq=int(data.get("seq") or 0),
        completed_at=float(data.get("completed_at") or 0.0),
    )


def _reason(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "failed"


def record_for(spec: AgentSpec, run_id: str, outcome: StepOutcome) -> StepRecord | None:
    """The record the orchestrator commits for `outcome`; ``None`` when it would pause.

    The same decisions as the orchestrator's own settling of a step: success; a transient
    failure of an agent that pauses (nothing committed); review; an optional agent's
    default (degraded); a critical agent's failure.
    """
    if outcome.status == "succeeded":
        try:
            stored = encode_output(spec.name, outcome.output)
        except NotStorable as exc:
            outcome = StepOutcome(status="failed", attempts=outcome.attempts, error=exc)
        else:
            return StepRecord(
                run_id=run_id,
                agent=spec.name,
                status=StepStatus.SUCCEEDED,
                output=stored,
                attempts=outcome.attempts,
            )
    error = outcome.error
    error_dict = error_to_dict(error) if error is not None else None
    if outcome.status == "failed" and spec.on_exhausted == "pause" and outcome.transient:
        return None
    if outcome.status == "needs_human" or spec.on_exhausted == "review":
        return StepRecord(
            run_id=run_id,
            agent=spec.name,
            status=StepStatus.NEEDS_REVIEW,
            attempts=outcome.attempts,
            error=error_dict,
        )
    if not spec.critical:
        return StepRecord(
            run_id=run_id,
            agent=spec.name,
            status=StepStatus.DEGRADED,
            output=encode_output(spec.name, spec.default, "default"),
            attempts=outcome.attempts,
            error=error_dict,
            degraded_reason=_reason(error),
        )
    return StepRecord(
        run_id=run_id,
        agent=spec.name,
        status=StepStatus.FAILED,
        attempts=outcome.attempts,
        error=error_dict,
    )


def outcome_for(spec: AgentSpec, rec: StepRecord) -> StepOutcome:
    """The `StepOutcome` of a step a worker committed as `rec`.

    It carries `rec` as `committed`, so the orchestrator adopts it (and opens the review
    item of a step that needs one) instead of committing anything itself; the rebuilt
    error reads as the original for whoever looks at the outcome.
    """
    status = rec.status
    if status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED):
        output = decode_output(spec, rec.output)
        return StepOutcome(status="succeeded", output=output, attempts=rec.attempts, committed=rec)
    error = _remote(rec.error, rec.degraded_reason or f"{spec.name} {status.value}")
    kind: Literal["failed", "needs_human"] = (
        "needs_human" if status == StepStatus.NEEDS_REVIEW else "failed"
    )
    return StepOutcome(status=kind, attempts=rec.attempts, error=error, committed=rec)


def _paused(spec: AgentSpec, data: Mapping[str, Any]) -> StepOutcome:
    retry_after = data.get("retry_after")
    return StepOutcome(
        status="failed",
        attempts=int(data.get("attempts") or 0),
        error=_remote(data.get("error"), f"{spec.name} failed"),
        transient=True,
        retry_after=None if retry_after is None else float(retry_after),
    )


def step_budget(spec: AgentSpec) -> float:
    """The longest a worker may take to run `spec`'s step once it holds the task (seconds).

    Every attempt's timeout, the longest backoff before each retry (its cap), and one
    timeout per fallback. Waits the pipeline does not bound (a bulkhead queue, a
    ``Retry-After`` longer than the cap) are not counted: a worker holding a task that
    overruns this says so (a ``held`` note), see `BusExecutor`.
    """
    retry = spec.retry
    attempts = 1 if retry is None else retry.attempts
    sleeps = 0.0
    if retry is not None:
        base, cap = as_seconds(retry.base), as_seconds(retry.cap)
        sleeps = sum(min(cap, base * 2.0 ** (n - 1)) for n in range(1, attempts))
    return spec.timeout * (attempts + len(spec.fallbacks)) + sleeps


class _Waiting:
    """One step waiting for its commit: its task id, the reply, the last ``held`` note."""

    __slots__ = ("held_at", "reply", "task")

    def __init__(self, task: str, reply: asyncio.Future[dict[str, Any]]) -> None:
        self.task = task
        self.reply = reply
        self.held_at: float | None = None


class BusExecutor:
    """An `Executor` that runs steps on `firebreak worker` processes through a bus.

    A task the broker accepted and then lost (a broker killed before it wrote the message)
    is sent again: when a step is not committed `resend_after(spec)` seconds after its task
    was sent (`step_budget` plus the bus's visibility timeout), the executor checks its
    lease is still the run's and publishes the same task again, at most `resend` times,
    waiting twice as long after each copy. A worker that holds the task late, or longer
    than a touch interval, sends a ``held`` note on the reply queue; a note postpones the
    next copy by `resend_after` from its arrival, so a slow step or a long queue that has
    reached the task is not duplicated. Copies are harmless: the first commit wins and a
    worker drops a task whose step is committed (or whose lease is stale) without running it.

    Example:
        >>> async with open_bus("redis://localhost/0") as bus, BusExecutor(bus, store) as ex:
        ...     result = await Engine(store, executor=ex).run(wf, invoice)

    Args:
        bus: the task bus (set up by the caller).
        store: the run's store (set up by the caller); the same the workers commit to.
        clock: the engine's monotonic clock (the step deadline, `poll` and re-sends are on it).
        poll: seconds between store reads while no reply comes (replies can be lost).
        grace: seconds past the run's deadline to wait for a worker's commit.
        name: this executor's id, naming its reply queue; default: random.
        resend: copies of a task sent at most when its step stays uncommitted (0: never).
    """

    def __init__(
        self,
        bus: TaskBus,
        store: CheckpointStore,
        *,
        clock: Clock = system_clock,
        poll: float = 5.0,
        grace: float = 2.0,
        name: str | None = None,
        resend: int = 3,
    ) -> None:
        if not poll > 0:
            raise ValueError(f"poll must be > 0, got {poll!r}")
        if isinstance(resend, bool) or not isinstance(resend, int) or resend < 0:
            raise ValueError(f"resend must be an int >= 0, got {resend!r}")
        self.bus = bus
        self.store = store
        self.clock = clock
        self.poll = poll
        self.grace = grace
        self.resend = resend
        self.name = name or uuid.uuid4().hex[:12]
        self.reply_queue = f"{REPLY_PREFIX}{self.name}"
        self._waiters: dict[tuple[str, str], _Waiting] = {}  # by (run, agent)
        self._replies: asyncio.Task[None] | None = None
        self._consumer: Consumer | None = None
        self._unacked: list[Delivery] = []  # replies read, their acks not yet sent
        self._acking: asyncio.Task[None] | None = None
        self.published = 0
        """Tasks published (copies included)."""
        self.resent = 0
        """Copies of tasks published because their step stayed uncommitted."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop reading replies and delete the reply queue; idempotent."""
        task, self._replies = self._replies, None
        if task is not None:
            # A cancel can be lost inside a client's blocking read (seen with redis-py 8 on
            # Python 3.11: the read starts over); cancel again until the reader ends.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        acking, self._acking = self._acking, None
        if acking is not None:
            acking.cancel()  # the reply queue goes below: its acks do not matter
            with contextlib.suppress(asyncio.CancelledError):
                await acking
        self._unacked.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.close()
            with contextlib.suppress(Exception):
                await self.bus.delete(self.reply_queue)

    def _start(self) -> None:
        if self._replies is None:
            self._consumer = self.bus.consumer(
                [self.reply_queue],
                group=f"orchestrator-{self.name}",
                name=self.name,
                max_in_flight=64,
            )
            self._replies = asyncio.get_running_loop().create_task(self._read_replies())

    async def _read_replies(self) -> None:
        consumer = self._consumer
        if consumer is None:  # pragma: no cover - _start sets it first
            return
        while True:
            try:
                delivery = await consumer.get(1.0)
                if delivery is None:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store poll covers lost replies
                log.warning("reading replies failed: %s", exc)
                await self.clock.sleep(0.5)
                continue
            # Acked in the background, many at once: the reply wakes its step first. A
            # reply whose ack is lost comes back after the visibility timeout, harmlessly.
            self._unacked.append(delivery)
            if self._acking is None:
                self._acking = asyncio.get_running_loop().create_task(self._ack_replies(consumer))
            if not delivery.dead:
                self._dispatch(delivery.body)

    async def _ack_replies(self, consumer: Consumer) -> None:
        """Ack the replies read, a batch at a time (in one round trip where the bus can)."""
        ack_many = getattr(consumer, "ack_many", None)
        try:
            while self._unacked:
                batch, self._unacked = self._unacked, []
                try:
                    if ack_many is not None:
                        await ack_many(batch)
                    else:
                        for delivery in batch:
                            await consumer.ack(delivery)
                except Exception as exc:  # noqa: BLE001 - they come back, and are dropped
                    log.warning("acking %d replies failed: %s", len(batch), exc)
        finally:
            self._acking = None

    def _dispatch(self, body: dict[str, Any]) -> None:
        """Hand a reply to the step waiting for it, if any still is."""
        key = (str(body.get("run_id")), str(body.get("agent")))
        waiting = self._waiters.get(key)
        if waiting is None or waiting.reply.done():
            return
        kind = body.get("kind")
        # A commit answers whichever task of the step waits; other replies only their own.
        if kind != "committed" and body.get("task") != waiting.task:
            return
        if kind == "held":
            waiting.held_at = self.clock.now()
            log.debug("task %s of step %s/%s is held by a worker", waiting.task, *key)
        else:
            waiting.reply.set_result(body)

    async def _lease(self, run_id: str) -> Lease:
        """The run's current lease: the one the orchestrator driving it holds."""
        record = await self.store.get_run(run_id)
        if record is None or record.lease_owner is None:
            raise StaleLease(run_id, token=0 if record is None else record.lease_token)
        return Lease(
            run_id=run_id,
            owner=record.lease_owner,
            token=record.lease_token,
            expires_at=record.lease_expires or 0.0,
        )

    def _wall(self, when: float) -> float:
        """`when` on `clock` as the store's wall-clock time (what the task message carries)."""
        return self.store.clock() + (when - self.clock.now())

    def resend_after(self, spec: AgentSpec) -> float:
        """Seconds without a commit (or a ``held`` note) after which `spec`'s task is re-sent.

        `step_budget` (the longest a worker may run the step) plus the bus's visibility
        timeout (a worker that died holding the task hands it on after that).
        """
        return step_budget(spec) + self.bus.policy.visibility

    def encode_task(
        self, call: StepCall, lease: Lease, task_id: str, *, held_after: float | None = None
    ) -> dict[str, Any]:
        """The task message of `call` (JSON; see docs/distributed.md).

        `held_after` (monotonic, on `clock`): a worker that takes the task after that time
        sends a ``held`` note, so this executor does not send it again meanwhile.
        """
        spec = call.spec
        body: dict[str, Any] = {
            "v": TASK_VERSION,
            "task": task_id,
            "workflow": call.workflow,
            "agent": spec.name,
            "run_id": call.run_id,
            "run_input": encode(call.run_input, what="run input"),
            "outputs": {dep: encode_output(dep, call.inputs[dep]) for dep in spec.params},
            "degraded": dict(call.degraded),
            "deadline": None if call.deadline is None else self._wall(call.deadline),
            "lease": {"owner": lease.owner, "token": lease.token, "expires_at": lease.expires_at},
            "reply_to": self.reply_queue,
        }
        if held_after is not None:
            body["held_after"] = self._wall(held_after)
        return body

    async def execute(self, call: StepCall) -> StepOutcome:
        """Publish the step's task and wait for its commit; see the module docstring."""
        spec = call.spec
        self._start()
        lease = call.lease or await self._lease(call.run_id)
        key = (call.run_id, spec.name)
        waiting = _Waiting(uuid.uuid4().hex, asyncio.get_running_loop().create_future())
        self._waiters[key] = waiting
        try:
            return await self._send_and_wait(call, lease, waiting)
        finally:
            if self._waiters.get(key) is waiting:
                del self._waiters[key]

    async def _send_and_wait(self, call: StepCall, lease: Lease, waiting: _Waiting) -> StepOutcome:
        spec = call.spec
        queue = task_queue(call.workflow, spec.name)
        every = self.resend_after(spec)
        budget = step_budget(spec)
        due = self.clock.now() + every
        held_after = due - budget if self.resend else None
        await self.bus.publish(
            queue,
            self.encode_task(call, lease, waiting.task, held_after=held_after),
            key=call.run_id,
        )
        self.published += 1
        copies = 0
        while True:
            now = self.clock.now()
            wait = self.poll
            if copies < self.resend:
                wait = min(wait, max(due - now, 0.0))
            if call.deadline is not None:
                wait = min(wait, max(call.deadline + self.grace - now, 0.0))
            if not await self._reply_within(waiting.reply, wait):
                stored = (await self.store.get_steps(call.run_id)).get(spec.name)
                if stored is not None:
                    return outcome_for(spec, stored)
                now = self.clock.now()
                if call.deadline is not None and now >= call.deadline + self.grace:
                    error = DeadlineExceeded(
                        f"no worker committed step {spec.name!r} before the run's deadline",
                        timeout=0.0,
                    )
                    return StepOutcome(status="failed", error=error)
                if waiting.held_at is not None:
                    due = max(due, waiting.held_at + every)
                if copies < self.resend and now >= due:
                    await self._check_lease(lease)
                    copies += 1
                    due = now + every * 2**copies
                    body = self.encode_task(call, lease, waiting.task, held_after=due - budget)
                    if await self._resend(queue, body, call, copies):
                        continue
                    copies -= 1  # not sent: try again at the next poll
                    due = now + min(self.poll, every)
                continue
            reply = waiting.reply.result()
            kind = reply.get("kind")
            if kind == "committed":
                return outcome_for(spec, record_from_json(reply["step"]))
            if kind == "paused":
                return _paused(spec, reply)
            raise StaleLease(call.run_id, token=int(reply.get("token") or 0))

    async def _reply_within(self, reply: asyncio.Future[dict[str, Any]], seconds: float) -> bool:
        """Wait up to `seconds` on `clock` for `reply`; whether it came. Never cancels it."""
        if reply.done() or seconds <= 0:
            return reply.done()
        woke: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not woke.done():
                woke.set_result(None)

        timer = self.clock.call_at(self.clock.now() + seconds, wake)
        reply.add_done_callback(wake)
        try:
            await woke
        finally:
            timer.cancel()
            reply.remove_done_callback(wake)
        return reply.done()

    async def _check_lease(self, lease: Lease) -> None:
        """Raise `StaleLease` if `lease` is no longer the run's: a copy could not commit."""
        record = await self.store.get_run(lease.run_id)
        if record is None or (record.lease_owner, record.lease_token) != (lease.owner, lease.token):
            raise StaleLease(lease.run_id, token=lease.token)

    async def _resend(self, queue: str, body: Mapping[str, Any], call: StepCall, copy: int) -> bool:
        """Publish a copy of a task whose step stays uncommitted; whether it went out."""
        log.warning(
            "step %s/%s is not committed and no worker holds its task %s (the broker may "
            "have lost it): sending it again, copy %d of at most %d",
            call.run_id,
            call.spec.name,
            body["task"],
            copy,
            self.resend,
        )
        try:
            await self.bus.publish(queue, body, key=call.run_id)
        except Exception as exc:  # noqa: BLE001 - the next poll tries again
            log.warning("could not send task %s again: %s", body["task"], exc)
            return False
        self.published += 1
        self.resent += 1
        return True
