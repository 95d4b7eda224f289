"""Group commit for `PostgresStore.commit_step`: many callers, one transaction, one fsync.

Callers queue a commit and await its future. One task takes everything queued (up to
`MAX_BATCH`; up to `MAX_IN_FLIGHT` batches at once, sharing no run), sorts it by run id (the
same lock order in every process, so two batches never deadlock on each other's rows), and
sends the whole batch as one statement on an autocommit connection
(``_pg_ops.COMMIT_STEPS``: a server-side loop that, per commit, locks the run's row, checks
the lease and inserts the step and its audit entry) - one network round trip, one
transaction and one WAL flush for the batch. No request can fail the others: a stale lease,
an unknown run or a duplicate is judged from the row each commit returns, not raised by the
server. Futures resolve only after the statement (so its transaction) committed, so an
acknowledged commit is durable.

Should the batch fail anyway (a deadlock with another kind of transaction, say), each commit
is retried alone; if the connection itself is gone, every caller gets the `StoreError`.
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
from firebreak.store import _pg_ops as ops
from firebreak.store.base import Lease

__all__ = ["MAX_BATCH", "MAX_IN_FLIGHT", "GroupCommitter"]

MAX_BATCH = 256
"""Most commits in one transaction: bounds the latency a large backlog adds to each."""

MAX_IN_FLIGHT = 2
"""Batches sent at once, on connections of their own: the next batch does not wait for the
previous one's round trip and WAL flush. Batches in flight share no run, so they never wait
for each other's row locks, and one run's commits stay in the order they were submitted."""

_CONNECTION_CLASSES = ("08", "57")  # connection exception; operator intervention (shutdown)


@dataclass(slots=True)
class _Commit:
    lease: Lease
    params: dict[str, Any]
    future: asyncio.Future[bool]


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the server or the connection is gone (retrying alone cannot help)."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(_CONNECTION_CLASSES)
    return False


def _consume(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


class GroupCommitter:
    """Batches concurrent step commits into shared transactions (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        translate: Callable[[BaseException], BaseException],
    ) -> None:
        self._pool = pool
        self._translate = translate
        self._queue: deque[_Commit] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        """Runs with a commit in a batch in flight."""
        self.batches = 0
        """Transactions committed so far (for measurement and tests)."""
        self.commits = 0
        """Commit requests applied so far."""

    async def submit(self, lease: Lease, params: dict[str, Any]) -> bool:
        """Queue one commit and wait until its batch committed; see `_pg_ops.commit_outcome`."""
        if self._closed:
            raise self._translate(RuntimeError("the store is closed"))
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # A caller cancelled while its batch ran never reads the outcome: read it here.
        future.add_done_callback(_consume)
        self._queue.append(_Commit(lease, params, future))
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="firebreak-pg-group-commit")
        # shield: a cancelled caller must not cancel the batch its commit rides in.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Apply every queued commit, then stop."""
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
                batch = self._take()
                if not batch:  # every queued commit waits for its run's batch in flight
                    break
                runs = {commit.lease.run_id for commit in batch}
                self._busy |= runs
                flight = asyncio.create_task(self._fly(batch, runs))
                self._flights.add(flight)
            if self._closed and not self._queue and not self._flights:
                return

    def _take(self) -> list[_Commit]:
        """Dequeue up to `MAX_BATCH` commits, keeping back (in order) those of busy runs.

        A run with a batch in flight waits for it: its commits apply in the order submitted.
        """
        batch: list[_Commit] = []
        held: list[_Commit] = []
        while self._queue and len(batch) < MAX_BATCH:
            commit = self._queue.popleft()
            (held if commit.lease.run_id in self._busy else batch).append(commit)
        self._queue.extendleft(reversed(held))
        return batch

    async def _fly(self, batch: list[_Commit], runs: set[str]) -> None:
        try:
            await self._apply(batch)
        finally:
            self._busy -= runs
            current = asyncio.current_task()
            if current is not None:
                self._flights.discard(current)
            self._wake.set()

    async def _apply(self, batch: list[_Commit]) -> None:
        batch.sort(key=lambda c: c.lease.run_id)  # stable: one run's commits keep their order
        try:
            outcomes = await self._transaction(batch)
        except Exception as exc:  # noqa: BLE001  -- every caller hears it; none is lost
            if len(batch) > 1 and not connection_lost(exc):
                for commit in batch:
                    await self._apply([commit])
                return
            error = self._translate(exc)
            for commit in batch:
                if not commit.future.done():
                    commit.future.set_exception(error)
            return
        self.batches += 1
        self.commits += len(batch)
        for commit, row in zip(batch, outcomes, strict=True):
            if commit.future.done():
                continue
            try:
                commit.future.set_result(ops.commit_outcome(commit.lease, row))
            except (KeyError, StoreError) as exc:  # unknown run; stale lease
                commit.future.set_exception(exc)

    async def _transaction(self, batch: list[_Commit]) -> list[Any]:
        params = ops.commit_batch_params([commit.params for commit in batch])
        async with self._pool.connection() as conn:
            cur = await conn.execute(ops.COMMIT_STEPS.encode(), params)
            rows: list[Any] = await cur.fetchall()
        if len(rows) != len(batch):
            raise StoreError(f"group commit: {len(rows)} outcomes for {len(batch)} commits")
        return rows
