"""SQL for `PostgresStore`: one function per operation, each given a pooled connection.

Connections are in autocommit mode; an operation that must check before it writes (the
fence, a transition, a resolved review) opens a transaction and locks the run's row
``FOR NO KEY UPDATE`` first, so the check holds at commit and commits to one run are
serialised (``seq`` is ``MAX(seq) + 1`` read after the lock). Every transition appends to
``audit`` in the same statement or transaction as the change itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from firebreak.errors import StateConflict, StoreError
from firebreak.store import _rules
from firebreak.store._rules import RunUpdate
from firebreak.store.base import (
    Lease,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)

Conn = AsyncConnection[Any]

RUN_COLS = (
    "run_id, workflow, status, input, created_at, updated_at, resume_at, result, error,"
    " lease_owner, lease_token, lease_expires"
)
STEP_COLS = "run_id, agent, status, output, attempts, error, degraded_reason, seq, completed_at"
STEP_COLS_S = ", ".join(f"s.{c}" for c in STEP_COLS.split(", "))
"""`STEP_COLS` of the table aliased ``s``."""
DLQ_COLS = "id, run_id, workflow, reason, error, input, steps, created_at"
REVIEW_COLS = (
    "id, run_id, workflow, agent, reason, suggestions, context, status, value,"
    " created_at, resolved_at"
)
AUDIT_COLS = "id, at, actor, client, run_id, kind, what"

LOCK_RUN = (
    "SELECT lease_owner, lease_token, lease_expires FROM runs WHERE run_id = %s FOR NO KEY UPDATE"
)
"""The fence read: also serialises writers of one run until their transaction ends."""


@dataclass(frozen=True, slots=True)
class StepUpdate:
    """Encoded arguments of `update_step`; ``output=None`` keeps the stored output."""

    agent: str
    status: StepStatus
    error: str | None
    output: str | None
    now: float


def run_from_row(row: Any) -> RunRecord:
    """Build a run from a `RUN_COLS` row."""
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        input=row[3],
        created_at=row[4],
        updated_at=row[5],
        resume_at=row[6],
        result=row[7],
        error=row[8],
        lease_owner=row[9],
        lease_token=int(row[10]),
        lease_expires=row[11],
    )


def step_from_row(row: Any) -> StepRecord:
    """Build a step from a `STEP_COLS` row."""
    return StepRecord(
        run_id=row[0],
        agent=row[1],
        status=StepStatus(row[2]),
        output=row[3],
        attempts=row[4],
        error=row[5],
        degraded_reason=row[6],
        seq=row[7],
        completed_at=row[8],
    )


async def one(conn: Conn, query: str, params: Any = None) -> Any:
    cur = await conn.execute(query.encode(), params)
    return await cur.fetchone()


async def all_rows(conn: Conn, query: str, params: Any = None) -> list[Any]:
    cur = await conn.execute(query.encode(), params)
    return await cur.fetchall()


async def _audit(
    conn: Conn, *, now: float, actor: str | None, run_id: str | None, kind: str, what: str
) -> None:
    await conn.execute(
        "INSERT INTO audit (at, actor, run_id, kind, what) VALUES (%s, %s, %s, %s, %s::jsonb)",
        (now, actor, run_id, kind, what),
    )


async def _lock(conn: Conn, run_id: str) -> tuple[str | None, int, float | None]:
    row = await one(conn, LOCK_RUN, (run_id,))
    if row is None:
        raise KeyError(run_id)
    return row[0], int(row[1]), row[2]


async def _fence(conn: Conn, lease: Lease) -> None:
    owner, token, _ = await _lock(conn, lease.run_id)
    _rules.check_fence(lease, owner, token)


# -- runs and leases ---------------------------------------------------------------------

_CREATE_RUN = f"""
WITH ins AS (
    INSERT INTO runs (run_id, workflow, status, input, created_at, updated_at)
    VALUES (%(run_id)s, %(workflow)s, 'pending', %(input)s::json, %(now)s, %(now)s)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING {RUN_COLS}
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, NULL, run_id, 'run_created',
           jsonb_build_object('workflow', workflow) FROM ins
)
SELECT {RUN_COLS}, true FROM ins
UNION ALL
SELECT {RUN_COLS}, false FROM runs WHERE run_id = %(run_id)s::text
"""  # noqa: S608  -- constant column lists only


async def create_run(
    conn: Conn, run_id: str, workflow: str, input_json: str, now: float
) -> tuple[RunRecord, bool]:
    """Insert the run unless it exists; return it and whether it was created."""
    params = {"run_id": run_id, "workflow": workflow, "input": input_json, "now": now}
    # A concurrent insert of the same id commits after this statement's snapshot was
    # taken: the row is then neither inserted nor visible. Asking again sees it.
    for _ in range(5):
        row = await one(conn, _CREATE_RUN, params)
        if row is not None:
            return run_from_row(row), bool(row[12])
    raise StoreError(f"run {run_id!r}: could not create or read it (concurrent writers)")


async def get_run(conn: Conn, run_id: str) -> RunRecord | None:
    """One run."""
    row = await one(conn, f"SELECT {RUN_COLS} FROM runs WHERE run_id = %s", (run_id,))  # noqa: S608
    return None if row is None else run_from_row(row)


async def run_ids_starting(conn: Conn, prefix: str, limit: int) -> list[str]:
    """Run ids starting with `prefix`, in byte order (a scan: the CLI's short ids only)."""
    rows = await all_rows(
        conn,
        "SELECT run_id FROM runs WHERE starts_with(run_id, %s)"
        ' ORDER BY run_id COLLATE "C" LIMIT %s',
        (prefix, limit),
    )
    return [row[0] for row in rows]


async def list_runs(
    conn: Conn, workflow: str | None, status: RunStatus | None, limit: int
) -> list[RunRecord]:
    """Runs, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if workflow is not None:
        where.append("workflow = %s")
        params.append(workflow)
    if status is not None:
        where.append("status = %s")
        params.append(str(status))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await all_rows(
        conn,
        f"SELECT {RUN_COLS} FROM runs {clause}"  # noqa: S608  -- placeholders only
        " ORDER BY created_at DESC, pos DESC LIMIT %s",
        (*params, limit),
    )
    return [run_from_row(r) for r in rows]


async def due_runs(conn: Conn, now: float) -> list[RunRecord]:
    """Paused runs due by `now`, soonest first."""
    rows = await all_rows(
        conn,
        f"SELECT {RUN_COLS} FROM runs"  # noqa: S608  -- constant
        " WHERE status = 'paused' AND resume_at <= %s ORDER BY resume_at, pos",
        (now,),
    )
    return [run_from_row(r) for r in rows]


_SET_STATUS = f"""
WITH upd AS (
    UPDATE runs SET status = %(status)s, result = %(result)s::json, error = %(error)s::json,
        resume_at = %(resume_at)s::float8, updated_at = %(now)s::float8
    WHERE run_id = %(run_id)s RETURNING {RUN_COLS}
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, %(owner)s::text, run_id, 'run_status',
           jsonb_build_object('status', status, 'resume_at', resume_at,
                              'error', error::jsonb, 'token', lease_token)
    FROM upd
)
SELECT {RUN_COLS} FROM upd
"""  # noqa: S608  -- constant column lists only


async def set_run_status(conn: Conn, lease: Lease, args: RunUpdate) -> RunRecord:
    """Fenced update of the run's outcome."""
    async with conn.transaction():
        await _fence(conn, lease)
        row = await one(
            conn,
            _SET_STATUS,
            {
                "status": str(args.status),
                "result": args.result,
                "error": args.error,
                "resume_at": args.resume_at,
                "now": args.now,
                "run_id": lease.run_id,
                "owner": lease.owner,
            },
        )
    return run_from_row(row)


async def acquire_lease(conn: Conn, run_id: str, owner: str, now: float, ttl: float) -> Lease:
    """Take the lease per `_rules.decide_lease`."""
    async with conn.transaction():
        cur_owner, cur_token, cur_expires = await _lock(conn, run_id)
        lease = _rules.decide_lease(
            run_id=run_id,
            owner=owner,
            current_owner=cur_owner,
            current_token=cur_token,
            current_expires=cur_expires,
            now=now,
            ttl=ttl,
        )
        await _set_lease(conn, lease)
        what = {"token": lease.token, "expires_at": lease.expires_at, "previous": cur_owner}
        await _audit(
            conn,
            now=now,
            actor=owner,
            run_id=run_id,
            kind="lease_acquired",
            what=_rules.dumps(what),
        )
    return lease


async def _set_lease(conn: Conn, lease: Lease) -> None:
    await conn.execute(
        "UPDATE runs SET lease_owner = %s, lease_token = %s, lease_expires = %s WHERE run_id = %s",
        (lease.owner, lease.token, lease.expires_at, lease.run_id),
    )


async def renew_lease(conn: Conn, lease: Lease, now: float, expires_at: float) -> Lease:
    """Extend a current lease."""
    renewed = Lease(
        run_id=lease.run_id, owner=lease.owner, token=lease.token, expires_at=expires_at
    )
    async with conn.transaction():
        await _fence(conn, lease)
        await _set_lease(conn, renewed)
        what = _rules.dumps({"token": lease.token, "expires_at": expires_at})
        await _audit(
            conn, now=now, actor=lease.owner, run_id=lease.run_id, kind="lease_renewed", what=what
        )
    return renewed


_RELEASE = """
WITH upd AS (
    UPDATE runs SET lease_owner = NULL, lease_expires = NULL
    WHERE run_id = %(run_id)s AND lease_owner = %(owner)s AND lease_token = %(token)s
    RETURNING run_id, lease_token
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, %(owner)s::text, run_id, 'lease_released',
           jsonb_build_object('token', lease_token) FROM upd
)
SELECT count(*) FROM upd
"""


async def release_lease(conn: Conn, lease: Lease, now: float) -> None:
    """Free a current lease; leave a lost one alone."""
    params = {"run_id": lease.run_id, "owner": lease.owner, "token": lease.token, "now": now}
    await conn.execute(_RELEASE.encode(), params)


# -- steps -------------------------------------------------------------------------------


_UPDATE_STEP = f"""
WITH upd AS (
    UPDATE steps SET status = %(status)s, error = %(error)s::json,
        output = COALESCE(%(output)s::json, output),
        seq = CASE WHEN %(reseq)s::boolean
              THEN (SELECT MAX(seq) + 1 FROM steps WHERE run_id = %(run_id)s::text)
              ELSE seq END,
        completed_at = CASE WHEN %(reseq)s::boolean THEN %(now)s::float8 ELSE completed_at END
    WHERE run_id = %(run_id)s::text AND agent = %(agent)s::text
    RETURNING {STEP_COLS}
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, %(owner)s::text, run_id, 'step_updated',
           jsonb_build_object('agent', agent, 'from', %(old)s::text, 'status', status,
                              'seq', seq, 'error', error::jsonb)
    FROM upd
)
SELECT {STEP_COLS} FROM upd
"""  # noqa: S608  -- constant column lists only


async def update_step(conn: Conn, lease: Lease, args: StepUpdate) -> StepRecord:
    """Fenced status change along `STEP_TRANSITIONS`."""
    run_id = lease.run_id
    async with conn.transaction():
        await _fence(conn, lease)
        row = await one(
            conn,
            "SELECT status FROM steps WHERE run_id = %s AND agent = %s FOR UPDATE",
            (run_id, args.agent),
        )
        if row is None:
            raise KeyError(f"{run_id}/{args.agent}")
        old = StepStatus(row[0])
        _rules.check_transition(run_id, args.agent, old, args.status)
        updated = await one(
            conn,
            _UPDATE_STEP,
            {
                "status": str(args.status),
                "error": args.error,
                "output": args.output,
                "reseq": args.status in _rules.RESEQUENCE,
                "now": args.now,
                "run_id": run_id,
                "agent": args.agent,
                "owner": lease.owner,
                "old": str(old),
            },
        )
    return step_from_row(updated)


async def reset_steps(conn: Conn, lease: Lease, agents: list[str], now: float) -> int:
    """Fenced delete of some committed steps (a replay from the dead-letter queue)."""
    async with conn.transaction():
        await _fence(conn, lease)
        rows = await all_rows(
            conn,
            "DELETE FROM steps WHERE run_id = %s AND agent = ANY(%s::text[]) RETURNING agent",
            (lease.run_id, agents),
        )
        gone = sorted(str(r[0]) for r in rows)
        what = _rules.dumps({"agents": gone, "token": lease.token})
        await _audit(
            conn, now=now, actor=lease.owner, run_id=lease.run_id, kind="steps_reset", what=what
        )
    return len(gone)


async def set_input(conn: Conn, lease: Lease, data: str, now: float) -> None:
    """Fenced replacement of the run's input."""
    async with conn.transaction():
        await _fence(conn, lease)
        await conn.execute(
            "UPDATE runs SET input = %s::json, updated_at = %s WHERE run_id = %s",
            (data, now, lease.run_id),
        )
        what = _rules.dumps({"token": lease.token})
        await _audit(
            conn, now=now, actor=lease.owner, run_id=lease.run_id, kind="input_replaced", what=what
        )


async def get_steps(conn: Conn, run_id: str) -> dict[str, StepRecord]:
    """A run's steps in commit order."""
    rows = await all_rows(
        conn,
        f"SELECT {STEP_COLS} FROM steps WHERE run_id = %s ORDER BY seq",  # noqa: S608
        (run_id,),
    )
    return {r[1]: step_from_row(r) for r in rows}


async def get_lease_and_step(
    conn: Conn, run_id: str, agent: str
) -> tuple[Lease | None, StepRecord | None]:
    """A run's lease and one of its steps, in one statement (so one snapshot)."""
    row = await one(
        conn,
        f"SELECT r.lease_owner, r.lease_token, r.lease_expires, {STEP_COLS_S}"  # noqa: S608
        " FROM (SELECT 1) AS one LEFT JOIN runs r ON r.run_id = %s"
        " LEFT JOIN steps s ON s.run_id = %s AND s.agent = %s",
        (run_id, run_id, agent),
    )
    lease = None if row[1] is None else _rules.current_lease(run_id, row[0], int(row[1]), row[2])
    return lease, None if row[4] is None else step_from_row(row[3:])


async def get_step(conn: Conn, run_id: str, agent: str) -> StepRecord | None:
    """One committed step."""
    row = await one(
        conn,
        f"SELECT {STEP_COLS} FROM steps WHERE run_id = %s AND agent = %s",  # noqa: S608
        (run_id, agent),
    )
    return None if row is None else step_from_row(row)


# -- shared state ------------------------------------------------------------------------


async def get_state(conn: Conn, run_id: str) -> tuple[int, dict[str, Any]]:
    """A run's shared state."""
    row = await one(conn, "SELECT version, data FROM shared_state WHERE run_id = %s", (run_id,))
    return (0, {}) if row is None else (int(row[0]), row[1])


async def cas_state(conn: Conn, run_id: str, expected: int, data: str, lease: Lease | None) -> int:
    """Compare-and-set in one statement: an insert at version 0, else a guarded update.

    With `lease`: fenced, in one transaction with the write (the fence locks the run's row).
    """
    if lease is None:
        return await _cas_state(conn, run_id, expected, data)
    async with conn.transaction():
        await _fence(conn, lease)
        return await _cas_state(conn, run_id, expected, data)


async def _cas_state(conn: Conn, run_id: str, expected: int, data: str) -> int:
    for _ in range(5):
        if expected == 0:
            row = await one(
                conn,
                "INSERT INTO shared_state (run_id, version, data) VALUES (%s, 1, %s::json)"
                " ON CONFLICT (run_id) DO NOTHING RETURNING version",
                (run_id, data),
            )
        else:
            row = await one(
                conn,
                "UPDATE shared_state SET version = version + 1, data = %s::json"
                " WHERE run_id = %s AND version = %s RETURNING version",
                (data, run_id, expected),
            )
        if row is not None:
            return int(row[0])
        actual, _ = await get_state(conn, run_id)
        if actual != expected:
            raise StateConflict(run_id, expected=expected, actual=actual)
    raise StoreError(f"run {run_id!r}: shared state kept changing under compare-and-set")
