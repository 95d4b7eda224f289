"""Group commit for `PostgresStore`: the hot writes of many runs, one statement, one fsync.

Begins, step commits and finishes of runs (`_pg_apply.Op`) queue here and their callers
await a future. One task takes everything queued (up to `MAX_BATCH`; up to `MAX_IN_FLIGHT`
batches at once, sharing no run), sorts it by run id (the same lock order in every process,
so two batches never deadlock on each other's rows), and sends the whole batch as one
statement on an autocommit connection (``apply_batch``, migration 3: a server-side loop
that applies each operation in turn, fenced on the run's locked row) - one network round
trip, one transaction and one WAL flush for the batch. No operation can fail the others: a
stale lease, an unknown run, a held lease or a duplicate is judged from the row each one
returns, not raised by the server. Futures resolve only after the statement (so its
transaction) committed, so an acknowledged write is durable.

Under 50 concurrent runs a batch carries a write of most of them: a run of 10 steps costs
about a quarter of a statement instead of twelve.

Should the batch fail anyway (a deadlock with another kind of transaction, say), each
operation is retried alone; if the connection itself is gone, every caller gets the
`StoreError`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from firebreak.errors import StoreError
from firebreak.store._pg_apply import APPLY, Op, params

__all__ = ["MAX_BATCH", "MAX_IN_FLIGHT", "GroupCommitter", "connection_lost"]

MAX_BATCH = 256
"""Most operations in one transaction: bounds the latency a large backlog adds to each."""

MAX_IN_FLIGHT = 2
"""Batches sent at once, on connections of their own: the next batch does not wait for the
previous one's round trip and WAL flush. Batches in flight share no run, so they never wait
for each other's row locks, and one run's operations stay in the order they were submitted."""

_CONNECTION_CLASSES = ("08", "57")  # connection exception; operator intervention (shutdown)


@dataclass(slots=True)
class _Pending:
    op: Op
    future: asyncio.Future[Any]


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the server or the connection is gone (retrying alone cannot help)."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(_CONNECTION_CLASSES)
    return False


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class GroupCommitter:
    """Batches concurrent writes into shared transactions (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        translate: Callable[[BaseException], BaseException],
    ) -> None:
        self._pool = pool
        self._translate = translate
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        """Runs with an operation in a batch in flight."""
        self.batches = 0
        """Transactions committed so far (for measurement and tests)."""
        self.commits = 0
        """Operations applied so far."""

    async def submit(self, op: Op) -> Any:
        """Queue `op`, wait until its batch committed, return its judged outcome."""
        if self._closed:
            raise self._translate(RuntimeError("the store is closed"))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # A caller cancelled while its batch ran never reads the outcome: read it here.
        future.add_done_callback(_consume)
        self._queue.append(_Pending(op, future))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="firebreak-pg-group-commit")
        # shield: a cancelled caller must not cancel the batch its write rides in.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Apply every queued operation, then stop."""
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and len(self._flights) < MAX_IN_FLIGHT:
                # Everything queued goes: splitting it between the free slots was measured
                # (50 runs at once) to cost more client CPU per run than it won in overlap.
                batch = self._take()
                if not batch:  # every queued operation waits for its run's batch in flight
                    break
                runs = {pending.op.run_id for pending in batch}
                self._busy |= runs
                flight = asyncio.create_task(self._fly(batch, runs))
                self._flights.add(flight)
            if self._closed and not self._queue and not self._flights:
                return

    def _take(self) -> list[_Pending]:
        """Dequeue up to `MAX_BATCH` operations, keeping those of busy runs back.

        A run with a batch in flight waits for it: its operations apply in the order
        submitted (those kept back stay in order at the head of the queue).
        """
        batch: list[_Pending] = []
        held: list[_Pending] = []
        busy = self._busy
        while self._queue and len(batch) < MAX_BATCH:
            pending = self._queue.popleft()
            (held if pending.op.run_id in busy else batch).append(pending)
        self._queue.extendleft(reversed(held))
        return batch

    async def _fly(self, batch: list[_Pending], runs: set[str]) -> None:
        try:
            await self._apply(batch)
        finally:
            self._busy -= runs
            current = asyncio.current_task()
            if current is not None:
                self._flights.discard(current)
            self._wake.set()

    async def _apply(self, batch: list[_Pending]) -> None:
        batch.sort(key=lambda p: p.op.run_id)  # stable: one run's writes keep their order
        try:
            rows = await self._transaction(batch)
        except Exception as exc:  # noqa: BLE001  -- every caller hears it; none is lost
            if len(batch) > 1 and not connection_lost(exc):
                for pending in batch:
                    await self._apply([pending])
                return
            error = self._translate(exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        self.batches += 1
        self.commits += len(batch)
        for pending, row in zip(batch, rows, strict=True):
            future = pending.future
            if future.done():
                continue
            try:
                future.set_result(pending.op.judge(row))
            except (KeyError, StoreError) as exc:  # unknown run; stale or held lease
                future.set_exception(exc)

    async def _transaction(self, batch: list[_Pending]) -> list[Any]:
        arguments = params([pending.op for pending in batch])
        async with self._pool.connection() as conn:
            cur = await conn.execute(APPLY, arguments)
            rows: list[Any] = await cur.fetchall()
        if len(rows) != len(batch):
            raise StoreError(f"group commit: {len(rows)} outcomes for {len(batch)} operations")
        return rows
