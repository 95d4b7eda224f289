"""Records and the `CheckpointStore` protocol every backend implements.

A store keeps what a crashed orchestrator needs to resume instead of restart: runs, the
committed result of each step, leases with fencing tokens, versioned shared state, the
dead-letter queue and the manual-review queue. It knows nothing of agent functions.

Missing records: getters return ``None``; operations that need a record (a lease on an
unknown run, resolving an unknown review item) raise `KeyError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias, runtime_checkable

from firebreak._fastinit import fast_init

__all__ = [
    "JSON",
    "STEP_TRANSITIONS",
    "TERMINAL",
    "CheckpointStore",
    "DeadLetter",
    "Lease",
    "ReviewItem",
    "ReviewStatus",
    "RunRecord",
    "RunStatus",
    "StepRecord",
    "StepStatus",
    "SupportsBeginFinish",
    "SupportsCommitAndFinish",
    "SupportsCommitThen",
    "SupportsLeaseAndStep",
    "WallClock",
]

JSON: TypeAlias = Any
"""A JSON value (dict, list, str, int, float, bool or None); `Any` so user types need no cast."""

WallClock: TypeAlias = Callable[[], float]
"""A wall clock in epoch seconds; `time.time` unless a test injects its own."""


class RunStatus(StrEnum):
    """Where a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    PAUSED = "paused"
    NEEDS_REVIEW = "needs_review"


class StepStatus(StrEnum):
    """How a step ended (or what became of it later: compensation, review)."""

    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    SKIPPED = "skipped"
    NEEDS_REVIEW = "needs_review"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


class ReviewStatus(StrEnum):
    """Whether a review item still waits for a person."""

    OPEN = "open"
    RESOLVED = "resolved"


STEP_TRANSITIONS: Mapping[StepStatus, frozenset[StepStatus]] = {
    StepStatus.SUCCEEDED: frozenset({StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED}),
    StepStatus.COMPENSATION_FAILED: frozenset(
        {StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED}
    ),
    StepStatus.NEEDS_REVIEW: frozenset(
        {StepStatus.SUCCEEDED, StepStatus.DEGRADED, StepStatus.FAILED, StepStatus.SKIPPED}
    ),
}
"""The only changes `update_step` accepts; every other committed step is final."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One run of a workflow, as stored.

    Example:
        >>> run, created = await store.create_run("inv-42", "invoice", {"id": 42})
    """

    run_id: str
    """The caller's id for the run; the same id means the same run (resume)."""
    workflow: str
    """The workflow's name."""
    status: RunStatus = RunStatus.PENDING
    """Where the run stands."""
    input: JSON = None
    """The run's input as given to `create_run`."""
    created_at: float = 0.0
    """Wall-clock epoch seconds of creation."""
    updated_at: float = 0.0
    """Wall-clock epoch seconds of the last status change."""
    resume_at: float | None = None
    """For a paused run: when it may resume (epoch seconds)."""
    result: JSON | None = None
    """The run's final result, once it has one."""
    error: dict[str, Any] | None = None
    """A serialised error (``{"type", "message", "attrs"}``) for a failed run."""
    lease_owner: str | None = None
    """Who holds the lease now, or ``None`` once released."""
    lease_token: int = 0
    """The current fencing token; 0 before the first lease."""
    lease_expires: float | None = None
    """When the current lease ends unless renewed (epoch seconds)."""

    def __post_init__(self) -> None:
        if type(self.status) is not RunStatus:  # an enum call costs about a microsecond
            object.__setattr__(self, "status", RunStatus(self.status))

    def leased(self, now: float) -> bool:
        """Whether a lease holds the run at `now`.

        Its orchestrator's, live or dead with the lease not yet expired. Released or
        expired: nobody drives the run.
        """
        return self.lease_owner is not None and (self.lease_expires or 0.0) > now


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """The committed result of one agent in one run.

    Example:
        >>> StepRecord(run_id="inv-42", agent="extract", status="succeeded", output={"n": 1})
    """

    run_id: str
    """The run the step belongs to."""
    agent: str
    """The agent's name, unique within its workflow."""
    status: StepStatus
    """How the step ended."""
    output: JSON = None
    """The agent's output (or its default, if degraded)."""
    attempts: int = 1
    """How many attempts the step took."""
    error: dict[str, Any] | None = None
    """A serialised error (``{"type", "message", "attrs"}``) if the step failed or degraded."""
    degraded_reason: str | None = None
    """Why the step's default stands in for its output."""
    seq: int = 0
    """Commit order within the run, assigned by the store (0 before commit)."""
    completed_at: float = 0.0
    """Wall-clock epoch seconds of commit; 0 lets the store stamp it."""

    def __post_init__(self) -> None:
        if type(self.status) is not StepStatus:
            object.__setattr__(self, "status", StepStatus(self.status))
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """The right to advance one run, proven on every write by its fencing token."""

    run_id: str
    """The leased run."""
    owner: str
    """Who holds it (an orchestrator's id)."""
    token: int
    """Fencing token: grows with every new holder; writes with an older one are refused."""
    expires_at: float
    """Wall-clock epoch seconds after which another owner may take the run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A failed run, kept with everything needed to replay it."""

    id: str
    """The entry's id (stable: one entry per run, replaced if the run fails again)."""
    run_id: str
    """The failed run."""
    workflow: str
    """Its workflow."""
    reason: str
    """One line saying why the run failed."""
    error: dict[str, Any] | None
    """The serialised error that failed it."""
    input: JSON
    """The run's input, to replay it."""
    created_at: float
    """Wall-clock epoch seconds the entry was (last) written."""
    steps: dict[str, StepRecord] | None = None
    """The run's steps when it failed, if the caller kept them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewItem:
    """A step waiting for a person's decision."""

    id: str
    """The item's id."""
    run_id: str
    """The paused run."""
    workflow: str
    """Its workflow."""
    agent: str
    """The agent that asked for a human."""
    reason: str
    """What the person must decide."""
    suggestions: list[JSON] = field(default_factory=list)
    """Candidate answers to pick from."""
    context: JSON = None
    """What the reviewer needs to see (the agent's inputs, say)."""
    status: ReviewStatus = ReviewStatus.OPEN
    """Open until resolved."""
    value: JSON | None = None
    """The person's answer, once resolved."""
    created_at: float = 0.0
    """Wall-clock epoch seconds of creation."""
    resolved_at: float | None = None
    """Wall-clock epoch seconds of resolution."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ReviewStatus(self.status))


def seconds(ttl: float | timedelta) -> float:
    """Return a positive duration in seconds from `float` seconds or a `timedelta`."""
    value = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not value > 0:
        raise ValueError(f"ttl must be a positive duration, got {ttl!r}")
    return value


@runtime_checkable
class CheckpointStore(Protocol):
    """What the orchestrator needs from a store; every backend passes one conformance suite.

    Example:
        >>> async with open_store("sqlite:///runs.db") as store:
        ...     run, created = await store.create_run("inv-42", "invoice", {"id": 42})
        ...     lease = await store.acquire_lease("inv-42", "orch-1", ttl=30)
        ...     await store.commit_step(lease, StepRecord(run_id="inv-42", agent="a",
        ...                                               status="succeeded", output=1))
    """

    clock: WallClock

    async def setup(self) -> None:
        """Connect, create or migrate the schema; idempotent."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release every resource; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the field is the run's input; the name says so
    ) -> tuple[RunRecord, bool]:
        """Get the run, or create it as pending; the bool says whether it was created."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None``."""
        ...

    async def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Return up to `limit` runs, newest first, optionally filtered."""
        ...

    async def set_run_status(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """Set the run's status, result, error and resume time (fenced by `lease`)."""
        ...

    async def due_runs(self, now: float) -> list[RunRecord]:
        """Return paused runs whose ``resume_at <= now``, soonest first."""
        ...

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | timedelta) -> Lease:
        """Take the run's lease if free, expired or already `owner`'s; else `LeaseHeld`.

        The token grows by one unless `owner` still holds an unexpired lease (re-entry).
        """
        ...

    async def renew_lease(self, lease: Lease, ttl: float | timedelta) -> Lease:
        """Extend `lease` by `ttl` from now; `StaleLease` if another owner took the run."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up; a no-op if it is no longer current."""
        ...

    # -- steps --------------------------------------------------------------------------

    async def commit_step(self, lease: Lease, step: StepRecord) -> bool:
        """Durably record a step result; ``False`` if the step was already committed.

        The first commit wins and later duplicates change nothing, which makes
        at-least-once delivery of step results exactly-once in effect. `StaleLease` if
        `lease` is no longer current.
        """
        ...

    async def update_step(
        self,
        lease: Lease,
        run_id: str,
        agent: str,
        *,
        status: StepStatus | str,
        error: dict[str, Any] | None = None,
        output: JSON = ...,
    ) -> StepRecord:
        """Move a committed step along `STEP_TRANSITIONS` (fenced); ``output=...`` keeps it.

        A step that becomes succeeded or degraded (a resolved review) takes the next
        commit ``seq``: that is when its effect happened, and compensation follows ``seq``.
        """
        ...

    async def reset_steps(self, lease: Lease, agents: Sequence[str]) -> int:
        """Forget the committed steps of `agents` so they run again (fenced); returns how many.

        Only a replay from the dead-letter queue does this: a live run never un-commits.
        """
        ...

    async def set_input(self, lease: Lease, input: JSON) -> None:  # noqa: A002 - the run's input
        """Replace the run's input (fenced): a replay with a patched input."""
        ...

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Return the run's committed steps by agent name, in commit order."""
        ...

    # -- shared state -------------------------------------------------------------------

    async def get_state(self, run_id: str) -> tuple[int, dict[str, JSON]]:
        """Return the run's shared state and its version (``0, {}`` before any write)."""
        ...

    async def cas_state(
        self,
        run_id: str,
        expected_version: int,
        data: Mapping[str, JSON],
        *,
        lease: Lease | None = None,
    ) -> int:
        """Replace the state if still at `expected_version`; return the new version.

        Raises `StateConflict` otherwise: never a silent overwrite. With `lease` (the
        engine always gives the run's), the write is fenced as a step commit is: under a
        lease that is no longer the run's it raises `StaleLease` and writes nothing, so an
        orchestrator that lost its run cannot change the state of the one that took it.
        """
        ...

    # -- dead-letter queue --------------------------------------------------------------

    async def dlq_put(
        self,
        *,
        run_id: str,
        workflow: str,
        reason: str,
        error: dict[str, Any] | None = None,
        input: JSON = None,  # noqa: A002  -- the run's input, named as on RunRecord
        steps: Mapping[str, StepRecord] | None = None,
    ) -> str:
        """Put a failed run in the dead-letter queue (one entry per run; replaced)."""
        ...

    async def dlq_list(self, workflow: str | None = None) -> list[DeadLetter]:
        """Return the entries, oldest first."""
        ...

    async def dlq_get(self, id: str) -> DeadLetter | None:  # noqa: A002  -- record field name
        """Return the entry, or ``None``."""
        ...

    async def dlq_of_run(self, run_id: str) -> DeadLetter | None:
        """Return the run's entry (a run has at most one), or ``None``."""
        ...

    async def dlq_drop(self, id: str) -> bool:  # noqa: A002  -- record field name
        """Remove the entry; ``False`` if it was not there."""
        ...

    async def dlq_size(self, workflow: str | None = None) -> int:
        """Count the entries."""
        ...

    # -- manual-review queue ------------------------------------------------------------

    async def review_put(
        self,
        *,
        run_id: str,
        workflow: str,
        agent: str,
        reason: str,
        suggestions: Sequence[JSON] = (),
        context: JSON = None,
    ) -> str:
        """Queue a decision for a person; an open item for the same step is reused."""
        ...

    async def review_list(self, status: str | None = "open") -> list[ReviewItem]:
        """Return items with `status` (all if ``None``), oldest first."""
        ...

    async def review_get(self, id: str) -> ReviewItem | None:  # noqa: A002  -- record field
        """Return the item, or ``None``."""
        ...

    async def review_of_run(self, run_id: str) -> list[ReviewItem]:
        """Return the run's items, open and resolved, oldest first."""
        ...

    async def review_resolve(self, id: str, value: JSON) -> ReviewItem:  # noqa: A002
        """Record the person's answer; `KeyError` if unknown, `StoreError` if resolved."""
        ...

    async def review_size(self) -> int:
        """Count the open items."""
        ...


default_clock: WallClock = time.time
"""`time.time` itself, not a function calling it: stores stamp every step with it."""


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.DEGRADED, RunStatus.FAILED})
"""Run statuses a run never leaves (short of a dead-letter replay)."""


@runtime_checkable
class SupportsBeginFinish(Protocol):
    """Optional: start and finish a drive of a run in one write each.

    A store that offers these saves the orchestrator round trips (and, on a durable store,
    fsyncs) at both ends of every run; without them the engine composes the same steps
    from the `CheckpointStore` operations.
    """

    async def begin_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input
        *,
        owner: str,
        ttl: float,
    ) -> tuple[RunRecord, bool, Lease | None]:
        """Get or create the run, then (unless finished or foreign) lease it and mark it running.

        Returns the run, whether it was created, and the lease (``None`` when none was
        taken because the run is finished or belongs to another workflow). Raises
        `LeaseHeld` like `acquire_lease`.
        """
        ...

    async def finish_run(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """`set_run_status` and `release_lease` in one write (fenced)."""
        ...


@runtime_checkable
class SupportsLeaseAndStep(Protocol):
    """Optional: read a run's current lease and one of its steps together, in one read.

    The check a bus worker makes before every task (is the step already committed? is the
    task's lease still the run's?) in one round trip, which concurrent callers may share,
    instead of `get_run` and `get_steps` (with a Redis store those two reads were most of
    a worker's CPU per step). Without it the worker composes the same answer from them.

    Example:
        >>> lease, step = await store.get_lease_and_step("inv-42", "extract")
    """

    async def get_lease_and_step(
        self, run_id: str, agent: str
    ) -> tuple[Lease | None, StepRecord | None]:
        """The run's current lease and the agent's committed step, read together.

        The lease is ``None`` when the run is gone or its lease released (else its owner,
        token and expiry as `get_run` shows them); the step is ``None`` when it is not
        committed (else equal to its record in `get_steps`).
        """
        ...


@runtime_checkable
class SupportsCommitThen(Protocol):
    """Optional: commit a step and, only if it is the first commit, run commands in the same write.

    The commands are the server's own (Redis commands for `RedisStore`): a bus on the same
    server (`same_server`) hands the ones that reply to the orchestrator and ack the task,
    so a worker's commit, reply and ack are one round trip instead of two. The commit is
    `commit_step`'s (fenced, first commit wins); the commands never run for a duplicate or
    a stale lease. Without it the worker commits, then replies and acks through the bus.

    Example:
        >>> if store.same_server(bus.url):
        ...     first = await store.commit_step_then(lease, record, [["XACK", stream, group, id]])
    """

    def same_server(self, url: str) -> bool:
        """Whether `url` names the server (and database) this store writes to."""
        ...

    async def commit_step_then(
        self, lease: Lease, step: StepRecord, then: Sequence[Sequence[str]]
    ) -> bool:
        """`commit_step`; if it was the first commit, run `then` in the same atomic write."""
        ...


@runtime_checkable
class SupportsCommitAndFinish(Protocol):
    """Optional: commit a run's last step and record how the run ended, in one write.

    The engine uses it when a step's commit settles the run (nothing left to start, nothing
    in flight, no compensation or review to come): the step, the run's outcome and the
    lease's release are one atomic write, so a durable store pays one fsync for both
    instead of two. If the step was committed already (a worker or another drive was
    first), nothing is written and the engine goes on as after `commit_step`. Without it
    the engine calls `commit_step`, then `finish_run`.
    """

    async def commit_step_and_finish(
        self, lease: Lease, step: StepRecord, status: RunStatus | str, *, result: JSON = None
    ) -> bool:
        """`commit_step`, and `finish_run(lease, status, result=result)` if it was first.

        One atomic write; ``False`` (and nothing written) if the step was committed already.
        """
        ...


@runtime_checkable
class SupportsRunIdPrefix(Protocol):
    """Optional: find runs by the start of their id, as git and docker take short ids.

    The CLI's ``show``, ``resume`` and ``dlq`` accept a unique start of a run id
    (`find_run_id`); without this ability a store answers full ids only.
    """

    async def run_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Up to `limit` ids of runs that start with `prefix`, in id order.

        Which ones, if more match, is the store's choice: two tell a unique start from an
        ambiguous one.
        """
        ...
