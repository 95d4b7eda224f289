"""SQL for `SQLiteStore`: reads take the read connection, writes run on the writer thread.

Every write function runs inside the writer's batch transaction and does its own checks
(fencing token, first commit wins, CAS version) there, so they hold at commit time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from firebreak.errors import StateConflict, StoreError
from firebreak.store import _rules
from firebreak.store._rules import RunUpdate
from firebreak.store.base import (
    TERMINAL,
    DeadLetter,
    Lease,
    ReviewItem,
    ReviewStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
)

_RUNNING = str(RunStatus.RUNNING)

_RUN_COLS = (
    "run_id, workflow, status, input, created_at, updated_at, resume_at, result, error,"
    " lease_owner, lease_token, lease_expires"
)
_STEP_COLS = "run_id, agent, status, output, attempts, error, degraded_reason, seq, completed_at"
_STEP_COLS_S = ", ".join(f"s.{c}" for c in _STEP_COLS.split(", "))
_DLQ_COLS = "id, run_id, workflow, reason, error, input, steps, created_at"
_REVIEW_COLS = (
    "id, run_id, workflow, agent, reason, suggestions, context, status, value,"
    " created_at, resolved_at"
)


@dataclass(frozen=True, slots=True)
class StepUpdate:
    """Encoded arguments of `update_step`; ``output=None`` keeps the stored output."""

    agent: str
    status: StepStatus
    error: str | None
    output: str | None
    now: float


def _one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    # fetchall, never a half-read cursor: an open statement would pin an old read snapshot.
    rows = conn.execute(sql, params).fetchall()
    return rows[0] if rows else None


def _run(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        status=RunStatus(row[2]),
        input=_rules.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        resume_at=row[6],
        result=_rules.loads(row[7]),
        error=_rules.loads(row[8]),
        lease_owner=row[9],
        lease_token=row[10],
        lease_expires=row[11],
    )


def _step(row: Any) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        agent=row[1],
        status=StepStatus(row[2]),
        output=_rules.loads(row[3]),
        attempts=row[4],
        error=_rules.loads(row[5]),
        degraded_reason=row[6],
        seq=row[7],
        completed_at=row[8],
    )


def _dead(row: Any) -> DeadLetter:
    snapshot = _rules.loads(row[6])
    return DeadLetter(
        id=row[0],
        run_id=row[1],
        workflow=row[2],
        reason=row[3],
        error=_rules.loads(row[4]),
        input=_rules.loads(row[5]),
        steps=None
        if snapshot is None
        else {k: _rules.step_from_dict(v) for k, v in snapshot.items()},
        created_at=row[7],
    )


def _review(row: Any) -> ReviewItem:
    return ReviewItem(
        id=row[0],
        run_id=row[1],
        workflow=row[2],
        agent=row[3],
        reason=row[4],
        suggestions=_rules.loads(row[5]),
        context=_rules.loads(row[6]),
        status=ReviewStatus(row[7]),
        value=_rules.loads(row[8]),
        created_at=row[9],
        resolved_at=row[10],
    )


# -- runs and leases (writes) -------------------------------------------------------------


def create_run(
    run_id: str, workflow: str, input_json: str, now: float, conn: sqlite3.Connection
) -> tuple[RunRecord, bool]:
    """Insert the run unless it exists; return it and whether it was created."""
    cur = conn.execute(
        "INSERT INTO runs (run_id, workflow, status, input, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
        (run_id, workflow, str(RunStatus.PENDING), input_json, now, now),
    )
    run = get_run(run_id, conn)
    assert run is not None  # noqa: S101  -- inserted or already there, in this transaction
    return run, cur.rowcount == 1


def _lease_row(conn: sqlite3.Connection, run_id: str) -> tuple[str | None, int, float | None]:
    row = _one(
        conn, "SELECT lease_owner, lease_token, lease_expires FROM runs WHERE run_id = ?", (run_id,)
    )
    if row is None:
        raise KeyError(run_id)
    return row[0], row[1], row[2]


def _fence(conn: sqlite3.Connection, lease: Lease) -> None:
    owner, token, _ = _lease_row(conn, lease.run_id)
    _rules.check_fence(lease, owner, token)


def _set_lease(conn: sqlite3.Connection, lease: Lease) -> None:
    conn.execute(
        "UPDATE runs SET lease_owner = ?, lease_token = ?, lease_expires = ? WHERE run_id = ?",
        (lease.owner, lease.token, lease.expires_at, lease.run_id),
    )


def acquire_lease(
    run_id: str, owner: str, now: float, ttl: float, conn: sqlite3.Connection
) -> Lease:
    """Take the lease per `_rules.decide_lease`."""
    cur_owner, cur_token, cur_expires = _lease_row(conn, run_id)
    lease = _rules.decide_lease(
        run_id=run_id,
        owner=owner,
        current_owner=cur_owner,
        current_token=cur_token,
        current_expires=cur_expires,
        now=now,
        ttl=ttl,
    )
    _set_lease(conn, lease)
    return lease


def renew_lease(lease: Lease, expires_at: float, conn: sqlite3.Connection) -> Lease:
    """Extend a current lease."""
    _fence(conn, lease)
    renewed = Lease(
        run_id=lease.run_id, owner=lease.owner, token=lease.token, expires_at=expires_at
    )
    _set_lease(conn, renewed)
    return renewed


def release_lease(lease: Lease, conn: sqlite3.Connection) -> None:
    """Free a current lease; leave a lost one alone."""
    conn.execute(
        "UPDATE runs SET lease_owner = NULL, lease_expires = NULL"
        " WHERE run_id = ? AND lease_owner = ? AND lease_token = ?",
        (lease.run_id, lease.owner, lease.token),
    )


def set_run_status(lease: Lease, args: RunUpdate, conn: sqlite3.Connection) -> RunRecord:
    """Fenced update of the run's outcome."""
    _fence(conn, lease)
    conn.execute(
        "UPDATE runs SET status = ?, result = ?, error = ?, resume_at = ?, updated_at = ?"
        " WHERE run_id = ?",
        (str(args.status), args.result, args.error, args.resume_at, args.now, lease.run_id),
    )
    run = get_run(lease.run_id, conn)
    assert run is not None  # noqa: S101  -- fenced above, so it exists
    return run


_BEGIN_NEW_RUN = (
    "INSERT INTO runs (run_id, workflow, status, input, created_at, updated_at,"
    " lease_owner, lease_token, lease_expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id) DO NOTHING"
)
"""A run that did not exist, created leased and running; no row if it existed.

No ``RETURNING``, here or in the other hot statements: SQLite gathers a RETURNING clause's
rows in a temporary table, built and dropped per statement (a quarter of the SQL's work
for a step of a durable run); the record is built from what was written instead."""


def begin_new_run(  # noqa: PLR0917 - bound by partial() in the order the writer calls it
    run_id: str,
    workflow: str,
    input_json: str,
    owner: str,
    now: float,
    ttl: float,
    conn: sqlite3.Connection,
) -> tuple[RunRecord, bool, Lease | None] | None:
    """`begin_run` for a run that does not exist yet, in one statement; ``None`` if it does.

    The usual case: the run is created leased and running (the general path takes seven
    statements). One statement, so an idle store commits it with no BEGIN and COMMIT.
    """
    lease = _rules.decide_lease(
        run_id=run_id,
        owner=owner,
        current_owner=None,
        current_token=0,
        current_expires=None,
        now=now,
        ttl=ttl,
    )
    # Decoded before the insert, which commits by itself: nothing may fail after it (a
    # nesting deep enough to pass the encoder can exhaust the decoder's stack).
    value = _rules.loads(input_json)
    row = (run_id, workflow, _RUNNING, input_json, now, now, owner, lease.token, lease.expires_at)
    if conn.execute(_BEGIN_NEW_RUN, row).rowcount == 0:
        return None
    run = RunRecord(
        run_id=run_id,
        workflow=workflow,
        status=RunStatus.RUNNING,
        input=value,
        created_at=now,
        updated_at=now,
        lease_owner=owner,
        lease_token=lease.token,
        lease_expires=lease.expires_at,
    )
    return run, True, lease


def begin_run(  # noqa: PLR0917 - bound by partial() in the order the writer calls it
    run_id: str,
    workflow: str,
    input_json: str,
    owner: str,
    now: float,
    ttl: float,
    conn: sqlite3.Connection,
) -> tuple[RunRecord, bool, Lease | None]:
    """Get or create the run; unless finished or foreign, lease it and mark it running."""
    began = begin_new_run(run_id, workflow, input_json, owner, now, ttl, conn)
    if began is not None:
        return began
    run, created = create_run(run_id, workflow, input_json, now, conn)
    if run.status in TERMINAL or run.workflow != workflow:
        return run, created, None
    lease = acquire_lease(run_id, owner, now, ttl, conn)
    update = RunUpdate(status=RunStatus.RUNNING, result=None, error=None, resume_at=None, now=now)
    return set_run_status(lease, update, conn), created, lease


_FINISH_RUN = (
    "UPDATE runs SET status = ?, result = ?, error = {error}, resume_at = {resume_at},"
    " updated_at = ?, lease_owner = NULL, lease_expires = NULL"
    " WHERE run_id = ? AND lease_owner = ? AND lease_token = ?"
)
"""The outcome and the lease released, fenced, in one statement."""
_FINISH_FULL_RUN = _FINISH_RUN.format(error="?", resume_at="?")
_FINISH_PLAIN_RUN = _FINISH_RUN.format(error="NULL", resume_at="NULL")  # as _COMMIT_PLAIN_STEP


def _finish(lease: Lease, args: RunUpdate) -> tuple[str, tuple[Any, ...]]:
    """`_FINISH_RUN` with its parameters; NULL written as such when neither is set."""
    fence = (lease.run_id, lease.owner, lease.token)
    if args.error is None and args.resume_at is None:
        return _FINISH_PLAIN_RUN, (str(args.status), args.result, args.now, *fence)
    params = (str(args.status), args.result, args.error, args.resume_at, args.now, *fence)
    return _FINISH_FULL_RUN, params


def finish_run(lease: Lease, args: RunUpdate, conn: sqlite3.Connection) -> RunRecord:
    """Fenced final status, and the lease released, in one statement; the record back."""
    if conn.execute(*_finish(lease, args)).rowcount == 0:
        _fence(conn, lease)  # raises: the run is gone (KeyError) or the lease is not current
        raise AssertionError("unreachable: the fenced update matched no row")  # pragma: no cover
    run = get_run(lease.run_id, conn)
    assert run is not None  # noqa: S101  -- updated just above, in this transaction
    return run


# -- steps (writes) -----------------------------------------------------------------------


_COMMIT_STEP = (
    f"INSERT INTO steps ({_STEP_COLS}) VALUES (?, ?,"  # noqa: S608  -- constant
    " (SELECT ? FROM runs WHERE run_id = ? AND lease_token = ? AND lease_owner = ?),"
    " ?, ?, {error}, {reason}, (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?),"
    " ?) ON CONFLICT (run_id, agent) DO NOTHING"
)
"""The fence and the insert in one statement: the status is read through the fence, so
under a lease that is not the run's it is NULL and the NOT NULL constraint refuses the row.

Not an ``INSERT ... SELECT ... FROM runs``: an INSERT whose SELECT reads the table it writes
(the next ``seq``) goes through a temporary table in SQLite. One statement also lets an
idle store commit it with no BEGIN and COMMIT of its own (`Writer.write`, ``single``).
Callgrind, a 10-step run's SQL with the begin and finish below: 1,171K instructions before
(temporary tables in all three), 716K now (plus 37K for the finish's read-back)."""


_COMMIT_FULL_STEP = _COMMIT_STEP.format(error="?", reason="?")
_COMMIT_PLAIN_STEP = _COMMIT_STEP.format(error="NULL", reason="NULL")
"""For a step with no error and no degraded reason (most steps): NULL written as such.

A ``None`` parameter costs CPython's sqlite3 a failed adapter lookup (an AttributeError
raised and cleared, about 3K instructions); that was two per step of every run."""

StepInsert = tuple[str, tuple[Any, ...]]
"""A step's fenced insert: the statement and its parameters."""


def step_insert(lease: Lease, step: StepRecord, completed_at: float) -> StepInsert:
    """The insert that commits `step` under `lease` (`commit_step` runs it)."""
    head: tuple[Any, ...] = (
        step.run_id, step.agent, str(step.status), lease.run_id, lease.token, lease.owner,
        _rules.dumps(step.output), step.attempts,
    )  # fmt: skip
    tail = (step.run_id, completed_at)
    error, reason = step.error, step.degraded_reason
    if error is None and reason is None:
        return _COMMIT_PLAIN_STEP, head + tail
    return _COMMIT_FULL_STEP, (*head, None if error is None else _rules.dumps(error), reason, *tail)


def commit_step(lease: Lease, insert: StepInsert, conn: sqlite3.Connection) -> bool:
    """Fenced insert (`step_insert`); the first commit of (run_id, agent) wins."""
    try:
        cur = conn.execute(*insert)
    except sqlite3.IntegrityError:
        _fence(conn, lease)  # raises: the run is gone (KeyError) or the lease is not current
        raise  # another constraint: not the fence's doing
    return cur.rowcount == 1


def commit_step_and_finish(
    lease: Lease, insert: StepInsert, args: RunUpdate, conn: sqlite3.Connection
) -> bool:
    """`commit_step`; if it was the first commit, the run's outcome (`finish_run`'s update)."""
    if not commit_step(lease, insert, conn):
        return False
    conn.execute(*_finish(lease, args))  # fenced by the insert just made
    return True


def update_step(lease: Lease, args: StepUpdate, conn: sqlite3.Connection) -> StepRecord:
    """Fenced status change along `STEP_TRANSITIONS`."""
    _fence(conn, lease)
    run_id = lease.run_id
    row = _one(
        conn, "SELECT status FROM steps WHERE run_id = ? AND agent = ?", (run_id, args.agent)
    )
    if row is None:
        raise KeyError(f"{run_id}/{args.agent}")
    _rules.check_transition(run_id, args.agent, StepStatus(row[0]), args.status)
    conn.execute(
        "UPDATE steps SET status = ?, error = ?, output = COALESCE(?, output)"
        " WHERE run_id = ? AND agent = ?",
        (str(args.status), args.error, args.output, run_id, args.agent),
    )
    if args.status in _rules.RESEQUENCE:
        conn.execute(
            "UPDATE steps SET completed_at = ?,"
            " seq = (SELECT MAX(seq) + 1 FROM steps WHERE run_id = ?)"
            " WHERE run_id = ? AND agent = ?",
            (args.now, run_id, run_id, args.agent),
        )
    step = _one(
        conn,
        f"SELECT {_STEP_COLS} FROM steps WHERE run_id = ? AND agent = ?",  # noqa: S608
        (run_id, args.agent),
    )
    return _step(step)


def reset_steps(lease: Lease, agents: tuple[str, ...], conn: sqlite3.Connection) -> int:
    """Fenced delete of some committed steps (a replay from the dead-letter queue)."""
    _fence(conn, lease)
    cur = conn.executemany(
        "DELETE FROM steps WHERE run_id = ? AND agent = ?", [(lease.run_id, a) for a in agents]
    )
    return cur.rowcount


def set_input(lease: Lease, data: str, now: float, conn: sqlite3.Connection) -> None:
    """Fenced replacement of the run's input."""
    _fence(conn, lease)
    conn.execute(
        "UPDATE runs SET input = ?, updated_at = ? WHERE run_id = ?", (data, now, lease.run_id)
    )


# -- shared state, queues (writes) --------------------------------------------------------


def cas_state(
    run_id: str, expected: int, data: str, lease: Lease | None, conn: sqlite3.Connection
) -> int:
    """Compare-and-set of the run's shared state (fenced by `lease` if given)."""
    if lease is not None:
        _fence(conn, lease)
    row = _one(conn, "SELECT version FROM shared_state WHERE run_id = ?", (run_id,))
    actual = 0 if row is None else int(row[0])
    if actual != expected:
        raise StateConflict(run_id, expected=expected, actual=actual)
    conn.execute(
        "INSERT INTO shared_state (run_id, version, data) VALUES (?, ?, ?)"
        " ON CONFLICT (run_id) DO UPDATE SET version = excluded.version, data = excluded.data",
        (run_id, actual + 1, data),
    )
    return actual + 1


def dlq_put(new_id: str, row: tuple[Any, ...], conn: sqlite3.Connection) -> str:
    """Insert or replace the run's entry, keeping its id and moving it to the back."""
    old = _one(conn, "SELECT id FROM dead_letters WHERE run_id = ?", (row[0],))
    entry_id = new_id if old is None else old[0]
    conn.execute("DELETE FROM dead_letters WHERE run_id = ?", (row[0],))
    conn.execute(
        f"INSERT INTO dead_letters ({_DLQ_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (entry_id, *row),
    )
    return str(entry_id)


def dlq_drop(entry_id: str, conn: sqlite3.Connection) -> bool:
    """Delete an entry."""
    return conn.execute("DELETE FROM dead_letters WHERE id = ?", (entry_id,)).rowcount == 1


def review_put(new_id: str, row: tuple[Any, ...], conn: sqlite3.Connection) -> str:
    """Insert an open item unless the same step already has one."""
    run_id, _, agent = row[:3]
    old = _one(
        conn,
        "SELECT id FROM reviews WHERE run_id = ? AND agent = ? AND status = 'open'",
        (run_id, agent),
    )
    if old is not None:
        return str(old[0])
    conn.execute(
        "INSERT INTO reviews (id, run_id, workflow, agent, reason, suggestions, context,"
        " created_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open')",
        (new_id, *row),
    )
    return new_id


def review_resolve(item_id: str, value: str, now: float, conn: sqlite3.Connection) -> ReviewItem:
    """Resolve an open item."""
    row = _one(conn, "SELECT status FROM reviews WHERE id = ?", (item_id,))
    if row is None:
        raise KeyError(item_id)
    if row[0] == ReviewStatus.RESOLVED:
        raise StoreError(f"review item {item_id!r} is already resolved")
    conn.execute(
        "UPDATE reviews SET status = 'resolved', value = ?, resolved_at = ? WHERE id = ?",
        (value, now, item_id),
    )
    item = review_get(item_id, conn)
    assert item is not None  # noqa: S101  -- updated just above
    return item


# -- reads --------------------------------------------------------------------------------


def get_run(run_id: str, conn: sqlite3.Connection) -> RunRecord | None:
    """One run."""
    row = _one(conn, f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))  # noqa: S608
    return None if row is None else _run(row)


def run_ids_starting(prefix: str, limit: int, conn: sqlite3.Connection) -> list[str]:
    """Run ids starting with `prefix`: a range read of the primary key, not a scan.

    Ids compare as bytes, so from `prefix` on the matches come first.
    """
    rows = conn.execute(
        "SELECT run_id FROM runs WHERE run_id >= ? ORDER BY run_id LIMIT ?", (prefix, limit)
    ).fetchall()
    return [run_id for (run_id,) in rows if run_id.startswith(prefix)]


def list_runs(
    workflow: str | None, status: RunStatus | None, limit: int, conn: sqlite3.Connection
) -> list[RunRecord]:
    """Runs, newest first."""
    where, params = [], []
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if status is not None:
        where.append("status = ?")
        params.append(str(status))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_RUN_COLS} FROM runs {clause}"  # noqa: S608  -- placeholders only
        " ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_run(r) for r in rows]


def due_runs(now: float, conn: sqlite3.Connection) -> list[RunRecord]:
    """Paused runs due by `now`, soonest first."""
    rows = conn.execute(
        f"SELECT {_RUN_COLS} FROM runs"  # noqa: S608  -- constant
        " WHERE status = 'paused' AND resume_at <= ? ORDER BY resume_at, rowid",
        (now,),
    ).fetchall()
    return [_run(r) for r in rows]


def get_steps(run_id: str, conn: sqlite3.Connection) -> dict[str, StepRecord]:
    """A run's steps in commit order."""
    rows = conn.execute(
        f"SELECT {_STEP_COLS} FROM steps WHERE run_id = ? ORDER BY seq",  # noqa: S608
        (run_id,),
    ).fetchall()
    return {r[1]: _step(r) for r in rows}


def get_lease_and_step(
    run_id: str, agent: str, conn: sqlite3.Connection
) -> tuple[Lease | None, StepRecord | None]:
    """A run's lease and one of its steps, in one statement (so one snapshot)."""
    row = _one(
        conn,
        f"SELECT r.lease_owner, r.lease_token, r.lease_expires, {_STEP_COLS_S}"  # noqa: S608
        " FROM (SELECT 1) LEFT JOIN runs r ON r.run_id = ?"
        " LEFT JOIN steps s ON s.run_id = ? AND s.agent = ?",
        (run_id, run_id, agent),
    )
    lease = None if row[1] is None else _rules.current_lease(run_id, row[0], row[1], row[2])
    return lease, None if row[4] is None else _step(row[3:])


def get_state(run_id: str, conn: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
    """A run's shared state."""
    row = _one(conn, "SELECT version, data FROM shared_state WHERE run_id = ?", (run_id,))
    return (0, {}) if row is None else (int(row[0]), _rules.loads(row[1]))


def dlq_list(workflow: str | None, conn: sqlite3.Connection) -> list[DeadLetter]:
    """Dead letters, oldest first."""
    clause, params = ("WHERE workflow = ?", (workflow,)) if workflow is not None else ("", ())
    rows = conn.execute(
        f"SELECT {_DLQ_COLS} FROM dead_letters {clause} ORDER BY rowid",  # noqa: S608
        params,
    ).fetchall()
    return [_dead(r) for r in rows]


def dlq_get(entry_id: str, conn: sqlite3.Connection) -> DeadLetter | None:
    """One dead letter."""
    row = _one(conn, f"SELECT {_DLQ_COLS} FROM dead_letters WHERE id = ?", (entry_id,))  # noqa: S608
    return None if row is None else _dead(row)


def dlq_of_run(run_id: str, conn: sqlite3.Connection) -> DeadLetter | None:
    """The run's dead letter (``run_id`` is UNIQUE)."""
    row = _one(conn, f"SELECT {_DLQ_COLS} FROM dead_letters WHERE run_id = ?", (run_id,))  # noqa: S608
    return None if row is None else _dead(row)


def dlq_size(workflow: str | None, conn: sqlite3.Connection) -> int:
    """Count dead letters."""
    if workflow is None:
        return int(_one(conn, "SELECT COUNT(*) FROM dead_letters", ())[0])
    return int(_one(conn, "SELECT COUNT(*) FROM dead_letters WHERE workflow = ?", (workflow,))[0])


def review_list(status: ReviewStatus | None, conn: sqlite3.Connection) -> list[ReviewItem]:
    """Review items, oldest first."""
    clause, params = ("WHERE status = ?", (str(status),)) if status is not None else ("", ())
    rows = conn.execute(
        f"SELECT {_REVIEW_COLS} FROM reviews {clause} ORDER BY rowid",  # noqa: S608
        params,
    ).fetchall()
    return [_review(r) for r in rows]


def review_get(item_id: str, conn: sqlite3.Connection) -> ReviewItem | None:
    """One review item."""
    row = _one(conn, f"SELECT {_REVIEW_COLS} FROM reviews WHERE id = ?", (item_id,))  # noqa: S608
    return None if row is None else _review(row)


def review_of_run(run_id: str, conn: sqlite3.Connection) -> list[ReviewItem]:
    """A run's review items, oldest first (index ``reviews_by_run``)."""
    rows = conn.execute(
        f"SELECT {_REVIEW_COLS} FROM reviews WHERE run_id = ? ORDER BY rowid",  # noqa: S608
        (run_id,),
    ).fetchall()
    return [_review(r) for r in rows]


def review_size(conn: sqlite3.Connection) -> int:
    """Count open review items."""
    return int(_one(conn, "SELECT COUNT(*) FROM reviews WHERE status = 'open'", ())[0])
