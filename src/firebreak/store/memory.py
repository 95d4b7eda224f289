"""`MemoryStore`: the whole store in dicts, for tests and throwaway runs.

Every method runs to completion without awaiting, so on one event loop each operation is
atomic without a lock. Values are copied through JSON on the way in and out, so callers
can neither mutate stored state nor store what SQLite could not (same rules everywhere).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import timedelta
from typing import Any, Final, TypeVar

from firebreak._fastinit import twin
from firebreak._lifecycle import SetupClose
from firebreak.errors import StateConflict, StoreError
from firebreak.store import _rules
from firebreak.store.base import (
    JSON,
    TERMINAL,
    DeadLetter,
    Lease,
    ReviewItem,
    ReviewStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WallClock,
    default_clock,
    seconds,
)

__all__ = ["MemoryStore"]


_ATOMS = (str, int, bool, type(None))
_PLAIN = frozenset(_ATOMS)  # by exact type: a set lookup; anything else takes the walk
_STR = frozenset((str,))


def _clone(value: JSON) -> JSON:
    """A deep copy of JSON data, refusing what JSON cannot hold (as `json.dumps` would).

    A direct walk instead of a dumps/loads round trip: the store copies on every write and
    read, and step outputs are usually small. Exact types first (a set lookup each), the
    general checks only for what is left (subclasses, floats, keys to convert).
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        if _PLAIN.issuperset(map(type, value.values())) and _STR.issuperset(map(type, value)):
            return value.copy()  # flat, str keys (outputs by agent): checked in C, no walk
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                key = _key(key)  # noqa: PLW2901
            out[key] = item if type(item) in _PLAIN else _clone(item)
        return out
    if kind is list or kind is tuple:
        return [item if type(item) in _PLAIN else _clone(item) for item in value]
    return _clone_other(value)


def _clone_other(value: JSON) -> JSON:
    """`_clone` of what is not exactly a str, int, bool, None, dict, list or tuple."""
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"out of range float value {value!r} is not JSON compliant")
        return value
    if isinstance(value, dict):
        return {_key(k) if type(k) is not str else k: _clone(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clone(item) for item in value]
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key: object) -> str:
    """A non-string dict key as json converts it: 1 -> "1", True -> "true"."""
    if isinstance(key, str):
        return str(key)
    if not isinstance(key, int | float | bool | type(None)):
        raise TypeError(f"keys must be str, int, float, bool or None, not {key!r}")
    return _rules.dumps(key)


_R = TypeVar("_R")
_REPLACERS: dict[tuple[type[Any], tuple[str, ...]], Callable[..., Any]] = {}


def _replacer(cls: type[Any], changed: tuple[str, ...]) -> Callable[..., Any]:
    """A compiled copier of `cls` records taking the `changed` fields as arguments.

    The copy is built as the class's `twin` (plain stores), then given its class: a
    sixth of the cost of ``object.__setattr__`` looked up and called per field (as frozen
    dataclasses do).
    """
    replace = _REPLACERS.get((cls, changed))
    if replace is None:
        names = [field.name for field in fields(cls)]
        lines = [f"def replace(r, {', '.join(changed)}):", "    new = _new(_twin)"]
        lines += [f"    new.{n} = {n if n in changed else 'r.' + n}" for n in names]
        lines += ["    new.__class__ = _cls", "    return new"]
        scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_twin": twin(cls)}
        exec("\n".join(lines), scope)  # noqa: S102 - our own code, from our own field names
        replace = _REPLACERS[cls, changed] = scope["replace"]
    return replace


def _evolve(record: _R, **changes: Any) -> _R:
    """`dataclasses.replace` for our frozen records, without re-running validation.

    The store copies records on every read and write; `replace` inspects the class each
    time and costs several microseconds. Changed values come from the store itself,
    already validated and of the right type.
    """
    return _replacer(type(record), tuple(changes))(record, *changes.values())  # type: ignore[no-any-return]


# Records go out as copies, so a caller mutating what it got cannot change the store; a
# record holding only immutable values (frozen, with plain JSON atoms) goes out as it is.


# The two records `finish_run` makes, at the end of every run: replacers bound once.
_finished = _replacer(
    RunRecord,
    ("status", "result", "error", "resume_at", "updated_at", "lease_owner", "lease_expires"),
)
_handed_out = _replacer(RunRecord, ("input", "result", "error"))


def _run_out(run: RunRecord) -> RunRecord:
    if type(run.input) in _PLAIN and type(run.result) in _PLAIN and run.error is None:
        return run
    return _evolve(run, input=_clone(run.input), result=_clone(run.result), error=_clone(run.error))


def _step_out(step: StepRecord) -> StepRecord:
    if type(step.output) in _PLAIN and step.error is None:
        return step
    return _evolve(step, output=_clone(step.output), error=_clone(step.error))


# A committed step is kept as a tuple of its fields, its status as a string: the garbage
# collector stops tracking a tuple of plain values, where its full passes would visit every
# record the store ever kept (0.3-0.4 µs a step of a 10-step run). Records are made on read.
_Packed = tuple[str, str, str, JSON, int, dict[str, Any] | None, str | None, int, float]
_SEQ: Final = 7  # where the seq is in a packed step
_STATUSES = {status.value: status for status in StepStatus}
_VALUES = {status: status.value for status in StepStatus}  # `.value` is a slow descriptor


def _unpack(packed: _Packed) -> StepRecord:
    run_id, agent, status, output, attempts, error, reason, seq, completed_at = packed
    return StepRecord(
        run_id=run_id, agent=agent, status=_STATUSES[status],
        output=output if type(output) in _PLAIN else _clone(output),
        attempts=attempts, error=None if error is None else _clone(error),
        degraded_reason=reason, seq=seq, completed_at=completed_at,
    )  # fmt: skip


class MemoryStore(SetupClose):
    """A `CheckpointStore` held in memory: fast, isolated, gone with the process.

    Example:
        >>> async with MemoryStore() as store:
        ...     run, created = await store.create_run("r1", "wf", {"x": 1})

    Args:
        clock: wall clock for timestamps and lease expiry; tests inject their own.
    """

    def __init__(self, *, clock: WallClock = default_clock) -> None:
        self.clock = clock
        self._runs: dict[str, RunRecord] = {}
        self._run_order: dict[str, int] = {}
        self._steps: dict[str, dict[str, _Packed]] = {}  # by run, then agent; in seq order
        self._state: dict[str, tuple[int, str]] = {}
        self._dlq: dict[str, DeadLetter] = {}
        self._reviews: dict[str, ReviewItem] = {}
        # By run: a put or a resume reads its run's records, not the whole queue (a scan
        # cost 3.5 ms a put at 40,000 entries).
        self._dlq_of: dict[str, str] = {}
        self._reviews_of: dict[str, list[str]] = {}
        self._counter = itertools.count()

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"

    async def setup(self) -> None:
        """Nothing to set up; present for the protocol."""

    async def close(self) -> None:
        """Nothing to release; the data stays readable until the object is dropped."""

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input, named as on RunRecord
    ) -> tuple[RunRecord, bool]:
        """Get the run, or create it as pending; the bool says whether it was created."""
        if run_id in self._runs:
            return _run_out(self._runs[run_id]), False
        now = self.clock()
        run = RunRecord(
            run_id=run_id, workflow=workflow, input=_clone(input), created_at=now, updated_at=now
        )
        self._runs[run_id] = run
        self._run_order[run_id] = next(self._counter)
        return _run_out(run), True

    async def begin_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input
        *,
        owner: str,
        ttl: float,
    ) -> tuple[RunRecord, bool, Lease | None]:
        """Get or create the run, take its lease and mark it running (`SupportsBeginFinish`)."""
        # One record written and one copy out: this runs at the start of every run.
        now = self.clock()
        run = self._runs.get(run_id)
        if run is not None and (run.status in TERMINAL or run.workflow != workflow):
            return _run_out(run), False, None
        lease = _rules.decide_lease(
            run_id=run_id,
            owner=owner,
            current_owner=None if run is None else run.lease_owner,
            current_token=0 if run is None else run.lease_token,
            current_expires=None if run is None else run.lease_expires,
            now=now,
            ttl=seconds(ttl),
        )
        created = run is None
        if run is None:  # new: made running and leased in one record
            run = RunRecord(
                run_id=run_id, workflow=workflow, input=_clone(input), status=RunStatus.RUNNING,
                created_at=now, updated_at=now, lease_owner=owner, lease_token=lease.token,
                lease_expires=lease.expires_at,
            )  # fmt: skip
            self._run_order[run_id] = next(self._counter)
        else:
            run = _evolve(
                run, status=RunStatus.RUNNING, result=None, error=None, resume_at=None,
                updated_at=now, lease_owner=lease.owner, lease_token=lease.token,
                lease_expires=lease.expires_at,
            )  # fmt: skip
        self._runs[run_id] = run
        return _run_out(run), created, lease

    async def finish_run(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """Set the final status and release the lease at once (`SupportsBeginFinish`)."""
        new_result, new_error = _clone(result), _clone(error)
        new_status = status if type(status) is RunStatus else RunStatus(status)
        run: RunRecord = _finished(
            self._fenced(lease),
            new_status,
            new_result,
            new_error,
            resume_at,
            self.clock(),
            None,
            None,
        )
        self._runs[run.run_id] = run
        # What goes out holds the caller's own result and error: the store keeps its copies.
        run_input = run.input if type(run.input) in _PLAIN else _clone(run.input)
        return _handed_out(run, run_input, result, error)  # type: ignore[no-any-return]

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None``."""
        run = self._runs.get(run_id)
        return None if run is None else _run_out(run)

    async def run_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Up to `limit` run ids starting with `prefix`, in id order (`SupportsRunIdPrefix`)."""
        return sorted(run_id for run_id in self._runs if run_id.startswith(prefix))[: max(limit, 0)]

    async def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Return up to `limit` runs, newest first, optionally filtered."""
        wanted = None if status is None else RunStatus(status)
        runs = [
            r
            for r in self._runs.values()
            if (workflow is None or r.workflow == workflow)
            and (wanted is None or r.status == wanted)
        ]
        runs.sort(key=lambda r: (r.created_at, self._run_order[r.run_id]), reverse=True)
        return [_run_out(r) for r in runs[: max(limit, 0)]]

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
        run = self._fenced(lease)
        run = _evolve(
            run,
            status=RunStatus(status),
            result=_clone(result),
            error=_clone(error),
            resume_at=resume_at,
            updated_at=self.clock(),
        )
        self._runs[run.run_id] = run
        return _run_out(run)

    async def due_runs(self, now: float) -> list[RunRecord]:
        """Return paused runs whose ``resume_at <= now``, soonest first."""
        due = [
            r
            for r in self._runs.values()
            if r.status == RunStatus.PAUSED and r.resume_at is not None and r.resume_at <= now
        ]
        due.sort(key=lambda r: (r.resume_at, self._run_order[r.run_id]))
        return [_run_out(r) for r in due]

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | timedelta) -> Lease:
        """Take the run's lease if free, expired or already `owner`'s; else `LeaseHeld`."""
        duration = seconds(ttl)
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        lease = _rules.decide_lease(
            run_id=run_id,
            owner=owner,
            current_owner=run.lease_owner,
            current_token=run.lease_token,
            current_expires=run.lease_expires,
            now=self.clock(),
            ttl=duration,
        )
        self._set_lease(run, lease.owner, lease.token, lease.expires_at)
        return lease

    async def renew_lease(self, lease: Lease, ttl: float | timedelta) -> Lease:
        """Extend `lease` by `ttl` from now; `StaleLease` if another owner took the run."""
        duration = seconds(ttl)
        run = self._fenced(lease)
        renewed = _evolve(lease, expires_at=self.clock() + duration)
        self._set_lease(run, lease.owner, lease.token, renewed.expires_at)
        return renewed

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up; a no-op if it is no longer current."""
        run = self._runs.get(lease.run_id)
        if run is not None and (run.lease_owner, run.lease_token) == (lease.owner, lease.token):
            self._set_lease(run, None, run.lease_token, None)

    def _set_lease(
        self, run: RunRecord, owner: str | None, token: int, expires: float | None
    ) -> None:
        self._runs[run.run_id] = _evolve(
            run, lease_owner=owner, lease_token=token, lease_expires=expires
        )

    def _fenced(self, lease: Lease) -> RunRecord:
        run = self._runs.get(lease.run_id)
        if run is None:
            raise KeyError(lease.run_id)
        _rules.check_fence(lease, run.lease_owner, run.lease_token)
        return run

    # -- steps --------------------------------------------------------------------------

    async def commit_step(self, lease: Lease, step: StepRecord) -> bool:
        """Record a step result; ``False`` (and no change) if already committed."""
        # Written out rather than composed from the helpers: this runs for every step.
        run_id = step.run_id
        if run_id != lease.run_id:
            _rules.check_same_run(lease, run_id)
        output, error = step.output, step.error  # reject non-JSON before fencing
        if type(output) not in _PLAIN:
            output = _clone(output)
        if error is not None:
            error = _clone(error)
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        if run.lease_token != lease.token or run.lease_owner != lease.owner:
            _rules.check_fence(lease, run.lease_owner, run.lease_token)  # raises StaleLease
        steps = self._steps.get(run_id)
        if steps is None:
            steps = self._steps[run_id] = {}
        elif step.agent in steps:
            return False
        steps[step.agent] = (
            run_id, step.agent, _VALUES[step.status], output, step.attempts, error,
            step.degraded_reason, next(reversed(steps.values()))[_SEQ] + 1 if steps else 1,
            step.completed_at or self.clock(),
        )  # fmt: skip
        return True

    async def commit_step_and_finish(
        self, lease: Lease, step: StepRecord, status: RunStatus | str, *, result: JSON = None
    ) -> bool:
        """`commit_step`, then the run's outcome if it was first (`SupportsCommitAndFinish`).

        Atomic as every write here is: nothing between the two awaits anything.
        """
        new_result = _clone(result)  # reject non-JSON before writing anything
        new_status = status if type(status) is RunStatus else RunStatus(status)
        if not await self.commit_step(lease, step):
            return False
        run = self._runs[lease.run_id]  # fenced by the commit just made
        self._runs[lease.run_id] = _finished(
            run, new_status, new_result, None, None, self.clock(), None, None
        )
        return True

    async def reset_steps(self, lease: Lease, agents: Sequence[str]) -> int:
        """Forget the committed steps of `agents` (fenced); returns how many there were."""
        self._fenced(lease)
        steps = self._steps.get(lease.run_id, {})
        return sum(steps.pop(agent, None) is not None for agent in agents)

    async def set_input(self, lease: Lease, input: JSON) -> None:  # noqa: A002 - the run's input
        """Replace the run's input (fenced)."""
        new_input = _clone(input)
        self._fenced(lease)
        run = self._runs[lease.run_id]
        self._runs[lease.run_id] = _evolve(run, input=new_input, updated_at=self.clock())

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
        """Move a committed step along `STEP_TRANSITIONS` (fenced); ``output=...`` keeps it."""
        if run_id != lease.run_id:
            raise ValueError(f"step of run {run_id!r} updated under a lease on {lease.run_id!r}")
        new_status = StepStatus(status)
        new_error = _clone(error)
        new_output = ... if output is ... else _clone(output)
        self._fenced(lease)
        steps = self._steps.get(run_id, {})
        old = steps.get(agent)
        if old is None:
            raise KeyError(f"{run_id}/{agent}")
        _rules.check_transition(run_id, agent, _STATUSES[old[2]], new_status)
        _, _, _, output_was, attempts, _, reason, seq, completed_at = old
        if new_status in _rules.RESEQUENCE:
            seq, completed_at = self._next_seq(steps), self.clock()
            del steps[agent]  # re-inserted last: the dict stays in commit (seq) order
        steps[agent] = packed = (
            run_id, agent, new_status.value, output_was if new_output is ... else new_output,
            attempts, new_error, reason, seq, completed_at,
        )  # fmt: skip
        return _unpack(packed)

    @staticmethod
    def _next_seq(steps: dict[str, _Packed]) -> int:
        # Each run's steps are kept in seq order, so the last one holds the highest seq.
        return next(reversed(steps.values()))[_SEQ] + 1 if steps else 1

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Return the run's committed steps by agent name, in commit order."""
        return {agent: _unpack(s) for agent, s in self._steps.get(run_id, {}).items()}

    async def get_lease_and_step(
        self, run_id: str, agent: str
    ) -> tuple[Lease | None, StepRecord | None]:
        """The run's current lease and the agent's committed step (`SupportsLeaseAndStep`)."""
        run = self._runs.get(run_id)
        step = self._steps.get(run_id, {}).get(agent)
        lease = None
        if run is not None:
            lease = _rules.current_lease(
                run_id, run.lease_owner, run.lease_token, run.lease_expires
            )
        return lease, None if step is None else _unpack(step)

    # -- shared state -------------------------------------------------------------------

    async def get_state(self, run_id: str) -> tuple[int, dict[str, JSON]]:
        """Return the run's shared state and its version (``0, {}`` before any write)."""
        version, data = self._state.get(run_id, (0, "{}"))
        return version, _rules.loads(data)

    async def cas_state(
        self,
        run_id: str,
        expected_version: int,
        data: Mapping[str, JSON],
        *,
        lease: Lease | None = None,
    ) -> int:
        """Replace the state if still at `expected_version`, else raise `StateConflict`.

        With `lease`, fenced as a step commit is (`StaleLease`, `KeyError`).
        """
        encoded = _rules.dumps(dict(data))
        if lease is not None:
            _rules.check_same_run(lease, run_id)
            self._fenced(lease)
        actual = self._state.get(run_id, (0, "{}"))[0]
        if actual != expected_version:
            raise StateConflict(run_id, expected=expected_version, actual=actual)
        self._state[run_id] = (actual + 1, encoded)
        return actual + 1

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
        old = self._dlq_of.get(run_id)
        entry = DeadLetter(
            id=old or _rules.new_id(),
            run_id=run_id,
            workflow=workflow,
            reason=reason,
            error=_clone(error),
            input=_clone(input),
            created_at=self.clock(),
            steps=None if steps is None else {k: _step_out(s) for k, s in steps.items()},
        )
        self._dlq.pop(entry.id, None)  # re-insert: a replaced entry moves to the back
        self._dlq[entry.id] = entry
        self._dlq_of[run_id] = entry.id
        return entry.id

    async def dlq_list(self, workflow: str | None = None) -> list[DeadLetter]:
        """Return the entries, oldest first."""
        return [
            self._dead_out(d)
            for d in self._dlq.values()
            if workflow is None or d.workflow == workflow
        ]

    async def dlq_get(self, id: str) -> DeadLetter | None:  # noqa: A002  -- record field name
        """Return the entry, or ``None``."""
        entry = self._dlq.get(id)
        return None if entry is None else self._dead_out(entry)

    async def dlq_of_run(self, run_id: str) -> DeadLetter | None:
        """Return the run's entry (a run has at most one), or ``None``."""
        entry_id = self._dlq_of.get(run_id)
        return None if entry_id is None else self._dead_out(self._dlq[entry_id])

    async def dlq_drop(self, id: str) -> bool:  # noqa: A002  -- record field name
        """Remove the entry; ``False`` if it was not there."""
        entry = self._dlq.pop(id, None)
        if entry is None:
            return False
        del self._dlq_of[entry.run_id]
        return True

    async def dlq_size(self, workflow: str | None = None) -> int:
        """Count the entries."""
        return sum(1 for d in self._dlq.values() if workflow is None or d.workflow == workflow)

    @staticmethod
    def _dead_out(entry: DeadLetter) -> DeadLetter:
        steps = None if entry.steps is None else {k: _step_out(s) for k, s in entry.steps.items()}
        return _evolve(entry, error=_clone(entry.error), input=_clone(entry.input), steps=steps)

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
        of_run = self._reviews_of.setdefault(run_id, [])
        for item_id in of_run:
            item = self._reviews[item_id]
            if (item.agent, item.status) == (agent, ReviewStatus.OPEN):
                return item.id
        item = ReviewItem(
            id=_rules.new_id(),
            run_id=run_id,
            workflow=workflow,
            agent=agent,
            reason=reason,
            suggestions=_clone(list(suggestions)),
            context=_clone(context),
            created_at=self.clock(),
        )
        self._reviews[item.id] = item
        of_run.append(item.id)
        return item.id

    async def review_list(self, status: str | None = "open") -> list[ReviewItem]:
        """Return items with `status` (all if ``None``), oldest first."""
        wanted = _rules.review_status(status)
        return [
            self._review_out(i)
            for i in self._reviews.values()
            if wanted is None or i.status == wanted
        ]

    async def review_of_run(self, run_id: str) -> list[ReviewItem]:
        """Return the run's items, open and resolved, oldest first."""
        return [self._review_out(self._reviews[i]) for i in self._reviews_of.get(run_id, ())]

    async def review_get(self, id: str) -> ReviewItem | None:  # noqa: A002  -- record field
        """Return the item, or ``None``."""
        item = self._reviews.get(id)
        return None if item is None else self._review_out(item)

    async def review_resolve(self, id: str, value: JSON) -> ReviewItem:  # noqa: A002
        """Record the person's answer; `KeyError` if unknown, `StoreError` if resolved."""
        answer = _clone(value)
        item = self._reviews.get(id)
        if item is None:
            raise KeyError(id)
        if item.status is ReviewStatus.RESOLVED:
            raise StoreError(f"review item {id!r} is already resolved")
        item = _evolve(item, status=ReviewStatus.RESOLVED, value=answer, resolved_at=self.clock())
        self._reviews[id] = item
        return self._review_out(item)

    async def review_size(self) -> int:
        """Count the open items."""
        return sum(1 for i in self._reviews.values() if i.status is ReviewStatus.OPEN)

    @staticmethod
    def _review_out(item: ReviewItem) -> ReviewItem:
        return _evolve(
            item,
            suggestions=_clone(item.suggestions),
            context=_clone(item.context),
            value=_clone(item.value),
        )
