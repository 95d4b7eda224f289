"""SQL for `PostgresStore`'s dead-letter queue, manual-review queue and audit trail.

Each write appends its audit entry in the same statement (a data-modifying CTE).
"""

from __future__ import annotations

from typing import Any

from firebreak.errors import StoreError
from firebreak.store import _rules
from firebreak.store._pg_ops import AUDIT_COLS, DLQ_COLS, REVIEW_COLS, Conn, all_rows, one
from firebreak.store.base import DeadLetter, ReviewItem, ReviewStatus


def _review(row: Any) -> ReviewItem:
    return ReviewItem(
        id=row[0],
        run_id=row[1],
        workflow=row[2],
        agent=row[3],
        reason=row[4],
        suggestions=row[5],
        context=row[6],
        status=ReviewStatus(row[7]),
        value=row[8],
        created_at=row[9],
        resolved_at=row[10],
    )


def _dead(row: Any) -> DeadLetter:
    snapshot = row[6]
    return DeadLetter(
        id=row[0],
        run_id=row[1],
        workflow=row[2],
        reason=row[3],
        error=row[4],
        input=row[5],
        steps=None
        if snapshot is None
        else {k: _rules.step_from_dict(v) for k, v in snapshot.items()},
        created_at=row[7],
    )


# -- dead-letter and review queues -------------------------------------------------------

_DLQ_PUT = f"""
WITH put AS (
    INSERT INTO dead_letters ({DLQ_COLS})
    VALUES (%(id)s, %(run_id)s, %(workflow)s, %(reason)s, %(error)s::json, %(input)s::json,
            %(steps)s::json, %(now)s)
    ON CONFLICT (run_id) DO UPDATE SET workflow = EXCLUDED.workflow,
        reason = EXCLUDED.reason, error = EXCLUDED.error, input = EXCLUDED.input,
        steps = EXCLUDED.steps, created_at = EXCLUDED.created_at, pos = DEFAULT
    RETURNING id, run_id, workflow, reason
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, NULL, run_id, 'dlq_put',
           jsonb_build_object('id', id, 'workflow', workflow, 'reason', reason) FROM put
)
SELECT id FROM put
"""  # noqa: S608  -- constant column lists only


async def dlq_put(conn: Conn, params: dict[str, Any]) -> str:
    """Insert or replace the run's entry, keeping its id and moving it to the back."""
    row = await one(conn, _DLQ_PUT, params)
    return str(row[0])


_DLQ_DROP = """
WITH gone AS (DELETE FROM dead_letters WHERE id = %(id)s RETURNING id, run_id, workflow),
aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, NULL, run_id, 'dlq_dropped',
           jsonb_build_object('id', id, 'workflow', workflow) FROM gone
)
SELECT count(*) FROM gone
"""


async def dlq_drop(conn: Conn, entry_id: str, now: float) -> bool:
    """Delete an entry."""
    row = await one(conn, _DLQ_DROP, {"id": entry_id, "now": now})
    return bool(row[0])


async def dlq_list(conn: Conn, workflow: str | None) -> list[DeadLetter]:
    """Dead letters, oldest first."""
    clause, params = ("WHERE workflow = %s", (workflow,)) if workflow is not None else ("", ())
    rows = await all_rows(
        conn,
        f"SELECT {DLQ_COLS} FROM dead_letters {clause} ORDER BY pos",  # noqa: S608
        params,
    )
    return [_dead(r) for r in rows]


async def dlq_get(conn: Conn, entry_id: str) -> DeadLetter | None:
    """One dead letter."""
    row = await one(conn, f"SELECT {DLQ_COLS} FROM dead_letters WHERE id = %s", (entry_id,))  # noqa: S608
    return None if row is None else _dead(row)


async def dlq_of_run(conn: Conn, run_id: str) -> DeadLetter | None:
    """The run's dead letter (``run_id`` is UNIQUE)."""
    row = await one(conn, f"SELECT {DLQ_COLS} FROM dead_letters WHERE run_id = %s", (run_id,))  # noqa: S608
    return None if row is None else _dead(row)


async def dlq_size(conn: Conn, workflow: str | None) -> int:
    """Count dead letters."""
    if workflow is None:
        row = await one(conn, "SELECT count(*) FROM dead_letters")
    else:
        row = await one(conn, "SELECT count(*) FROM dead_letters WHERE workflow = %s", (workflow,))
    return int(row[0])


_REVIEW_PUT = """
WITH ins AS (
    INSERT INTO reviews (id, run_id, workflow, agent, reason, suggestions, context,
                         created_at, status)
    VALUES (%(id)s, %(run_id)s, %(workflow)s, %(agent)s, %(reason)s, %(suggestions)s::json,
            %(context)s::json, %(now)s, 'open')
    ON CONFLICT (run_id, agent) WHERE status = 'open' DO NOTHING
    RETURNING id, run_id, agent, reason
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, NULL, run_id, 'review_put',
           jsonb_build_object('id', id, 'agent', agent, 'reason', reason) FROM ins
)
SELECT id FROM ins
UNION ALL
SELECT id FROM reviews
WHERE run_id = %(run_id)s::text AND agent = %(agent)s::text AND status = 'open'
"""


async def review_put(conn: Conn, params: dict[str, Any]) -> str:
    """Insert an open item unless the same step already has one."""
    for _ in range(5):  # see create_run: a concurrent insert may hide from this snapshot
        row = await one(conn, _REVIEW_PUT, params)
        if row is not None:
            return str(row[0])
    raise StoreError(f"run {params['run_id']!r}: could not queue the review (concurrent writers)")


_REVIEW_RESOLVE = f"""
WITH upd AS (
    UPDATE reviews SET status = 'resolved', value = %(value)s::json,
        resolved_at = %(now)s::float8
    WHERE id = %(id)s RETURNING {REVIEW_COLS}
), aud AS (
    INSERT INTO audit (at, actor, run_id, kind, what)
    SELECT %(now)s::float8, NULL, run_id, 'review_resolved',
           jsonb_build_object('id', id, 'agent', agent) FROM upd
)
SELECT {REVIEW_COLS} FROM upd
"""  # noqa: S608  -- constant column lists only


async def review_resolve(conn: Conn, item_id: str, value: str, now: float) -> ReviewItem:
    """Resolve an open item."""
    async with conn.transaction():
        row = await one(conn, "SELECT status FROM reviews WHERE id = %s FOR UPDATE", (item_id,))
        if row is None:
            raise KeyError(item_id)
        if row[0] == ReviewStatus.RESOLVED:
            raise StoreError(f"review item {item_id!r} is already resolved")
        updated = await one(conn, _REVIEW_RESOLVE, {"id": item_id, "value": value, "now": now})
    return _review(updated)


async def review_list(conn: Conn, status: ReviewStatus | None) -> list[ReviewItem]:
    """Review items, oldest first."""
    clause, params = ("WHERE status = %s", (str(status),)) if status is not None else ("", ())
    rows = await all_rows(
        conn,
        f"SELECT {REVIEW_COLS} FROM reviews {clause} ORDER BY pos",  # noqa: S608
        params,
    )
    return [_review(r) for r in rows]


async def review_get(conn: Conn, item_id: str) -> ReviewItem | None:
    """One review item."""
    row = await one(conn, f"SELECT {REVIEW_COLS} FROM reviews WHERE id = %s", (item_id,))  # noqa: S608
    return None if row is None else _review(row)


async def review_of_run(conn: Conn, run_id: str) -> list[ReviewItem]:
    """A run's review items, oldest first (index ``reviews_by_run``)."""
    rows = await all_rows(
        conn,
        f"SELECT {REVIEW_COLS} FROM reviews WHERE run_id = %s ORDER BY pos",  # noqa: S608
        (run_id,),
    )
    return [_review(r) for r in rows]


async def review_size(conn: Conn) -> int:
    """Count open review items."""
    row = await one(conn, "SELECT count(*) FROM reviews WHERE status = 'open'")
    return int(row[0])


async def audit_log(conn: Conn, run_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Audit entries, oldest first, optionally for one run."""
    clause, params = ("WHERE run_id = %s", [run_id]) if run_id is not None else ("", [])
    rows = await all_rows(
        conn,
        f"SELECT {AUDIT_COLS} FROM audit {clause} ORDER BY id LIMIT %s",  # noqa: S608
        (*params, limit),
    )
    keys = AUDIT_COLS.split(", ")
    return [dict(zip(keys, r, strict=True)) for r in rows]
