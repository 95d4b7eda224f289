"""The hot writes of `PostgresStore` as operations of one statement (``apply_batch``).

Every drive of a run makes the same writes: begin (`begin`), one commit per step
(`commit`) and finish (`finish`), or a last commit that carries the finish. Each is
encoded here as an `Op`: its fields for the ``apply_batch`` function (migrations 3 and 4)
and a `judge` that turns the row the server returns for it into the caller's answer or
error. Any number of operations, of any kinds and runs, then travel as one statement in one
transaction (`_pg_batch`); `apply_one` sends one alone. The server raises nothing for an
unknown run, a stale lease, a held lease or a duplicate step: it reports, and the judge
decides, so one operation never fails the others of its batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from firebreak.errors import StaleLease, StoreError
from firebreak.store import _rules
from firebreak.store._rules import RunUpdate
from firebreak.store.base import TERMINAL, Lease, RunRecord, RunStatus, StepRecord

__all__ = ["APPLY", "Op", "apply_one", "begin", "commit", "finish", "params"]

APPLY = (
    b"SELECT o_found, o_created, o_done, o_seq, o_run_id, o_workflow, o_status, o_input,"
    b" o_created_at, o_updated_at, o_resume_at, o_result, o_error, o_lease_owner,"
    b" o_lease_token, o_lease_expires FROM apply_batch(%s::jsonb) ORDER BY o_n"
)
"""One row per operation, in the order given: (found, created, done, seq, the run's columns)."""


@dataclass(slots=True)
class Op:
    """One operation of a batch: its arguments and how to read its outcome."""

    run_id: str
    args: tuple[Any, ...]
    """kind, run_id, owner, token, now, workflow, agent, status, data, attempts, error,
    reason, num: the fields of one operation of ``apply_batch`` (see migration 3)."""
    judge: Callable[[Any], Any]
    """Reads this operation's row: returns the answer or raises the caller's error."""


def params(ops: Sequence[Op]) -> tuple[str]:
    """The argument of `APPLY` for `ops`: a JSON array of their argument arrays.

    One ``json.dumps`` (in C) for the batch: far cheaper than an array parameter per field,
    which psycopg dumps element by element in Python.
    """
    return (json.dumps([op.args for op in ops], separators=(",", ":")),)


async def apply_one(conn: AsyncConnection[Any], op: Op) -> Any:
    """Apply `op` alone, in its own transaction; return its judged outcome."""
    cur = await conn.execute(APPLY, params([op]))
    return op.judge(await cur.fetchone())


def _run(row: Any) -> RunRecord:
    """The run in columns 4.. of a row of `APPLY`."""
    return RunRecord(
        run_id=row[4],
        workflow=row[5],
        status=RunStatus(row[6]),
        input=row[7],
        created_at=row[8],
        updated_at=row[9],
        resume_at=row[10],
        result=row[11],
        error=row[12],
        lease_owner=row[13],
        lease_token=int(row[14]),
        lease_expires=row[15],
    )


# -- begin ---------------------------------------------------------------------------------


def begin(run_id: str, workflow: str, input_json: str, *, owner: str, now: float, ttl: float) -> Op:
    """Get or create the run, lock it, take its lease and mark it running if free."""
    expires = now + ttl

    def judge(row: Any) -> tuple[RunRecord, bool, Lease | None]:
        if row is None or not row[0]:  # neither inserted nor found: deleted under us
            raise StoreError(f"run {run_id!r}: could not create or read it (concurrent writers)")
        created, leased = bool(row[1]), bool(row[2])
        run = _run(row)
        if leased:
            lease = Lease(run_id=run_id, owner=owner, token=run.lease_token, expires_at=expires)
            return run, created, lease
        if run.status in TERMINAL or run.workflow != workflow:
            return run, created, None
        # Not leased, yet ours to run: another owner's live lease (decide_lease raises).
        _rules.decide_lease(
            run_id=run_id,
            owner=owner,
            current_owner=run.lease_owner,
            current_token=run.lease_token,
            current_expires=run.lease_expires,
            now=now,
            ttl=ttl,
        )
        raise StoreError(f"run {run_id!r}: lease neither taken nor held (concurrent writers)")

    args = ("b", run_id, owner, None, now, workflow, None, None, input_json, None, None, None)
    return Op(run_id, (*args, expires), judge)


# -- commit a step -------------------------------------------------------------------------


def commit(lease: Lease, step: StepRecord, now: float, finish: RunUpdate | None = None) -> Op:
    """Fenced first-commit-wins insert of `step`; the judge says whether it was new.

    `finish`: the run's outcome, recorded in the same op if the commit is the first
    (migration 4; its status and result only). Raises `ValueError` here, before anything
    is sent, for a step of another run than the lease's, and `TypeError` or `ValueError`
    for a non-JSON value.
    """
    _rules.check_same_run(lease, step.run_id)
    output = _rules.dumps(step.output)
    error = None if step.error is None else _rules.dumps(step.error)

    def judge(row: Any) -> bool:
        if not row[0]:
            raise KeyError(lease.run_id)
        _rules.check_fence(lease, row[13], int(row[14]))
        return bool(row[2])

    args: tuple[Any, ...] = (
        "c",
        step.run_id,
        lease.owner,
        lease.token,
        now,
        None,
        step.agent,
        str(step.status),
        output,
        step.attempts,
        error,
        step.degraded_reason,
        step.completed_at or now,
    )
    if finish is not None:
        args = (*args, str(finish.status), finish.result)
    return Op(step.run_id, args, judge)


# -- finish --------------------------------------------------------------------------------


def finish(lease: Lease, update: RunUpdate) -> Op:
    """Fenced final status and lease release; the judge returns the run as updated."""

    def judge(row: Any) -> RunRecord:
        if not row[0]:
            raise KeyError(lease.run_id)
        if row[2]:
            return _run(row)
        _rules.check_fence(lease, row[13], int(row[14]))
        raise StaleLease(lease.run_id, token=lease.token)  # released, same owner and token

    args = (
        "f",
        lease.run_id,
        lease.owner,
        lease.token,
        update.now,
        None,
        None,
        str(update.status),
        update.result,
        None,
        update.error,
        None,
        update.resume_at,
    )
    return Op(lease.run_id, args, judge)
