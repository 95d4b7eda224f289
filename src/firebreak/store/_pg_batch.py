"""Group commit for `PostgresStore.commit_step`: many callers, one transaction, one fsync.

Callers queue a commit and await its future. One task takes everything queued (up to
`MAX_BATCH`), sorts it by run id (the same lock order in every process, so two batches never
deadlock on each other's rows), and sends the whole batch in pipeline mode: ``BEGIN``, then
per commit the fence read (``SELECT ... FOR NO KEY UPDATE`` on the run) and the fenced insert,
then ``COMMIT`` - one network round trip and one WAL flush for the batch. No request can fail
the others: a stale lease, an unknown run or a duplicate is judged from the rows each pair
returns, not raised by the server. Futures resolve only after ``COMMIT`` succeeded, so an
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

__all__ = ["MAX_BATCH", "GroupCommitter"]

MAX_BATCH = 256
"""Most commits in one transaction: bounds the latency a large backlog adds to each."""

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
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                await self._apply(batch)
            if self._closed:
                return

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
        for commit, (fence, seq) in zip(batch, outcomes, strict=True):
            if commit.future.done():
                continue
            try:
                commit.future.set_result(ops.commit_outcome(commit.lease, fence, seq))
            except (KeyError, StoreError) as exc:  # unknown run; stale lease
                commit.future.set_exception(exc)

    async def _transaction(self, batch: list[_Commit]) -> list[tuple[Any, Any]]:
        async with self._pool.connection() as conn:
            cursors = []
            async with conn.pipeline(), conn.transaction():
                for commit in batch:
                    fence = await conn.execute(ops.LOCK_RUN.encode(), (commit.lease.run_id,))
                    insert = await conn.execute(ops.COMMIT_STEP.encode(), commit.params)
                    cursors.append((fence, insert))
            # The pipeline is synced and COMMIT has succeeded: read what each pair returned.
            return [(await f.fetchone(), await i.fetchone()) for f, i in cursors]
